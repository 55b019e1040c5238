"""The derivation document: the model, the symbols, the derived constants, every step.

* :func:`body` -- everything between ``\\begin{document}`` and ``\\end{document}``, for
  ``\\input`` into a paper or a report; :func:`document` -- the self-contained
  ``derivation.tex``; :func:`write` -- the files of ``theory latex --out DIR``
  (`LATEX_OUTPUTS`).
* The sections: :func:`model_section`, :func:`symbol_table`, :func:`constants_section`
  (from ``Derivation.constants``), :func:`summary_table`, then one
  `theory._latex.steps.step_snippet` per step and, when given, the depth section
  (`theory._latex.depth.depth_section`, rendered by the caller from a prediction).

Every function takes a `theory.derive.Derivation` (or its spec) and prints it; nothing is
derived here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import sympy as sp

from .._outputs import atomic_write_text
from ..spec import ModelSpec
from .notation import MEANING_ORDER, MEANINGS, Notation
from .printer import LINE_WIDTH, Printer, break_lines, visible_width
from .prose import escape, tt
from .steps import label, step_snippet

PACKAGES = r"""\usepackage[margin=1.1in]{geometry}
\usepackage{amsmath,amssymb}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage[hidelinks]{hyperref}
\allowdisplaybreaks[2]"""

PAPER = ("Chi, Fan, Chen, Rudnicky, Ramadge, \\emph{Latent Positional Information is in the Self-Attention "
         "Variance of Transformer Language Models Without Positional Embeddings}, ACL 2023, arXiv:2305.13571.")


def _value(expr, printer: Printer) -> str:
    return printer.doprint(sp.sympify(expr))


def model_section(spec: ModelSpec, notation: Notation) -> str:
    """The model, the measure, the two levels and the assumptions."""
    scale = "<<d_head>>^{-1}" if spec.attn_scale == "linear" else "<<d_head>>^{-1/2}"
    text = r"""\section{Model and assumptions}\label{sec:model}
We study the first layer of a causal, pre-LayerNorm transformer without positional
embeddings at random initialisation. Inputs are i.i.d.\ over positions $<<m>> = 1, \dots, <<seq_len>>$, and per head
\begin{align}
<<x>>_{<<m>>} &\sim \mathcal{N}\bigl(0, <<sigma_embed>>^{2} I_{<<d_model>>}\bigr), \qquad
<<e>>_{<<m>>} = \mathrm{LN}(<<x>>_{<<m>>}), \label{eq:model:input}\\
<<q>>_{<<m>>} &= <<W>>_{q} <<e>>_{<<m>>}, \qquad <<k>>_{<<n>>} = <<W>>_{k} <<e>>_{<<n>>}, \qquad <<v>>_{<<n>>} = <<W>>_{v} <<e>>_{<<n>>}, \label{eq:model:projections}\\
<<l>>_{<<m>><<n>>} &= <<s>>\, <<q>>_{<<m>>}^{\top} <<k>>_{<<n>>}, \qquad <<s>> = @SCALE, \qquad
<<a>>_{<<m>><<n>>} = \frac{e^{<<l>>_{<<m>><<n>>}}}{\sum_{<<n>>' \le <<m>>} e^{<<l>>_{<<m>><<n>>'}}}, \quad <<n>> \le <<m>>, \label{eq:model:attention}\\
<<z>>_{<<m>>} &= \sum_{<<n>> \le <<m>>} <<a>>_{<<m>><<n>>} <<v>>_{<<n>>}, \qquad
<<o>>_{<<m>>} = <<W>>_{o} <<z>>_{<<m>>}, \qquad <<x>>'_{<<m>>} = <<x>>_{<<m>>} + <<o>>_{<<m>>}. \label{eq:model:output}
\end{align}
The entries of $<<W>>_{q}, <<W>>_{k}, <<W>>_{v}$ (of size $<<d_head>> \times <<d_model>>$ per head, $<<d_head>> = <<d_model>>/<<n_heads>>$) and
$<<W>>_{o}$ ($<<d_model>> \times <<d_model>>$) are independent, $\mathcal{N}(0, <<sigma_q>>^{2})$, $\mathcal{N}(0, <<sigma_k>>^{2})$,
$\mathcal{N}(0, <<sigma_v>>^{2})$ and $\mathcal{N}(0, <<sigma_o>>^{2})$; biases are zero and LayerNorm gains one, as at
initialisation. All expectations are \emph{annealed}: over weights and inputs together (a fresh
network per sample). ``$<<Var>>$'' is the variance of one coordinate; coordinates are exchangeable.

