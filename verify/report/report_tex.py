"""``report.tex``: the verify report as LaTeX (check table, figures, the derivation).

``pdflatex report.tex`` (twice, for the references) gives the whole report as a PDF: a
summary of the run, the checks as a booktabs table (``longtable``, so it runs over
pages), the figures as PDF via ``\\includegraphics``, and the layer-0 derivation written
by :func:`theory.latex` as an appendix (``\\input``).

>>> # from verify.report.report_tex import write_report_tex
>>> # write_report_tex(out, spec, report.checks, {"variance": "variance.pdf"}, None)
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from theory import derive
from theory._latex import PACKAGES, Notation, escape, tt, write
from theory._outputs import atomic_write_text

_LEVEL = {"approximate": "approx.", "asymptotic": "asympt."}
_QUANTITY = {"excess_kurtosis": "ex. kurtosis", "cov_coordinates": "covariance", "sum_sq": "sum sq."}
_FIELDS = ("tap", "position", "quantity", "level", "theory", "sim", "se", "z", "passed")

#: report.tex's caption of each figure verify draws (`verify.report.figures.FIGURES`), in
#: LaTeX; ``{tap}`` is filled with the tap a figure shows. A figure of another name gets its
#: name as a caption.
TEX_CAPTIONS = {
    "variance": r"Variance of one coordinate against the query position $m$ (log-log) for the attention "
                r"outputs: simulation with $2$-s.e.\ bars, this work's theory (line) and the paper's leading "
                r"order (dashed); below, theory divided by simulation.",
    "sum_sq": r"$m\,\mathbb{E}\bigl[\sum_{n\le m} a_{mn}^{2}\bigr]$ against $m$: $1$ under uniform attention; "
              r"above $1$ the softmax concentrates on fewer keys.",
    "zscores": r"The statistic each check is judged by, against $m$: the $z$-score for exact results, the excess "
               r"over the declared tolerance in standard errors for approximate ones ($0$ inside the tolerance). "
               r"The dotted and dashed lines are Holm's strictest and loosest critical values.",
    "distributions": r"One coordinate's simulated distribution at the last position against the exact law and "
                     r"the Gaussian of the same variance (top), and the differences of the CDFs from the exact "
                     r"law with the Kolmogorov--Smirnov band (bottom).",
    "depth_error": r"Relative error $\mathrm{theory}/\mathrm{sim} - 1$ against the layer for the main taps: "
                   r"this work's theory at three positions with $2$-s.e.\ bars, its largest $|\mathrm{error}|$ "
                   r"over the positions (gray), the declared tolerance (shaded) and the paper's leading order "
                   r"(hollow).",
    "depth_variance": r"Variance of one coordinate of {tap} against $m$ for every layer (log-log): simulation with "
                      r"$2$-s.e.\ bars, this work's theory (line), the leading order (dashed); below, theory "
                      r"divided by simulation with each layer's $2$-s.e.\ band.",
}


#: report.tex's page and figure placement: side margins that leave a text width of at least 7.0 in
#: (`theory.figure_style.TWO_COLUMNS`) on US letter and A4, and ``\\reportfigure``, which sets a
#: figure at its own size (drawn at a paper's one- or two-column width with 8 pt fonts, so it
#: prints at that size) and scales it down only if it is wider than the text.
FIGURE_PREAMBLE = (
    "\\geometry{hmargin=0.6in,vmargin=0.9in}\n"
    "\\newsavebox{\\reportfigurebox}\n"
    "\\newcommand{\\reportfigure}[1]{\\sbox{\\reportfigurebox}{\\includegraphics{#1}}%\n"
    "  \\ifdim\\wd\\reportfigurebox>\\linewidth\\resizebox{\\linewidth}{!}{\\usebox{\\reportfigurebox}}%\n"
    "  \\else\\usebox{\\reportfigurebox}\\fi}"
)


def figure_caption(name: str, tap: str | None = None) -> str:
    """The LaTeX caption of figure ``name`` (`TEX_CAPTIONS`; ``tap`` fills ``{tap}``)."""
    text = TEX_CAPTIONS.get(name)
    if text is None:
        return escape(name.replace("_", " ")) + "."
    return text.replace("{tap}", tt(tap) if tap else "the block output")


def _row(check) -> dict:
    """A `verify` Check (or its ``to_dict()``) as a dict with the fields the table needs."""
    if isinstance(check, Mapping):
        data = dict(check)
    else:
        data = {f: getattr(check, f) for f in _FIELDS if hasattr(check, f)}
        for extra in ("tolerance", "method", "label"):
            if hasattr(check, extra):
                data[extra] = getattr(check, extra)
    missing = [f for f in _FIELDS if f not in data]
    if missing:
        raise ValueError(f"write_report_tex: a check lacks {', '.join(missing)}; give verify Check objects or their to_dict()")
    return data


def _num(x, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "--"
    text = f"{float(x):.{digits}g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"${mantissa}\\cdot 10^{{{int(exponent)}}}$"
    return f"${text}$"


def _z(x) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "--"
    return f"${float(x):+.2f}$"


def check_table(checks: Iterable) -> str:
    """The checks as a booktabs ``longtable``: tap, m, quantity, level, theory, simulation, z, verdict."""
    rows = []
    checks = [_row(c) for c in checks]
    single_layer = all(str(c["tap"]).startswith("blocks.0.") for c in checks)
    for c in checks:
        tap = str(c["tap"])
        # Without "blocks.0." when every check is of layer 0; with several layers the name says which.
        tap = tap.split(".", 2)[-1] if single_layer else tap
        se = c.get("se")
        sim = _num(c["sim"])
        se_text = _num(se, 2) if isinstance(se, (int, float)) and math.isfinite(se) and se > 0 else "--"
        verdict = "pass" if c["passed"] else "\\textbf{FAIL}"
        rows.append(
            f"{tt(tap)} & {int(c['position'])} & {escape(_QUANTITY.get(str(c['quantity']), str(c['quantity']).replace('_', ' ')))} & "
            f"{escape(_LEVEL.get(str(c['level']), str(c['level'])))} & {_num(c['theory'])} & {sim} & {se_text} & {_z(c['z'])} & {verdict} \\\\"
        )
    head = "tap & $m$ & quantity & level & theory & simulation & s.e. & $z$ & verdict \\\\"
    return (
        "{\\footnotesize\\setlength{\\tabcolsep}{4pt}\n\\begin{longtable}{@{}lrllrrrrl@{}}\n"
        "\\caption{Every check: the theory value beside the Monte Carlo estimate, its standard error, the $z$-score "
        "and the verdict (Holm-controlled for exact results; approximate results also allow their stated error).}"
        "\\label{tab:checks}\\\\\n\\toprule\n" + head + "\n\\midrule\n\\endfirsthead\n"
        "\\toprule\n" + head + "\n\\midrule\n\\endhead\n\\bottomrule\n\\endfoot\n"
        + "\n".join(rows) + "\n\\end{longtable}\n}"
    )


def _figure_paths(figures, out: Path) -> list[tuple[str, Path]]:
    """``figures`` as (caption, PDF path): a mapping name -> path (or list of paths, the .pdf is
    taken, as ``verify``'s ``save_figures`` returns), or a sequence of paths. Relative paths
    are relative to ``out``."""
    if figures is None:
        return []
    items = figures.items() if isinstance(figures, Mapping) else [(Path(p).stem, p) for p in figures]
    result = []
    for name, value in items:
        candidates = [value] if isinstance(value, (str, os.PathLike)) else list(value)
        pdfs = [Path(p) for p in candidates if str(p).lower().endswith(".pdf")]
        if not pdfs:
            raise ValueError(f"write_report_tex: figure {name!r} has no PDF among {candidates!r}; save it as PDF")
        path = pdfs[0] if pdfs[0].is_absolute() else out / pdfs[0]
        if not path.is_file():
            raise ValueError(f"write_report_tex: figure {name!r}: no file {path}")
        result.append((str(name), path))
    return result


def _relative(path: Path, out: Path) -> str:
    """A path pdflatex can read from ``out``: inside ``out`` as is; outside, copied into ``out/figures-tex``."""
    try:
        return path.resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        target = out / "figures-tex" / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        return target.relative_to(out).as_posix()


def _derivation_input(derivation_tex, spec, out: Path, notation) -> str:
    """The path (relative to ``out``) of the derivation body to ``\\input``."""
    if derivation_tex is None:
        written = write(derive(spec), out / "derivation", Notation.coerce(notation))
        path = Path(written["body"])
    else:
        path = Path(derivation_tex)
        if path.is_dir():
            path = path / "derivation-body.tex"
        if not path.is_file():
            raise ValueError(
                f"write_report_tex: derivation_tex {derivation_tex} is not a file; give the derivation-body.tex "
                "that `python -m theory latex --out DIR` or theory.latex(..., out=DIR) writes, or its directory"
            )
        if path.name == "derivation.tex":
            raise ValueError("write_report_tex: give derivation-body.tex (for \\input), not the standalone derivation.tex")
    return _relative(path, out)


def _spec_table(spec) -> str:
    rows = []
    for key, value in spec.to_dict().items():
        rows.append(f"{tt(key)} & {tt(str(value))} \\\\")
    return ("\\begin{table}[h]\n\\centering\n\\small\n\\begin{tabular}{@{}ll@{}}\n\\toprule\nfield & value \\\\\n\\midrule\n"
            + "\n".join(rows) + "\n\\bottomrule\n\\end{tabular}\n\\caption{The specification (\\texttt{ModelSpec}).}"
            "\\label{tab:spec}\n\\end{table}\n")


def report_tex(spec, checks: Sequence, figures: list[tuple[str, str]], derivation_input: str,
               title: str = "Theory against simulation", sections: Sequence[tuple[str, str]] = (),
               captions: Mapping[str, str] | None = None) -> str:
    """The text of ``report.tex`` (figures already as ``(name, path)``, paths relative to the report).

    ``captions``: LaTeX captions by figure name; a name not given takes `figure_caption`.

    ``sections``: extra ``(title, LaTeX body)`` sections placed after the summary (verify
    puts its per-layer accuracy table there)."""
    checks = list(checks)
    rows = [_row(c) for c in checks]
    failed = [r for r in rows if not r["passed"]]
    verdict = ("All {n} checks passed." if not failed else "{f} of {n} checks failed.").format(n=len(rows), f=len(failed))
    figs = []
    for name, path in figures:
        caption = (captions or {}).get(name) or figure_caption(name)
        figs.append(
            "\\begin{figure}[htbp]\n\\centering\n"
            f"\\reportfigure{{{path}}}\n"
            f"\\caption{{{caption}}}\\label{{fig:{_label(name)}}}\n\\end{{figure}}"
        )
    parts = [
        "\\documentclass[10pt]{article}",
        PACKAGES,
        "\\usepackage{longtable}",
        FIGURE_PREAMBLE,
        f"\\title{{{escape(title)}}}",
        "\\author{Generated by \\texttt{verify}}",
        "\\date{}",
        "\\begin{document}",
        "\\maketitle",
        "\\section{Summary}",
        f"{verdict} Expectations are annealed (over weights and inputs). Each check compares one theory quantity "
        "(Appendix~\\ref{sec:steps}) with its Monte Carlo estimate at one query position $m$.",
        _spec_table(spec),
        *(f"\\section{{{escape(name)}}}\n{body}" for name, body in sections),
        "\\section{Checks}",
        check_table(rows) if rows else "No checks were run.",
        "\\section{Figures}" if figs else "",
        "\n\n".join(figs),
        "\\clearpage\n\\appendix",
        f"\\input{{{derivation_input}}}",
        "\\end{document}",
    ]
    return "\n\n".join(p for p in parts if p) + "\n"


def _label(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in name)


def compile_pdf(tex: Path, runs: int = 2, timeout: float = 120) -> Path:
    """Run ``pdflatex -halt-on-error`` ``runs`` times in the file's folder; the PDF's path.

    Raises ``FileNotFoundError`` when no ``pdflatex`` is installed and ``RuntimeError``
    with the log's first error when it fails.
    """
    exe = shutil.which("pdflatex")
    if exe is None:
        raise FileNotFoundError("pdflatex is not installed (Debian: texlive-latex-base texlive-latex-recommended)")
    tex = Path(tex)
    for _ in range(runs):
        proc = subprocess.run([exe, "-halt-on-error", "-interaction=nonstopmode", tex.name], cwd=tex.parent,
                              capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            log = tex.with_suffix(".log")
            text = log.read_text(errors="replace") if log.exists() else proc.stdout
            error = next((line for line in text.splitlines() if line.startswith("!")), "unknown error")
            raise RuntimeError(f"pdflatex failed on {tex}: {error}")
    return tex.with_suffix(".pdf")


def write_report_tex(out_dir, spec, checks, figures, derivation_tex=None, *, notation=None,
                     title: str = "Theory against simulation", compile: bool = False,
                     sections: Sequence[tuple[str, str]] = (), captions: Mapping[str, str] | None = None) -> Path:
    """Write ``out_dir/report.tex`` (and compile it to ``report.pdf`` when ``compile``).

    out_dir       the report's folder (created if missing).
    spec          the `theory.ModelSpec` the run used.
    checks        verify `Check` objects (a `CheckSet`) or their ``to_dict()``s: tap, position,
                  quantity, level, theory, sim, se, z, passed.
    figures       {caption: PDF path} or {name: [png, pdf]} as ``save_figures`` returns, or a
                  list of PDF paths; relative paths are relative to ``out_dir``.
    derivation_tex  the ``derivation-body.tex`` written by ``theory.latex(..., out=DIR)`` /
                  ``python -m theory latex --out DIR`` (or DIR itself); None derives ``spec``
                  and writes it to ``out_dir/derivation/`` (about 15 s).
    notation      symbol map for the derivation written when ``derivation_tex`` is None.
    sections      extra ``(title, LaTeX body)`` sections after the summary.
    captions      LaTeX captions by figure name (default: `figure_caption`, verify's own figures).

    Returns the path of ``report.tex`` (``report.pdf`` when ``compile``).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checks = [_row(c) for c in checks]  # refuse bad checks before any work
    figs = [(caption, _relative(path, out)) for caption, path in _figure_paths(figures, out)]
    derivation_input = _derivation_input(derivation_tex, spec, out, notation)
    tex = out / "report.tex"
    atomic_write_text(tex, report_tex(spec, checks, figs, derivation_input, title, sections, captions))
    return compile_pdf(tex) if compile else tex


__all__ = ["write_report_tex", "report_tex", "check_table", "compile_pdf", "figure_caption", "TEX_CAPTIONS"]
