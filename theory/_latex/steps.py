"""One first-layer step as LaTeX: its subsection with the derivation, both levels, forms and level.

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
from .printer import C_SYMBOL, TAU_BAR2, Printer, break_lines, rhs_width, visible_width
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


def form_lhs(name: str, subject: str, expr: sp.Expr | None = None) -> tuple[str, str, str]:
    """(intertext, lhs, suffix) for an alternative form (``expr``: the form, to name the
    small parameter it is written in: ``c`` or ``eps``)."""
    if name == "nu_1":
        return "closed form (upper incomplete gamma function):", "<<nu_1>>", ""
    if name == "nu_2":
        return "", "<<nu_2>>", ""
    if name.startswith("nu_1, small"):
        small = "<<c>>" if expr is not None and C_SYMBOL in sp.sympify(expr).free_symbols else "<<ln_eps>>"
        return "small-$<<ln_eps>>$ series:", "<<nu_1>>", f" + O\\bigl({small}^{{3}}\\bigr)"
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


def _equation_rows(lhs: str, rel: str, expr: sp.Expr, printer: Printer, tag: str, suffix: str = "",
                   widest: str = "") -> list[str]:
    """Rows of an ``align`` for ``lhs rel expr``, broken, numbered and labelled on the last row.

    ``widest``: the widest left-hand side of the same ``align`` (it sets the alignment point,
    so every row's right-hand side has only what it leaves of the column)."""
    lines = break_lines(expr, printer, rhs_width(widest or lhs) - visible_width(suffix))
    lines[-1] += suffix
    rows = [f"{lhs} &{rel} {lines[0]}"]
    rows += [f"&\\quad {line}" for line in lines[1:]]
    rows = [r + r" \nonumber" for r in rows[:-1]] + [rows[-1] + f" \\label{{{tag}}}"]
    return rows


def _widest(lhs_list: list[str]) -> str:
    return max(lhs_list, key=visible_width) if lhs_list else ""


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
    widest = _widest([notation.fill(quantity_lhs(name, subject)) for r in (leading, best) for name in r.quantities])
    rows = []
    rows.append("\\intertext{\\emph{Leading order (the paper)}, " + prose(leading.title.split(" (the paper)")[0], notation) + ":}")
    for name, expr in leading.quantities.items():
        rows += _equation_rows(notation.fill(quantity_lhs(name, subject)), "=", expr, printer, label(tap, "leading", name),
                               widest=widest)
    rows.append("\\intertext{\\emph{This work}:}")
    for name, expr in best.quantities.items():
        rows += _equation_rows(notation.fill(quantity_lhs(name, subject)), "=", expr, printer, label(tap, "best", name),
                               widest=widest)
    parts.append(_align_with_intertext(rows))
    if best.forms:
        # the forms arrive written in tau_bar^2 where that is shorter (theory._latex_display)
        form_rows = []
        rewritten = False
        widest = _widest([notation.fill(form_lhs(name, subject, expr)[1]) for name, expr in best.forms.items()])
        for name, expr in best.forms.items():
            inter, lhs, tail = form_lhs(name, subject, expr)
            if inter:
                form_rows.append("\\intertext{" + notation.fill(inter) + "}")
            rewritten |= TAU_BAR2 in sp.sympify(expr).free_symbols
            form_rows += _equation_rows(notation.fill(lhs), "=", expr, printer,
                                        label(tap, "form", name), notation.fill(tail), widest)
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
    """``S_2`` given tau^2, to tau^4, as ``align`` rows (a notation template), one power of
    tau^2 per row.

    ``series`` is ``E[sum_n a_mn^2 | tau^2]`` in the symbols ``m``, ``D`` and ``tau2`` (the
    Derivation's constant ``"S_2 | tau^2"``, from `theory._softmax.row_series`); each
    coefficient of a power of tau^2 is printed as sympy factored it, its widest polynomial
    factor on a row of its own so that the rows fit a column.
    """
    by_name = {s.name: s for s in series.free_symbols}
    poly = sp.Poly(sp.expand(series), by_name["tau2"])
    m, D = sp.Symbol("MM"), sp.Symbol("DD")  # placeholders, replaced by <<m>>, <<D>> below
    rename = {by_name[name]: new for name, new in (("m", m), ("D", D)) if name in by_name}
    rows = []
    for (k,), coeff in sorted(poly.terms()):
        c = sp.factor(sp.cancel(coeff.subs(rename)))
        power = "" if k == 0 else ("<<tau>>^{2}" if k == 1 else f"<<tau>>^{{{2 * k}}}")
        numer, denom = sp.fraction(c)
        sign = "-" if numer.could_extract_minus_sign() else "+"
        numer = -numer if sign == "-" else numer
        sums = [f for f in sp.Mul.make_args(numer) if isinstance(f, sp.Add) and len(f.args) > 2]
        if power and sums:  # tau^{2k} (narrow factors)/(denominator) on one row, the widest sum below
            widest = max(sums, key=lambda f: len(f.args))
            head = sp.latex(sp.Mul(numer / widest, evaluate=True))
            frac = f"\\frac{{{head}}}{{{sp.latex(denom)}}}" if denom != 1 else head
            rows += [f"{sign} {power}\\, {frac}", f"\\times \\Bigl({sp.latex(widest)}\\Bigr)"]
        else:
            body = sp.latex(numer / denom)
            rows.append(f"{sign} {power}\\, {body}" if power else f"{sign} {body}")
    rows[0] = rows[0][2:] if rows[0].startswith("+ ") else rows[0]
    rows[-1] += " + O\\bigl(<<tau>>^{6}\\bigr)"
    # the alignment point at the left margin: the wide left-hand side does not indent the rows below it
    lhs = "&<<E>>\\Bigl[\\sum_{<<n>>} <<a>>_{<<m>><<n>>}^{2} \\,\\Big|\\, <<tau>>^{2}\\Bigr] = "
    text = lhs + " \\nonumber\\\\\n&\\qquad ".join(rows)
    return text.replace("MM", "<<m>>").replace("DD", "<<D>>")