Every step is given at two levels. The \emph{leading order} is the paper's \cite{chi2023}:
the LayerNorm output is $\mathcal{N}(0,1)$ per coordinate, attention is uniform ($<<a>>_{<<m>><<n>>} = 1/<<m>>$) and the
weights are independent of the values they average. \emph{This work} keeps the LayerNorm
$<<ln_eps>>$, the non-uniform softmax and the coupling between the weights and the values; each result
states whether it is exact, asymptotic or approximate, with its error and regime.
"""
    return notation.fill(text.replace("@SCALE", scale))


def constants_section(derivation, notation: Notation) -> str:
    """Derived constants: d_h, s, D, c, nu_1, nu_2, rho^2, tau_bar^2, delta, with values
    (``derivation.constants``)."""
    printer = Printer(notation)
    spec, k = derivation.spec, derivation.constants
    scale = "<<d_head>>^{-1}" if spec.attn_scale == "linear" else "<<d_head>>^{-1/2}"
    rows = [
        (r"<<d_head>> &= <<d_model>>/<<n_heads>>", k["d_head"], "d_head"),
        (f"<<s>> &= {scale}", k["s"], "s"),
        (r"<<D>> &= <<d_model>> - 1", k["D"], "D"),
        (r"<<c>> &= <<d_model>> <<ln_eps>>/<<sigma_embed>>^{2}", k["c"], "c"),
    ]
    if derivation.nu_symbolic:
        rows.append((r"<<nu_1>> &= <<E>>\Bigl[\frac{<<X>>}{<<X>>+<<c>>}\Bigr], \quad <<nu_2>> = <<E>>\Bigl[\Bigl(\frac{<<X>>}{<<X>>+<<c>>}\Bigr)^{2}\Bigr],"
                     r" \quad <<X>> \sim \chi^{2}_{<<d_model>>-1}", None, "nu"))
    else:
        rows.append((r"<<nu_1>> &= <<E>>\Bigl[\frac{<<X>>}{<<X>>+<<c>>}\Bigr], \quad <<X>> \sim \chi^{2}_{<<d_model>>-1}", k["nu_1"], "nu"))
        rows.append((r"<<nu_2>> &= <<E>>\Bigl[\Bigl(\frac{<<X>>}{<<X>>+<<c>>}\Bigr)^{2}\Bigr]", k["nu_2"], "nu2"))
    rows.append((r"<<rho>>^{2} &= <<E>>\lVert <<e>>\rVert^{2} = <<d_model>> <<nu_1>>", k["rho^2"], "rho"))
    rows.append((r"<<tau_bar>>^{2} &= <<s>>^{2}<<sigma_q>>^{2}<<sigma_k>>^{2}<<d_head>><<rho>>^{4}", k["tau_bar^2"], "tau"))
    if "delta" in k:  # eps > 0
        rows.append((r"<<delta>> &= \frac{<<c>>}{<<d_model>>-1+<<c>>}\sqrt{\frac{2}{<<d_model>>-1}}", k["delta"], "delta"))
    out = []
    for template, value, name in rows:
        lhs = notation.fill(template)
        if value is None:
            out.append(lhs + f" \\label{{eq:constants:{name}}}")
            continue
        value = sp.sympify(value)
        if not value.free_symbols and not value.is_Integer and not value.is_Rational:
            value = sp.N(value, 6)
        lines = break_lines(value, printer, LINE_WIDTH - 0.5 * visible_width(lhs.split("&")[1]))
        if len(lines) == 1 and "".join(lines[0].split()) == "".join(lhs.rsplit("=", 1)[-1].split()):
            lines = []  # a symbolic spec's value is the definition itself (D = d - 1): not written twice
        if not lines:
            out.append(lhs + f" \\label{{eq:constants:{name}}}")
            continue
        first = f"{lhs} = {lines[0]}"
        rest = [f"&\\quad {l}" for l in lines[1:]]
        block = [first] + rest
        block = [b + " \\nonumber" for b in block[:-1]] + [block[-1] + f" \\label{{eq:constants:{name}}}"]
        out += block
    return (
        "\\subsection{Derived constants}\\label{sec:constants}\n"
        + notation.fill("The LayerNorm output has squared norm $\\lVert <<e>>\\rVert^{2} = <<d_model>> <<X>>/(<<X>>+<<c>>)$ "
                        "(equation~\\eqref{eq:blocks.0.ln1.hook_normalized:derivation:norm}); the constants of this specification are\n")
        + "\\begin{align}\n" + " \\\\\n".join(out) + "\n\\end{align}\n"
    )


def symbol_table(spec: ModelSpec, notation: Notation, fixed=()) -> str:
    """Table of symbols: ours, the meaning, the value in this specification.

    ``fixed``: (field, value) of the scales a symbolic document writes as symbols although
    the user's spec fixed them (`theory._latex_display.DisplayDerivation.fixed`): their
    values stand in the table, the formulas keep the symbols."""
    printer = Printer(notation)
    fixed = dict(fixed)
    values = {}
    for field in ("d_model", "n_heads", "seq_len", "sigma_embed", "sigma_q", "sigma_k", "sigma_v", "sigma_o", "ln_eps"):
        values[field] = (_value(fixed.get(field, getattr(spec, field)), printer), field)
    values["d_head"] = (_value(spec.d_head, printer), "")
    rows = []
    for key in MEANING_ORDER:
        value, field = values.get(key, ("", ""))
        name = tt(field) if field else ""
        rows.append(f"${notation[key]}$ & {name} & {notation.fill(MEANINGS[key])} & {'$' + value + '$' if value else ''} \\\\")
    for key in ("E", "Var", "Cov"):
        meaning = {"E": "expectation (annealed: over weights and inputs)", "Var": "variance of one coordinate",
                   "Cov": "covariance"}[key]
        rows.append(f"${notation[key]}$ & & {meaning} & \\\\")
    return (
        "\\subsection{Symbols}\\label{sec:symbols}\n"
        "\\begin{table}[!htbp]\n\\centering\n\\small\n"
        "\\begin{tabular}{@{}llp{0.48\\linewidth}l@{}}\n\\toprule\n"
        "symbol & spec field & meaning & value \\\\\n\\midrule\n" + "\n".join(rows)
        + "\n\\bottomrule\n\\end{tabular}\n\\caption{Symbols of the derivation and their values in this specification.}"
        "\\label{tab:symbols}\n\\end{table}\n"
    )


def summary_table(derivation, notation: Notation) -> str:
    """One row per step: where the paper's and our result are, and our level."""
    rows = []
    for step in derivation.steps:
        key = "var" if "var" in step.best.quantities else next(iter(step.best.quantities))
        lead_key = key if key in step.leading.quantities else next(iter(step.leading.quantities))
        suffix = step.tap.split(".", 2)[-1]
        rows.append(
            f"{step.best.text.heading if step.best.text else escape(step.best.title)} & {tt(suffix)} & "
            f"\\eqref{{{label(step.tap, 'leading', lead_key)}}} & \\eqref{{{label(step.tap, 'best', key)}}} & "
            f"{step.best.level.value} \\\\"
        )
    return (
        "\\begin{table}[!htbp]\n\\centering\n\\small\n\\begin{tabular}{@{}llccl@{}}\n\\toprule\n"
        "step & tap & paper & this work & level \\\\\n\\midrule\n" + "\n".join(rows)
        + "\n\\bottomrule\n\\end{tabular}\n\\caption{Where each step's result is: the paper's leading order "
        "beside ours, and how far ours can be trusted.}\\label{tab:summary}\n\\end{table}\n"
    )




