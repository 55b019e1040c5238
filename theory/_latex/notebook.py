"""LaTeX of single results, for notebooks and for pasting.

* :func:`result_latex` -- one `StepResult` as an ``aligned`` block (``StepResult.latex()``);
* :func:`result_repr` -- what Jupyter shows for a `StepResult` (``_repr_latex_``);
* :func:`derivation_repr` -- what Jupyter shows for a whole `theory.derive.Derivation`.

The results import no renderer: the facade (`theory._facade.install_notebook_methods`)
attaches these functions to the result classes.
"""

from __future__ import annotations

from typing import Mapping

from .._result import StepResult
from .notation import Notation
from .printer import Printer, break_lines
from .prose import escape
from .steps import form_lhs, quantity_lhs


def result_latex(result: StepResult, notation: Notation | Mapping | None = None) -> str:
    """One `StepResult` as an ``aligned`` block (no math delimiters): its quantities, then its forms."""
    notation = Notation.coerce(notation)
    printer = Printer(notation)
    subject = notation.fill(result.text.subject) if result.text else result.symbol
    rows = []
    for name, expr in result.quantities.items():
        lines = break_lines(expr, printer)
        rows.append(f"{notation.fill(quantity_lhs(name, subject))} &= {lines[0]}")
        rows += [f"&\\quad {line}" for line in lines[1:]]
    for name, expr in result.forms.items():
        # the form's own left-hand side (no text with inline math: MathJax has no $ inside \text)
        _, lhs, tail = form_lhs(name, subject, expr)
        lines = break_lines(expr, printer)
        lines[-1] += notation.fill(tail)
        rows.append(f"{notation.fill(lhs)} &= {lines[0]}")
        rows += [f"&\\quad {line}" for line in lines[1:]]
    return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"


def result_repr(result: StepResult) -> str:
    """What Jupyter shows for a `StepResult`: the tap, the level, the equations."""
    head = f"\\mathtt{{{escape(result.tap)}}}\\ \\text{{({result.level.value})}}"
    return f"$$\\begin{{gathered}}{head}\\\\\n{result_latex(result)}\\end{{gathered}}$$"


def derivation_repr(derivation) -> str:
    """What Jupyter shows for a whole `Derivation`: every step, paper and ours."""
    blocks = []
    for step in derivation.steps:
        blocks.append(
            f"\\mathtt{{{escape(step.tap)}}}\\\\\n\\text{{paper ({step.leading.level.value}):}}\\;"
            f"{result_latex(step.leading)}\\qquad\\text{{ours ({step.best.level.value}):}}\\;{result_latex(step.best)}"
        )
    return "$$\\begin{gathered}\n" + " \\\\[1ex]\n".join(blocks) + "\n\\end{gathered}$$"
