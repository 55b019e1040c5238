"""First-layer step of the LayerNorm: its law given Gaussian inputs.

Sublayer kind ``layernorm`` (`theory.block`): ``h = LN(x)``. Its depth map is
`theory.depth_maps.layernorm`, its forward function ``simulate.engine.sublayers.layernorm``.
"""

from __future__ import annotations

import sympy as sp

from .. import _layernorm
from .._moments import beta_moment
from .._result import Level, StepResult, StepText
from ..tolerance import DEFAULT_TOLERANCE
from ._context import NU1, LayerOne, tidy

def layernorm(ctx: LayerOne, level: str, tap: str = "blocks.0.ln1.hook_normalized") -> StepResult:
    r"""LayerNorm of the Gaussian embedding: ``e = (x - mean)/sqrt(var + eps)``, gain 1, bias 0.

    Best level (exact): ``|e|^2 = d X/(X + c)``, ``X ~ chi^2_{d-1}``, ``c = d eps/sigma_e^2``,
    direction uniform on the unit sphere of the (d-1)-dimensional subspace orthogonal to
    the all-ones vector; one coordinate is ``e_i = |e| sqrt((d-1)/d) c_i`` with
    ``c_i^2 ~ Beta(1/2, (d-2)/2)``:

    .. math:: \operatorname{Var}[e_i] = \nu_1, \quad
              \operatorname{Cov}[e_i, e_j] = -\frac{\nu_1}{d-1}, \quad
              \nu_1 = \mathbb{E}\Big[\frac{X}{X+c}\Big]

    (the coordinates sum to zero). Leading level (the paper): N(0, 1) per coordinate.
    Source: the sphere law of a normalised Gaussian vector (e.g. Muirhead 1982, Thm 1.5.6);
    Chi et al. 2023, Sec. 3.2 for the leading order.

    >>> from theory import ModelSpec
    >>> from theory.steps import LayerOne
    >>> float(layernorm(LayerOne.from_spec(ModelSpec(d_model=64, n_heads=4, ln_eps=0.0)), "best").quantities["var"])
    1.0
    """
    if level == "leading":
        return StepResult(
            tap=tap,
            title="LayerNorm output treated as N(0, 1) per coordinate (the paper)",
            level=Level.APPROXIMATE,
            quantities={"mean": sp.Integer(0), "var": sp.Integer(1)},
            assumptions=("LayerNorm output Gaussian N(0, 1)", "eps neglected"),
            regime="d >> 1, eps << sigma_e^2",
            error="relative O(eps/sigma_e^2) in the variance; kurtosis O(1/d)",
            symbol="e_i",
            tolerance=DEFAULT_TOLERANCE,
            tolerance_source="default (no derived constant)",
        )
    d = ctx.d
    # One coordinate of a uniform unit vector in the (d-1)-dim subspace, scaled by |e|:
    # e_i = |e| sqrt((d-1)/d) c, c^2 ~ Beta(1/2, (d-2)/2)  (so e_i^2/(d-1) ~ Beta at eps=0).
    omega2 = (d - 1) / d * beta_moment(sp.Rational(1, 2), (d - 2) / 2, 1)
    omega4 = ((d - 1) / d) ** 2 * beta_moment(sp.Rational(1, 2), (d - 2) / 2, 2)
    var = ctx.rho2 * omega2
    fourth = ctx.e4 * omega4
    # Coordinates sum to zero: 0 = Var(sum_i e_i) = d Var + d (d-1) Cov.
    cov = sp.Symbol("c")
    cov_value = sp.solve(sp.Eq(d * var + d * (d - 1) * cov, 0), cov)[0]
    forms, definitions = {}, {}
    if ctx.nu1 == NU1:
        nu1_closed, nu2_closed = _layernorm.norm_moments(d, ctx.eps, ctx.sigma_e)
        forms = {
            "nu_1": nu1_closed,
            "nu_2": nu2_closed,
            "nu_1, small eps": _layernorm.norm_moments_series(d, ctx.eps, ctx.sigma_e, 2)[0],
        }
        definitions = {
            "nu_1": "E|e|^2/d = E[X/(X+c)], X ~ chi^2_{d-1}, c = d eps/sigma_e^2",
            "nu_2": "E|e|^4/d^2 = E[(X/(X+c))^2]",
        }
    return StepResult(
        tap=tap,
        title="LayerNorm: |e|^2 = d X/(X + c), direction uniform on the sphere of the (d-1)-subspace",
        level=Level.EXACT,
        quantities={
            "mean": sp.Integer(0),
            "var": tidy(var),
            "excess_kurtosis": tidy(fourth / var**2 - 3),
            "cov_coordinates": tidy(cov_value),
        },
        forms=forms,
        definitions=definitions,
        assumptions=("gain 1, bias 0 (initialisation)", "biased variance in the normaliser (torch)"),
        regime="all d >= 2, all eps",
        symbol="e_i",
        tolerance=0.0,
        tolerance_source="exact",
    )


