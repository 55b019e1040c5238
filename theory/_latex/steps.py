"""One layer-1 step as LaTeX: its subsection with the derivation, both levels, forms and level.

:func:`step_snippet` renders a `theory.derive` ``Step`` (the paper's leading order and our
best result) as an ``\\input``-able subsection. Equation labels come from the tap names
(:func:`label`): ``eq:blocks.0.attn.hook_z:best:var`` is the best-level variance of
``hook_z``; the generic derivation steps are ``eq:blocks.0.attn.hook_z:derivation:1``, ...
and sections ``sec:blocks.0.attn.hook_z``. The step's heading, subject and derivation text
come with each result (`StepResult.text`, written next to the step in `theory.steps`); every number and expression from the results.
"""

from __future__ import annotations

import re
from typing import Mapping

import sympy as sp

from .._result import StepResult
from .notation import Notation
from .printer import LINE_WIDTH, Printer, break_lines, in_tau_bar, visible_width
from .prose import english_identifier, escape, prose, tt

# Definitions a StepResult carries that the document states in its own words.
DEFINED_ELSEWHERE = {"S_2(m)", "Xi(m)", "tau_bar^2", "series", "m -> oo", "nu_1", "nu_2"}

# The Derivation's constant holding E[sum_n a_mn^2 | tau^2] to O(tau^6) (theory._softmax.row_series
# ("sum_sq", 2): symbols m, D and tau2 = tau^2), which the softmax derivation prints.
SERIES_KEY = "S_2 | tau^2"


def quantity_lhs(name: str, subject: str) -> str:
    """The left-hand side of a quantity (``<<Var>>[subject]``), as a notation template."""
    return {
        "mean": f"<<E>>[{subject}]",
        "var": f"<<Var>>[{subject}]",
        "sum_sq": "<<E>>\\Bigl[\\sum_{<<n>>\\le <<m>>} <<a>>_{<<m>><<n>>}^{2}\\Bigr]",
        "excess_kurtosis": f"<<kurt>>[{subject}]",
        "cov_coordinates": f"<<Cov>>[{subject}, {subject.replace(',i', ',j')}]",
        "coupling": "<<Xi>>(<<m>>)",
    }.get(name, f"\\mathrm{{{escape(name)}}}[{subject}]")


def form_lhs(name: str, subject: str) -> tuple[str, str, str]:
    """(intertext, lhs, suffix) for an alternative form."""
    if name == "nu_1":
        return "closed form (upper incomplete gamma function):", "<<nu_1>>", ""
    if name == "nu_2":
        return "", "<<nu_2>>", ""
    if name.startswith("nu_1, small"):
        return "small-$<<ln_eps>>$ series:", "<<nu_1>>", r" + O\bigl(<<ln_eps>>^{3}\bigr)"
    if name == "var (n != m)":
        return "for one key $<<n>> \\ne <<m>>$:", f"<<Var>>[{subject}]", ""
    if name == "sum_sq series":
        return "small-logit-variance series:", "<<S_2>>(<<m>>)", r" + O\bigl(<<tau_bar>>^{6}\bigr)"
    if name == "m*sum_sq, m -> oo":
        return "large-$<<m>>$ limit (law of large numbers):", r"\lim_{<<m>>\to\infty} <<m>>\, <<S_2>>(<<m>>)", ""
    if name == "var series":
        return "small-logit-variance series:", f"<<Var>>[{subject}]", r" + O\bigl(<<tau_bar>>^{6}\bigr)"
    if name == "var, m -> oo":
        return "large-$<<m>>$ form, relative error $O(1/<<m>>)$:", f"<<Var>>[{subject}]", ""
    return escape(name) + ":", f"\\mathrm{{{escape(name)}}}", ""


def _label_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-")


def label(tap: str, *parts: str) -> str:
    """``eq:<tap>:<part>:...`` -- equation labels derived from the tap name."""
    return "eq:" + ":".join([tap] + [_label_part(p) for p in parts])