def _depth_text(depth) -> str | None:
    """The depth section's text, or None; the section is rendered by the caller."""
    if depth is None or depth is False:
        return None
    if isinstance(depth, str):
        return depth
    raise TypeError("depth must be the depth section's LaTeX (theory._latex.depth.depth_section of a prediction) "
                    f"or None, got {type(depth).__name__}; theory.latex(..., depth=True) predicts and renders it")


def body(derivation, notation: Notation | Mapping | None = None, depth: str | None = None) -> str:
    """Everything between ``\\begin{document}`` and ``\\end{document}`` except the title:
    ``\\input``-able into a paper or a report (needs amsmath, amssymb, booktabs).
    ``depth``: the depth section's text (`theory._latex.depth.depth_section`), added after
    the steps."""
    notation = Notation.coerce(notation)
    depth = _depth_text(depth)
    spec = derivation.spec
    parts = [
        "% First-layer (blocks.0) derivation, generated by `python -m theory latex`.",
        "% Needs \\usepackage{amsmath,amssymb,booktabs}.",
        model_section(spec, notation),
        "\\section{Notation}\\label{sec:notation}",
        symbol_table(spec, notation, getattr(derivation, "fixed", ())),
        constants_section(derivation, notation),
        "\\section{Derivation, step by step}\\label{sec:steps}",
        summary_table(derivation, notation),
    ]
    for step in derivation.steps:
        parts.append(step_snippet(step, derivation, notation))
    if depth:
        parts.append(depth)
    parts.append("\\begin{thebibliography}{1}\n\\bibitem{chi2023} " + PAPER + "\n\\end{thebibliography}")
    return "\n\n".join(parts) + "\n"