# ---------------------------------------------------------------- text of the derivation document
# Each step's heading, the coordinate its quantities describe (the LaTeX subject) and its
# derivation in words and numbered equations, keyed by tap suffix. Templates: ``<<key>>`` for
# every symbol (`theory._latex.notation.Notation`), ``@label(name)``/``@ref(tap:name)`` for
# equations, ``@scale`` for the logit scale, ``@series_sum_sq`` for the softmax series
# (``Derivation.constants["S_2 | tau^2"]``); no spec-dependent number.
TEXT: dict[str, StepText] = {
    "ln1.hook_normalized": StepText(
        heading="LayerNorm",
        subject="<<e>>_{<<m>>,i}",
        derivation=r"""LayerNorm (gain $1$, bias $0$, biased variance in the normaliser) maps
$<<x>>$ to
\begin{align}
<<e>> &= \frac{<<x>> - \bar{<<x>>}\mathbf{1}}{\sqrt{\tfrac{1}{<<d_model>>}\lVert <<x>> - \bar{<<x>>}\mathbf{1}\rVert^{2} + <<ln_eps>>}}, \nonumber\\
\bar{<<x>>} &= \frac{1}{<<d_model>>}\sum_{i} <<x>>_{i}. \label{@label(layernorm)}
\end{align}
The centred vector is an isotropic Gaussian in the $(<<d_model>>-1)$-dimensional subspace
orthogonal to $\mathbf{1}$, so $<<e>> = \lVert <<e>>\rVert\, w$ with $w$ uniform on the unit
sphere of that subspace and independent of
\begin{align}
\lVert <<e>>\rVert^{2} &= \frac{<<d_model>> <<X>>}{<<X>> + <<c>>}, \quad <<X>> \sim \chi^{2}_{<<d_model>>-1}, \nonumber\\
<<c>> &= \frac{<<d_model>> <<ln_eps>>}{<<sigma_embed>>^{2}}. \label{@label(norm)}
\end{align}
One coordinate of $w$ satisfies $\tfrac{<<d_model>>}{<<d_model>>-1} w_i^{2} \sim \mathrm{Beta}\bigl(\tfrac12, \tfrac{<<d_model>>-2}{2}\bigr)$, hence
\begin{align}
<<Var>>[<<e>>_{<<m>>,i}] &= \frac{<<E>>\lVert <<e>>\rVert^{2}}{<<d_model>>} = <<nu_1>>, \nonumber\\
<<E>>[<<e>>_{<<m>>,i}^{4}] &= <<E>>\lVert <<e>>\rVert^{4}\, <<E>>[w_i^{4}] \nonumber\\
&= \frac{3(<<d_model>>-1)}{<<d_model>>+1}\, <<nu_2>>, \label{@label(moments)}
\end{align}
with $<<nu_1>> = <<E>>[<<X>>/(<<X>>+<<c>>)]$ and $<<nu_2>> = <<E>>[(<<X>>/(<<X>>+<<c>>))^{2}]$, which the
Laplace identity $1/(<<X>>+<<c>>) = \int_{0}^{\infty} e^{-t(<<X>>+<<c>>)}\,dt$ and the chi-square
moment generating function turn into upper incomplete gamma functions
(equation~\eqref{eq:constants:nu}). The coordinates sum to zero, so
\begin{align}
0 &= <<Var>>\Bigl[\sum_{i} <<e>>_{<<m>>,i}\Bigr] \nonumber\\
&= <<d_model>>\,<<Var>>[<<e>>_{<<m>>,i}] \nonumber\\
&\quad + <<d_model>>(<<d_model>>-1)\,<<Cov>>[<<e>>_{<<m>>,i}, <<e>>_{<<m>>,j}]. \label{@label(sum-zero)}
\end{align}
With $<<ln_eps>> = 0$, $<<e>>_{<<m>>,i}^{2}/(<<d_model>>-1) \sim \mathrm{Beta}\bigl(\tfrac12, \tfrac{<<d_model>>-2}{2}\bigr)$:
variance $1$ and excess kurtosis $-6/(<<d_model>>+1)$.""",
    ),
}

__all__ = ["layernorm"]