def _equation_rows(lhs: str, rel: str, expr: sp.Expr, printer: Printer, tag: str, suffix: str = "") -> list[str]:
    """Rows of an ``align`` for ``lhs rel expr``, broken, numbered and labelled on the last row."""
    lines = break_lines(expr, printer, LINE_WIDTH - 0.4 * visible_width(lhs) if visible_width(lhs) > 20 else LINE_WIDTH)
    lines[-1] += suffix
    rows = [f"{lhs} &{rel} {lines[0]}"]
    rows += [f"&\\quad {line}" for line in lines[1:]]
    rows = [r + r" \nonumber" for r in rows[:-1]] + [rows[-1] + f" \\label{{{tag}}}"]
    return rows


def _level_sentence(result: StepResult, notation: Notation) -> str:
    text = f"\\emph{{{result.level.value}}}"
    if result.error:
        error = result.error
        delta = re.search(r"delta = (.+)$", error)
        if delta and not re.fullmatch(r"[-+0-9.e]+", delta.group(1).strip()):
            error = error[: delta.start()] + "delta as in the derived constants"
        text += "; error " + prose(error, notation)
    text += "; regime: " + prose(result.regime, notation) + "."
    return text


def _assumption_list(result: StepResult, notation: Notation) -> str:
    if not result.assumptions:
        return ""
    items = "\n".join(f"  \\item[$\\bullet$] {prose(a, notation)}" for a in result.assumptions)
    return "\\begin{itemize}\\setlength{\\itemsep}{0pt}\n" + items + "\n\\end{itemize}"


def step_snippet(step, derivation, notation: Notation | Mapping | None = None) -> str:
    """One step (a `theory.derive` ``Step``: both levels) of ``derivation`` as an
    ``\\input``-able subsection.

    ``derivation`` (a `theory.derive.Derivation`) gives the spec and the derived constants
    the text uses (the logit scale rule, the roots ``sigma_q(tau_bar^2)``, the softmax
    series). Needs ``amsmath`` and ``amssymb``. Labels: ``sec:<tap>``,
    ``eq:<tap>:derivation:<i>``, ``eq:<tap>:leading:<quantity>``, ``eq:<tap>:best:<quantity>``,
    ``eq:<tap>:form:<name>``.
    """
    notation = Notation.coerce(notation)
    printer = Printer(notation)
    spec, constants = derivation.spec, derivation.constants
    tap = step.tap
    text = step.best.text
    subject = text.subject if text else escape(step.best.symbol)
    heading = text.heading if text else escape(step.best.title)
    parts = [
        f"% {tap}: generated by `python -m theory latex`; needs \\usepackage{{amsmath,amssymb}}",
        f"\\subsection{{{heading}}}\\label{{sec:{tap}}}\n\\noindent Tap {tt(tap)}.",
    ]
    text = text.derivation if text else None
    if text:
        parts.append(notation.fill(number(text, tap, derivation)))

    leading, best = step.leading, step.best
    rows = []
    rows.append("\\intertext{\\emph{Leading order (the paper)}, " + prose(leading.title.split(" (the paper)")[0], notation) + ":}")
    for name, expr in leading.quantities.items():
        rows += _equation_rows(notation.fill(quantity_lhs(name, subject)), "=", expr, printer, label(tap, "leading", name))
    rows.append("\\intertext{\\emph{This work}:}")
    for name, expr in best.quantities.items():
        rows += _equation_rows(notation.fill(quantity_lhs(name, subject)), "=", expr, printer, label(tap, "best", name))
    parts.append(_align_with_intertext(rows))
    if best.forms:
        roots = constants.get("sigma_q(tau_bar^2)")
        form_rows = []
        rewritten = False
        for name, expr in best.forms.items():
            inter, lhs, tail = form_lhs(name, subject)
            if inter:
                form_rows.append("\\intertext{" + notation.fill(inter) + "}")
            shorter = in_tau_bar(expr, spec.sigma_q, roots, printer)
            rewritten |= shorter is not None
            form_rows += _equation_rows(notation.fill(lhs), "=", expr if shorter is None else shorter, printer,
                                        label(tap, "form", name), notation.fill(tail))
        where = notation.fill(" (written with the mean logit variance $<<tau_bar>>^{2}$ of "
                              "equation~\\eqref{eq:constants:tau} where that is shorter)") if rewritten else ""
        parts.append(f"Alternative forms of our result{where}:\n" + _align_with_intertext(form_rows))
    parts.append("\\paragraph{Level.} Paper: " + _level_sentence(leading, notation)
                 + " This work: " + _level_sentence(best, notation))
    if best.assumptions:
        parts.append("\\paragraph{Assumptions (this work).}\n" + _assumption_list(best, notation))
    extra = {k: v for k, v in best.definitions.items() if k not in DEFINED_ELSEWHERE}
    if extra:
        parts.append("\\paragraph{Notes.} " + " ".join(
            f"{prose(k.replace('_', ' ') if english_identifier(k) else k, notation)}: {prose(v, notation)}."
            for k, v in extra.items()))
    return "\n\n".join(parts) + "\n"


