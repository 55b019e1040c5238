"""Sphinx extension: the page ``formulas`` with the formulas of every step of one layer.

The page is written at build time from `theory.derive` of a symbolic GPT-2 small spec
(``d_model, n_heads, sigma_q, sigma_k, ln_eps`` symbolic), printed as a paper would
(``Derivation.printed()``: the fixed scales as symbols, their values listed), through the public API only:
each step's ``leading`` (the paper) and ``best`` (this toolkit) `StepResult` and its
``latex()``. The toolkit computes; this extension only places the LaTeX it printed on a page
(MathJax renders it in the browser). Nothing here is typed in, so the page follows the code.
"""

from __future__ import annotations

from pathlib import Path

SYMBOLIC_FIELDS = ("d_model", "n_heads", "sigma_q", "sigma_k", "ln_eps")
PAGE = "formulas.md"


def _step_section(step) -> list[str]:
    lines = [f"### `{step.tap}`", ""]
    for name, result in (("Leading order (the paper)", step.leading), ("This toolkit (best level)", step.best)):
        if result is None:
            continue
        level = getattr(getattr(result, "level", None), "value", None)
        lines.append(f"**{name}**" + (f", level *{level}*:" if level else ":"))
        lines += ["", "$$", result.latex().strip(), "$$", ""]
    return lines


def formulas_page() -> str:
    """The Markdown of the page: one section per step of layer 1, both levels."""
    from theory import ModelSpec, derive

    spec = ModelSpec().symbolic(*SYMBOLIC_FIELDS)
    derivation = derive(spec).printed()  # the fixed scales as symbols, c and tau_bar^2 named
    lines = [
        "# Formulas of every step",
        "",
        "Generated when the site is built, from `theory.derive(ModelSpec().symbolic("
        + ", ".join(f'"{f}"' for f in SYMBOLIC_FIELDS) + "))`: GPT-2 small with "
        + ", ".join(f"`{f}`" for f in SYMBOLIC_FIELDS) + " symbolic. Each step that the derivation"
        " covers (the first layer's attention path) shows the paper's leading order and this toolkit's best result. For a paper, "
        "`python -m theory latex` writes the same results as numbered equations with a symbol "
        "table (see [LaTeX](latex.md)).",
        "",
    ]
    fixed = getattr(derivation, "fixed", ())
    if fixed:
        lines += ["The scales the spec fixes are written as symbols, as in a paper; their values here: "
                  + ", ".join(f"`{field}` = {value:g}" for field, value in fixed)
                  + ". The LayerNorm constant is $c = d\\epsilon/\\sigma_e^2$ and $\\bar\\tau^2$ the mean logit variance.", ""]
    for tap in derivation:
        lines += _step_section(derivation[tap])
    return "\n".join(lines) + "\n"


def _write_page(app) -> None:
    path = Path(app.srcdir) / PAGE
    text = formulas_page()
    if not path.exists() or path.read_text(encoding="utf-8") != text:   # rewrite only on change
        path.write_text(text, encoding="utf-8")


def setup(app):
    app.connect("builder-inited", _write_page)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
