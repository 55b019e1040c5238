"""summary.tex (the per-tap verdicts, the leading-order deviations and the accuracy through
depth as booktabs tables) and the depth section of report.tex."""

from __future__ import annotations

import re

from theory._latex import Notation, escape, prose, tt

from ..checks.depth import MAIN_TAPS
from .text import g, has_depth, short


def _tex_name(name: str) -> str:
    return name.replace("_", r"\_")


def latex_summary(report) -> str:
    """summary.tex: the per-tap verdicts and the leading-order deviations as LaTeX tables."""
    rows = [
        r"\begin{tabular}{llrrr}", r"\toprule",
        r"tap & level & checks & failed & $\max|z|$ \\", r"\midrule",
    ]
    for tap, row in report.checks.by_tap().items():
        rows.append(rf"\texttt{{{_tex_name(short(tap))}}} & {row['level']} & {row['checks']} & {row['failed']} & "
                    rf"{row['max_abs_z']:.2f} \\")
    rows += [r"\bottomrule", r"\end{tabular}", ""]
    rows += [
        r"\begin{tabular}{lrrrr}", r"\toprule",
        r"tap & $m$ & leading & simulation & rel.\ error \\", r"\midrule",
    ]
    for r in report.leading_summary():
        rows.append(rf"\texttt{{{_tex_name(short(r['tap']))}}} & {r['position']} & {r['leading']:.4g} & {r['sim']:.4g} & "
                    rf"{100 * r['rel_error']:+.1f}\% \\")
    rows += [r"\bottomrule", r"\end{tabular}"]
    if has_depth(report):
        rows += ["", depth_table_tex(report)]
    return "\n".join(rows) + "\n"


def depth_table_tex(report) -> str:
    """Main taps x layers: largest |theory/sim - 1| over positions (best level; in
    parentheses the largest |z|), as a booktabs tabular."""
    layers = report.layers
    index = {(r["layer"], r["tap"], r["quantity"]): r for r in report.depth_accuracy()}
    out = [rf"\begin{{tabular}}{{l{'r' * layers}}}", r"\toprule",
           "tap & " + " & ".join(f"layer {l}" for l in range(layers)) + r" \\", r"\midrule"]
    for kind in MAIN_TAPS:
        cells = []
        for l in range(layers):
            r = index.get((l, kind, "var"))
            cells.append("" if r is None else rf"{100 * r['max_abs_rel_error']:.2f}\% ({g(r['max_abs_z'], 2)})")
        if any(cells):
            out.append(rf"\texttt{{{_tex_name(kind)}}} & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out)


# Inline math in the findings' sentences: "|error|", "m = 64", "z = +2.1", "1/m", "d = 64".
_MATH = [
    (re.compile(r"\|error\|"), lambda m: r"$|\mathrm{error}|$"),
    (re.compile(r"(?<![A-Za-z])([mzdT]) = ([+-]?[0-9][0-9.]*[0-9]|[+-]?[0-9])"), lambda m: f"${m.group(1)} = {m.group(2)}$"),
    (re.compile(r"(?<![A-Za-z0-9])1/m\b"), lambda m: "$1/m$"),
    # a name with an underscore: math (sigma_q, tau_bar^2) or a code name (vocab_size), as theory's prose writes it
    (re.compile(r"\b[A-Za-z]+_[A-Za-z0-9]+(?:\^[0-9])?"), lambda m: prose(m.group(0), Notation())),
]


def sentence_tex(text: str, phrases=()) -> str:
    """A sentence of the report (Markdown-ish: `code`, ASCII math) as LaTeX running text: code
    spans in ``\\texttt``, the rest escaped, its bits of math in math mode.

    ``phrases``: the parts of ``text`` that theory wrote in ASCII math (the assumptions a
    finding quotes, e.g. ``E[a_mk a_nk'] = w_mk w_nk', m != n``), printed by theory's own
    prose printer (`theory._latex.prose`: identifiers, operators and ``O(1/sqrt(d))`` in math
    mode, English as text)."""
    phrases = sorted({p for p in phrases if p and p in text}, key=len, reverse=True)
    if phrases:
        rx = re.compile("|".join(re.escape(p) for p in phrases))
        out, last = [], 0
        for m in rx.finditer(text):
            out += [sentence_tex(text[last:m.start()]), prose(m.group(0), Notation())]
            last = m.end()
        return "".join(out) + sentence_tex(text[last:])
    out = []
    for i, part in enumerate(text.split("`")):
        if i % 2:
            out.append(tt(part))
            continue
        pieces, last = [], 0
        spans = sorted((m.start(), m.end(), repl(m)) for rx, repl in _MATH for m in rx.finditer(part))
        for start, end, tex in spans:
            if start < last:
                continue
            pieces += [escape(part[last:start]), tex]
            last = end
        pieces.append(escape(part[last:]))
        out.append("".join(pieces))
    return "".join(out)


def depth_section(report) -> tuple[str, str] | None:
    """report.tex's "Accuracy through depth" section (title, LaTeX body); None for one attention layer."""
    if not has_depth(report):
        return None
    findings = "\n".join(r"\item " + sentence_tex(f["sentence"], f.get("new_assumptions", ()))
                         for f in report.depth_findings())
    return (
        "Accuracy through depth",
        "Largest relative error $|\\text{theory}/\\text{sim} - 1|$ over the recorded positions of the variance of "
        "one coordinate, per layer (best level; in parentheses the largest $|z|$).\n\n\\begin{center}\n"
        + depth_table_tex(report) + "\n\\end{center}\n\n"
        + ("\\begin{itemize}\n" + findings + "\n\\end{itemize}\n" if findings else ""),
    )


__all__ = ["latex_summary", "depth_table_tex", "depth_section", "sentence_tex"]