def _align_with_intertext(rows: list[str]) -> str:
    """``align`` whose rows may be ``\\intertext{...}``; a leading one becomes a sentence."""
    lead = ""
    if rows and rows[0].startswith("\\intertext{"):
        lead = rows[0][len("\\intertext{"):-1] + "\n"
        rows = rows[1:]
    while rows and rows[-1].startswith("\\intertext"):
        rows = rows[:-1]
    out = []
    for i, row in enumerate(rows):
        last = i == len(rows) - 1
        out.append(row if row.startswith("\\intertext") or last else row + " \\\\")
    return lead + "\\begin{align}\n" + "\n".join(out) + "\n\\end{align}"


def number(template: str, tap: str, derivation) -> str:
    """Fill ``@label``, ``@ref``, ``@scale`` and ``@series_*`` in a derivation template."""
    layer_prefix = tap.rsplit(".", 1)[0].split(".", 2)[:2]  # ["blocks", "0"]
    prefix = ".".join(layer_prefix)
    text = re.sub(r"@label\(([^)]*)\)", lambda m: f"eq:{tap}:derivation:{m.group(1)}", template)
    text = re.sub(r"@ref\(([^:]*):([^)]*)\)", lambda m: f"eq:{prefix}.{m.group(1)}:derivation:{m.group(2)}", text)
    scale = "<<d_head>>^{-1}" if derivation.spec.attn_scale == "linear" else "<<d_head>>^{-1/2}"
    text = text.replace("@scale", scale)
    if "@series_sum_sq" in text:
        if SERIES_KEY not in derivation.constants:
            raise ValueError(f"{tap}: the derivation lacks the constant {SERIES_KEY!r} (the conditional softmax "
                             "series) that its text prints; derive it with theory.derive")
        text = text.replace("@series_sum_sq", conditional_series(derivation.constants[SERIES_KEY]))
    return text


def conditional_series(series: sp.Expr) -> str:
    """``S_2`` given tau^2, to tau^4, as an ``align`` row (a notation template).

    ``series`` is ``E[sum_n a_mn^2 | tau^2]`` in the symbols ``m``, ``D`` and ``tau2`` (the
    Derivation's constant ``"S_2 | tau^2"``, from `theory._softmax.row_series`); each
    coefficient of a power of tau^2 is printed factored.
    """
    by_name = {s.name: s for s in series.free_symbols}
    poly = sp.Poly(sp.expand(series), by_name["tau2"])
    m, D = sp.Symbol("MM"), sp.Symbol("DD")  # placeholders, replaced by <<m>>, <<D>> below
    rename = {by_name[name]: new for name, new in (("m", m), ("D", D)) if name in by_name}
    pieces = []
    for (k,), coeff in sorted(poly.terms()):
        c = sp.factor(sp.cancel(coeff.subs(rename)))
        body = sp.latex(c)
        power = "" if k == 0 else ("<<tau>>^{2}" if k == 1 else f"<<tau>>^{{{2 * k}}}")
        pieces.append((power, body))
    out = []
    for i, (power, body) in enumerate(pieces):
        term = body if not power else f"{power}\\, {body}"
        if term.startswith("-"):
            out.append("- " + term[1:])
        else:
            out.append(("+ " if i else "") + term)
    text = "<<E>>\\Bigl[\\sum_{<<n>>} <<a>>_{<<m>><<n>>}^{2} \\,\\Big|\\, <<tau>>^{2}\\Bigr] &= " + out[0] + " " + out[1] + " \\nonumber\\\\\n&\\quad " \
        + " ".join(out[2:]) + " + O\\bigl(<<tau>>^{6}\\bigr)"
    return text.replace("MM", "<<m>>").replace("DD", "<<D>>")
