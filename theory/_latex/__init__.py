"""LaTeX for papers: the renderers behind :func:`theory.latex`. They print results, never derive.

Every function here takes what theory computed (a `theory.derive.Derivation` with its
``constants``, `StepResult`s, a depth `theory.prediction.Prediction`) and returns LaTeX;
none imports a maths module (a test holds it: tests/test_latex_layering.py). The facade
(`theory._facade.latex`) derives and predicts first, then calls them.

Every piece of LaTeX goes through one :class:`Notation` (our symbol -> the user's LaTeX),
so a user who writes ``{"sigma_q": "\\\\sigma_{Q}", "d_model": "D", "E": "\\\\operatorname{E}"}``
once gets it in every equation, the prose, the symbol table and the snippets.

Modules
-------
* `notation` -- :class:`Notation`, the default symbols and their meanings, the allowlist
  a notation value is checked against.
* `printer` -- :class:`Printer` (sympy's ``LatexPrinter`` with the notation, floats to six
  digits), line widths and :func:`break_lines`, the rewrite in ``tau_bar^2``.
* `prose` -- ASCII math in sentences (levels, errors, assumptions) as LaTeX; escaping.
* (each step's heading, subject and derivation text arrive with its result: `StepResult.text`, written next to the step in `theory.steps.<kind>.TEXT`)
* `steps` -- :func:`step_snippet`: one step as an ``\\input``-able subsection; labels.
* `document` -- the sections, :func:`body`, :func:`document`, :func:`write` (``--out DIR``).
* `depth` -- :func:`depth_section`: the depth recursion and its table of predictions.
* `notebook` -- :func:`result_latex`, :func:`result_repr`, :func:`derivation_repr`.

Equation labels come from the tap names: ``eq:blocks.0.attn.hook_z:best:var`` is the
best-level variance of ``hook_z``; the generic derivation steps are
``eq:blocks.0.attn.hook_z:derivation:1``, ... and sections ``sec:blocks.0.attn.hook_z``.
"""

from .depth import depth_section
from .document import LATEX_OUTPUTS, PACKAGES, PAPER, body, constants_section, document, model_section, \
    step_filename, summary_table, symbol_table, write
from .notation import DEFAULT_NOTATION, Notation
from .notebook import derivation_repr, result_latex, result_repr
from .printer import C_SYMBOL, LINE_WIDTH, TAU_BAR2, Printer, break_lines, in_tau_bar, round_floats, visible_width
from .prose import escape, prose, tt
from .steps import SERIES_KEY, conditional_series, label, step_snippet

__all__ = [
    "DEFAULT_NOTATION", "Notation",
    "C_SYMBOL", "Printer", "TAU_BAR2", "LINE_WIDTH", "break_lines", "in_tau_bar", "round_floats", "visible_width",
    "escape", "prose", "tt",
    "SERIES_KEY", "conditional_series", "label", "step_snippet",
    "LATEX_OUTPUTS", "PACKAGES", "PAPER", "body", "constants_section", "document", "model_section",
    "step_filename", "summary_table", "symbol_table", "write",
    "depth_section",
    "derivation_repr", "result_latex", "result_repr",
]
