"""The LaTeX facade: derive and predict first, then render (`theory.latex`).

The renderers (`theory._latex`) print results and never compute; this module, above both
the maths and the renderers, does the computing a call asks for (`theory.derive.derive`
for a spec, `theory.depth.predict` for the depth table) and hands the results over. It
also attaches the renderers to the result classes (`install_notebook_methods`), so that
the results import no renderer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from . import depth as _depth
from ._latex import LATEX_OUTPUTS, Notation, body, depth_section, document, step_snippet, symbol_table
from ._latex import write as _write
from ._latex.notebook import derivation_repr, result_latex, result_repr
from ._latex_display import display_derivation
from ._result import StepResult
from .derive import Derivation, derive
from .spec import ModelSpec

PARTS = ("document", "body", "symbols", "depth")


def _derivation(spec_or_derivation) -> Derivation:
    """The derivation to print: a symbolic one with its fixed scales as symbols and ``c``,
    ``tau_bar^2`` named (`theory._latex_display.display_derivation`)."""
    if isinstance(spec_or_derivation, Derivation):
        return display_derivation(spec_or_derivation)
    if spec_or_derivation is None or isinstance(spec_or_derivation, ModelSpec):
        return display_derivation(derive(spec_or_derivation))
    raise TypeError(f"expected a ModelSpec or a Derivation, got {type(spec_or_derivation).__name__}")


def depth_latex(spec: ModelSpec, notation: Notation | Mapping | None = None) -> str:
    """The depth section of ``spec``: for a numeric spec, predicted first (`theory.depth.predict`)."""
    return depth_section(spec, notation, None if spec.is_symbolic else _depth.predict(spec))


def write(derivation, out: str | Path, notation: Notation | Mapping | None = None, depth: bool | str = False) -> dict[str, str]:
    """`theory._latex.write` of a derivation (or spec); ``depth=True`` predicts and adds the depth section."""
    derivation = _derivation(derivation)
    notation = Notation.coerce(notation)
    if depth is True:  # one recursion for the three files
        depth = depth_latex(derivation.spec, notation)
    return _write(derivation, out, notation, depth or None)


def latex(spec=None, *, notation=None, step=None, part: str = "document", out=None, depth: bool = False) -> str:
    """LaTeX for papers, as strings.

    ``spec``: a `ModelSpec` (default GPT-2 small) or a `Derivation` from `theory.derive`
    (reused; for a symbolic spec its fixed scales are derived once more as symbols, their
    values going to the symbol table: ``Derivation.printed()``). ``notation``: a dict or a JSON file mapping our symbols to
    yours, e.g. ``{"sigma_q": r"\\sigma_{Q}", "d_model": "D", "E": r"\\operatorname{E}"}``
    (keys: ``theory._latex.DEFAULT_NOTATION``). ``step``: a tap (``"blocks.0.attn.hook_z"``
    or ``("hook_z", 0)``) to get that step's ``\\input``-able snippet. ``part``:
    ``"document"`` (self-contained ``derivation.tex``), ``"body"`` (for ``\\input``),
    ``"symbols"`` (the table of symbols). ``out``: a directory to also write
    ``derivation.tex``, ``derivation-body.tex``, ``steps/<tap>.tex`` and ``notation.json``.
    ``depth``: add the depth recursion of every layer (``part="depth"`` returns that section
    alone; with ``out`` it is also written as ``depth.tex``).

    >>> from theory import ModelSpec, derive, latex
    >>> d = derive(ModelSpec(d_model=64, n_heads=4))
    >>> tex = latex(d, notation={"sigma_v": r"\\sigma_{V}"}, step=("hook_z", 0))
    >>> "\\\\sigma_{V}" in tex and "\\\\label{eq:blocks.0.attn.hook_z:best:var}" in tex
    True
    """
    derivation = _derivation(spec)
    notation = Notation.coerce(notation)
    if part not in PARTS:
        raise ValueError(f"part must be 'document', 'body', 'symbols' or 'depth'; got {part!r}")
    section = None
    if depth or part == "depth":
        section = depth_latex(derivation.spec, notation)  # one recursion for every use below
    if out is not None:
        _write(derivation, out, notation, section)
    if step is not None:
        return step_snippet(derivation[step], derivation, notation)
    if part == "depth":
        return section
    if part == "document":
        return document(derivation, notation, section)
    if part == "body":
        return body(derivation, notation, section)
    return symbol_table(derivation.spec, notation, getattr(derivation, "fixed", ()))


def _derivation_latex(derivation: Derivation) -> str:
    """``Derivation.latex()``: the derivation body (every step, both levels, numbered equations)."""
    return latex(derivation, part="body")


def install_notebook_methods() -> None:
    """Give the result classes their LaTeX methods: ``StepResult.latex()``, ``_repr_latex_``
    (Jupyter), ``Derivation.latex()``, ``_repr_latex_``. The results import no renderer."""
    StepResult.latex = result_latex
    StepResult._repr_latex_ = result_repr
    Derivation.latex = _derivation_latex
    Derivation._repr_latex_ = lambda derivation: derivation_repr(display_derivation(derivation))
    Derivation.printed = display_derivation  # symbolic: fixed scales as symbols, c and tau_bar^2 named


# Wired on import, after both the results and the renderers are loaded: `import theory`
# (which imports this module) gives every result its LaTeX.
install_notebook_methods()

__all__ = ["latex", "write", "depth_latex", "install_notebook_methods", "LATEX_OUTPUTS", "Notation"]
