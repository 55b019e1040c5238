"""First-layer steps of the residual stream: the embedding entering the block, and a residual write.

Sublayer kind ``residual`` (`theory.block`): ``x = x + h``. Its depth map is
`theory.depth_maps.residual`, its forward function ``simulate.engine.sublayers.residual``.
"""

from __future__ import annotations

import sympy as sp

from .._result import Level, StepResult, StepText
from ._context import LayerOne
from .attention import attention_output_variance, leading_row_step, output_variance, row_step, variance_forms


def embedding(ctx: LayerOne, level: str, tap: str = "blocks.0.hook_resid_pre") -> StepResult:
    r"""Embedding: the stream entering the first layer (layer 0), ``x_m ~ N(0, sigma_e^2 I_d)`` i.i.d. over positions.

    .. math:: \mathbb{E}[x_{m,i}] = 0, \quad \operatorname{Var}[x_{m,i}] = \sigma_e^2, \quad \kappa_4 = 0

    Exact at both levels. Assumes continuous Gaussian token embeddings (``vocab_size =
    null``); a finite vocabulary repeats inputs across positions (outside the theory).
    Source: the model's definition (Chi et al. 2023, Sec. 3).
    """
    return StepResult(
        tap=tap,
        title="Embedding: x_m ~ N(0, sigma_e^2 I_d), i.i.d. over positions",
        level=Level.EXACT,
        quantities={"mean": sp.Integer(0), "var": ctx.sigma_e**2, "excess_kurtosis": sp.Integer(0)},
        assumptions=("continuous Gaussian token embeddings (vocab_size = null)",),
        regime="all m",
        symbol="x_m",
        tolerance=0.0,
        tolerance_source="exact",
    )


def residual(ctx: LayerOne, level: str, tap: str = "blocks.0.hook_resid_mid") -> StepResult:
    r"""Residual write after attention: ``x + W_o z``; the variances add.

    .. math:: \operatorname{Var}[x_i + o_i] = \sigma_e^2 + \sigma_o^2 d \operatorname{Var}[z_j]

    ``E[x_i o_i] = 0`` because ``W_o`` has mean zero and is independent of ``x``; the
    level and error are those of ``Var(z)`` (`theory.steps.attention.z`). ``tap`` is the
    declared name: ``hook_resid_mid``, or ``hook_resid_post`` for an attention-only block.
    """
    if level == "leading":
        return leading_row_step(ctx, tap, "x + W_o z: variances add (W_o is independent, mean 0)",
                                ctx.sigma_e**2 + attention_output_variance(ctx, "leading"), "x'")
    return row_step(
        ctx,
        tap,
        "Residual x + W_o z: variances add (x and W_o z are uncorrelated)",
        {"mean": sp.Integer(0), "var": ctx.sigma_e**2 + attention_output_variance(ctx, "best")},
        variance_forms(ctx, lambda zv: ctx.sigma_e**2 + output_variance(ctx, zv)),
        "x'",
    )


# ---------------------------------------------------------------- text of the derivation document
# Each step's heading, the coordinate its quantities describe (the LaTeX subject) and its
# derivation in words and numbered equations, keyed by tap suffix. Templates: ``<<key>>`` for
# every symbol (`theory._latex.notation.Notation`), ``@label(name)``/``@ref(tap:name)`` for
# equations, ``@scale`` for the logit scale, ``@series_sum_sq`` for the softmax series
# (``Derivation.constants["S_2 | tau^2"]``); no spec-dependent number.
TEXT: dict[str, StepText] = {
    "hook_resid_pre": StepText(
        heading="Embedding",
        subject="<<x>>_{<<m>>,i}",
        derivation=r"""The inputs are i.i.d.\ over positions and coordinates,
\begin{align}
<<x>>_{<<m>>} \sim \mathcal{N}\bigl(0, <<sigma_embed>>^{2} I_{<<d_model>>}\bigr), \label{@label(input)}
\end{align}
so one coordinate is Gaussian with mean $0$ and variance $<<sigma_embed>>^{2}$, exactly.""",
    ),
    "hook_resid_mid": StepText(
        heading="Residual connection",
        subject="<<x>>'_{<<m>>,i}",
        derivation=r"""$<<E>>[<<x>>_{<<m>>,i}<<o>>_{<<m>>,i}] = 0$ because $<<W>>_{o}$ has mean zero and is independent of $<<x>>$, so the variances add:
\begin{align}
<<Var>>[<<x>>'_{<<m>>,i}] = <<sigma_embed>>^{2} + <<Var>>[<<o>>_{<<m>>,i}]. \label{@label(add)}
\end{align}""",
    ),
}
TEXT["hook_resid_post"] = TEXT["hook_resid_mid"]  # an attention-only block's residual write is its output

__all__ = ["embedding", "residual"]