def document(derivation, notation: Notation | Mapping | None = None, depth: str | None = None) -> str:
    """A self-contained ``derivation.tex`` (compiles with pdflatex, twice for references)."""
    notation = Notation.coerce(notation)
    depth = _depth_text(depth)
    spec = derivation.spec
    subtitle = "symbolic specification" if spec.is_symbolic else "numeric specification"
    return (
        "\\documentclass[10pt]{article}\n" + PACKAGES + "\n"
        "\\title{Positional information in the variance of a causal transformer without positional "
        + ("embeddings: the first-layer derivation and the depth recursion}\n" if depth else "embeddings: the first-layer derivation}\n")
        + f"\\author{{Generated by \\texttt{{python -m theory latex}} ({subtitle})}}\n\\date{{}}\n"
        "\\begin{document}\n\\maketitle\n\n" + body(derivation, notation, depth) + "\n\\end{document}\n"
    )


def step_filename(tap: str) -> str:
    return f"{tap}.tex"


# The files `write` puts into its folder (steps/ holds one snippet per step).
LATEX_OUTPUTS = ("derivation.tex", "derivation-body.tex", "depth.tex", "notation.json", "steps")


def write(derivation, out: str | Path, notation: Notation | Mapping | None = None, depth: str | None = None) -> dict[str, str]:
    """Write ``derivation.tex``, ``derivation-body.tex``, ``steps/<tap>.tex`` and ``notation.json``
    (with ``depth``, the depth section's text: that section in both and as ``depth.tex``)."""
    notation = Notation.coerce(notation)
    depth = _depth_text(depth)
    out = Path(out)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    written = {}
    # each file is replaced atomically: a killed run leaves old or new files, never half of one
    doc = out / "derivation.tex"
    atomic_write_text(doc, document(derivation, notation, depth))
    written["document"] = str(doc)
    b = out / "derivation-body.tex"
    atomic_write_text(b, body(derivation, notation, depth))
    written["body"] = str(b)
    if depth:
        section = out / "depth.tex"
        atomic_write_text(section, depth)
        written["depth"] = str(section)
    for step in derivation.steps:
        path = out / "steps" / step_filename(step.tap)
        atomic_write_text(path, step_snippet(step, derivation, notation))
        written[step.tap] = str(path)
    n = out / "notation.json"
    atomic_write_text(n, json.dumps(notation.as_dict(), indent=1) + "\n")
    written["notation"] = str(n)
    return written
