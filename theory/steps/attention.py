"""First-layer steps of causal softmax attention: projections, logits, weights, values, output.

Sublayer kind ``attention`` (`theory.block`): ``h = W_o z``, ``z_m = sum_{n<=m} a_mn v_n``,
``a_mn = softmax_n(s q_m . k_n)``. Its depth map is `theory.depth_maps.attention`, its
forward function ``simulate.engine.sublayers.attention``.

The key structural fact (exact when eps = 0): the query-side vector
``u = s W_k^T q_m`` is independent of every key direction ``e_n / |e_n|`` (``q_m``
depends on ``e_m`` only through ``|e_m|``, by rotation invariance of ``W_q``), and the
key directions are i.i.d. uniform on the unit sphere of the (d-1)-dimensional subspace
orthogonal to the all-ones vector. Hence, given u, the logits of row m are i.i.d.,
``l_mn = sqrt(D tau^2) c_n`` with ``D = d - 1`` and c one coordinate of a uniform unit
vector, and ``tau^2 = s^2 sigma_q^2 sigma_k^2 rho^4 chi^2_{d_head} chi^2_D / (d_head D)``.
Writing each key as ``e_n = rho (c_n u_hat + sqrt(1 - c_n^2) w_n)`` with ``w_n`` uniform
and independent of the logits,

    Var(z_j) = sigma_v^2 rho^2 ( S_2(m) + Xi(m) / (d - 1) ).

The first term is the paper's shrinkage (with ``S_2 -> e^{tau^2}/m``, not ``1/m``); the
second does **not** shrink with m (``Xi -> tau_bar^2``): the average leans toward the
direction ``u_hat`` of each query, so the variance floors at
``sigma_v^2 rho^2 tau_bar^2 / (d - 1)`` once ``m`` exceeds about ``(d-1)/tau_bar^2``.
"""

from __future__ import annotations

import sympy as sp

from .._moments import MomentSequence, chi2_mgf, chi2_moment
from .._result import Level, StepResult, StepText
from .._softmax import D_sym, m_sym, row_large_m, row_series, v_sym
from ..tolerance import DEFAULT_TOLERANCE, from_order
from ._context import PLACEHOLDERS, S2, SERIES_ORDER, LayerOne, Xi, tidy


# ============================================================================ series
def _mixture_moment(ctx: LayerOne, k: int) -> sp.Expr:
    """``E[G^k]`` for ``G = (chi^2_{d_head}/d_head)(chi^2_D/D)``: ``tau^2 = tau_bar^2 G``."""
    dh, D = ctx.d_head, ctx.sphere_dim
    return chi2_moment(dh, k) / dh**k * chi2_moment(D, k) / D**k


def mixed_series(ctx: LayerOne, quantity: str) -> sp.Expr:
    """The small-tau series of a row quantity, averaged over the law of tau^2."""
    series = row_series(quantity, SERIES_ORDER).subs(D_sym, ctx.sphere_dim)
    poly = sp.Poly(sp.expand(series), v_sym)
    return sum(
        (c * ctx.tau2_bar**k * _mixture_moment(ctx, k) for (k,), c in poly.terms()), sp.Integer(0)
    )


def large_m_limit(ctx: LayerOne, quantity: str) -> sp.Expr:
    """Law-of-large-numbers limit of ``m S_2(m)`` or ``Xi(m)``, averaged over tau^2.

    ``m S_2 -> E[e^{tau^2}]``; the chi^2_{d_head} factor of tau^2 is averaged exactly
    with its moment generating function (``(1 - 2t/d_head)^{-d_head/2}``, from
    from its density), the chi^2_D factor (relative spread ``sqrt(2/D)``) is set to its mean.
    ``Xi -> E[tau^2] = tau_bar^2`` exactly.
    """
    conditional = row_large_m(quantity)
    if quantity == "coupling":
        return tidy(conditional.subs(v_sym, ctx.tau2_bar))
    if tidy(conditional - sp.exp(v_sym)) != 0:
        raise AssertionError("the conditional large-m limit is expected to be exp(tau^2)")
    # E[exp(tau_bar^2 Y/d_head)], Y ~ chi^2_{d_head}: the chi-square MGF at t = tau_bar^2/d_head.
    return chi2_mgf(ctx.tau2_bar / ctx.d_head, ctx.d_head)


# ============================================================================ steps
def projection(ctx: LayerOne, level: str, tap: str) -> StepResult:
    r"""Projection ``q = W_q e`` (and k, v): Gaussian given ``|e|``, a Gaussian scale mixture.

    .. math:: \operatorname{Var}[q_j] = \sigma_q^2\,\mathbb{E}\lVert e\rVert^2 = \sigma_q^2 d \nu_1, \quad
              \kappa_4[q_j] = 3\frac{\mathbb{E}\lVert e\rVert^4}{(\mathbb{E}\lVert e\rVert^2)^2} - 3

    Exact at the best level (given e, ``q_j = sum_i W_ji e_i ~ N(0, sigma^2 |e|^2)``);
    the leading level sets ``|e|^2 = d``. ``tap`` names which: ``attn.hook_q|k|v``.
    """
    which = tap.rsplit("hook_", 1)[1]
    sigma = {"q": ctx.sigma_q, "k": ctx.sigma_k, "v": ctx.sigma_v}[which]
    norm2 = ctx.d if level == "leading" else ctx.rho2
    # Given e, q_j = sum_i W_ji e_i ~ N(0, sigma^2 |e|^2): a Gaussian scale mixture.
    kurt = sp.Integer(0) if level == "leading" else tidy(3 * ctx.e4 / ctx.rho2**2 - 3)
    return StepResult(
        tap=tap,
        title=f"Projection {which} = W_{which} e: Gaussian given |e|, variance sigma_{which}^2 |e|^2",
        level=Level.APPROXIMATE if level == "leading" else Level.EXACT,
        quantities={"mean": sp.Integer(0), "var": sigma**2 * norm2, "excess_kurtosis": kurt},
        assumptions=("W entries i.i.d. N(0, sigma^2), independent of e",)
        + (("|e|^2 = d (LayerNorm eps neglected)",) if level == "leading" else ()),
        regime="all m",
        error="relative O(eps/sigma_e^2)" if level == "leading" else None,
        symbol=which,
        **_tolerance(level == "leading"),
    )


def scores(ctx: LayerOne, level: str, tap: str = "blocks.0.attn.hook_attn_scores") -> StepResult:
    r"""Logits ``l_mn = s q_m . k_n``: variance-gamma given the LayerNorm radii, pooled over keys ``n <= m``.

    .. math:: \operatorname{Var}[l_{mn}] = \frac{(m-1)\, s^2\sigma_q^2\sigma_k^2 d_h \rho^4
              + s^2\sigma_q^2\sigma_k^2 d_h\, \mathbb{E}\lVert e\rVert^4}{m}

    (``n != m``: the two radii are independent; ``n = m``: one radius appears squared
    twice). The excess kurtosis of one off-diagonal logit is ``6/d_head`` at eps = 0 (a sum
    of ``d_head`` products of independent Gaussians). Exact at the best level.
    """
    s2q2k2 = ctx.scale**2 * ctx.sigma_q**2 * ctx.sigma_k**2
    product = MomentSequence.gaussian(1) * MomentSequence.gaussian(1)  # g_j h_j
    dot = product.iid_sum(ctx.d_head)  # sum over the head's coordinates
    if level == "leading":
        var = s2q2k2 * ctx.d_head * ctx.d**2
        kurt = dot.excess_kurtosis
        return StepResult(
            tap=tap,
            title="Logit l_mn = s q_m.k_n with Gaussian q, k of variance sigma^2 d",
            level=Level.APPROXIMATE,
            quantities={"mean": sp.Integer(0), "var": tidy(var), "excess_kurtosis": tidy(kurt)},
            assumptions=("|e|^2 = d", "q, k independent Gaussians"),
            regime="all m",
            error="relative O(eps/sigma_e^2)",
            symbol="l_{mn}",
            **_tolerance(approximate=True),
        )
    # n != m: radii of e_m, e_n independent; n = m: one radius appears squared twice.
    var_off = s2q2k2 * ctx.d_head * ctx.rho2**2
    var_diag = s2q2k2 * ctx.d_head * ctx.e4
    var = ((m_sym - 1) * var_off + var_diag) / m_sym
    radius_ratio = ctx.e4 / ctx.rho2**2
    kurt_off = tidy((dot.moments[4] / dot.moments[2] ** 2) * radius_ratio**2 - 3)
    return StepResult(
        tap=tap,
        title="Logit l_mn = s sum_j q_j k_j: variance-gamma given the radii, pooled over keys n <= m",
        level=Level.EXACT,
        quantities={"mean": sp.Integer(0), "var": tidy(var), "excess_kurtosis": kurt_off},
        forms={"var (n != m)": tidy(var_off)},
        definitions={"excess_kurtosis": "of one off-diagonal score (n != m); 6/d_head when eps = 0"},
        assumptions=("W_q, W_k independent", "given e_m, e_n the head coordinates are i.i.d. products"),
        regime="all m",
        symbol="l_{mn}",
        **_tolerance(approximate=False),
    )


def pattern(ctx: LayerOne, level: str, tap: str = "blocks.0.attn.hook_pattern") -> StepResult:
    r"""Softmax weights ``a_mn = softmax_{n<=m}(l_mn)``: their mean and spread.

    .. math:: \mathbb{E}[a_{mn}] = \frac{1}{m}, \qquad
              S_2(m) = \mathbb{E}\Big[\sum_{n\le m} a_{mn}^2\Big]

    ``E[a_mn] = 1/m`` exactly by exchangeability of the keys. ``S_2`` by quadrature over
    the exact row law (i.i.d. logits given the query side; `theory._quadrature`), with its
    small-tau series (error ``O(tau_bar^6)``) and its large-m limit ``E[e^{tau^2}]/m``.
    The leading level (the paper) is uniform attention, ``S_2 = 1/m``. Implied: the
    pooled variance of one weight, ``S_2/m - 1/m^2``.
    """
    mean = 1 / m_sym  # exchangeability of the keys: E[a_mn] = 1/m exactly
    if level == "leading":
        return StepResult(
            tap=tap,
            title="Uniform attention a_mn = 1/m (the paper)",
            level=Level.APPROXIMATE,
            quantities={"mean": mean, "sum_sq": 1 / m_sym},
            assumptions=("logits small: softmax replaced by the uniform average",),
            regime="tau_bar^2 -> 0",
            error="relative O(tau_bar^2) in sum_sq, growing to e^{tau_bar^2} - 1 at large m",
            symbol="a_{mn}",
            **_tolerance(approximate=True),
        )
    return row_step(
        ctx,
        tap,
        "Softmax weights: E[a_mn] = 1/m; S_2(m) = E[sum a^2] by quadrature over the exact row law",
        {"mean": mean, "sum_sq": S2(m_sym)},
        {"sum_sq series": mixed_series(ctx, "sum_sq"), "m*sum_sq, m -> oo": large_m_limit(ctx, "sum_sq")}
        if ctx.with_forms else {},
        "a_{mn}",
        implied={"var": S2(m_sym) / m_sym - 1 / m_sym**2},
    )


def value_average_variance(ctx: LayerOne, level: str) -> sp.Expr:
    """``Var(z_j)``: ``sigma_v^2 rho^2 (S_2(m) + Xi(m)/(d-1))`` (best), ``sigma_v^2 d/m`` (leading)."""
    if level == "leading":
        return ctx.sigma_v**2 * ctx.d / m_sym
    return ctx.sigma_v**2 * ctx.rho2 * (S2(m_sym) + Xi(m_sym) / ctx.sphere_dim)


def output_variance(ctx: LayerOne, z_var: sp.Expr) -> sp.Expr:
    """``Var(o_i) = sigma_o^2 d Var(z_j)``: ``o_i = sum_k W_o[i, k] z_k`` over the d coordinates of the heads."""
    return ctx.sigma_o**2 * ctx.d * z_var


def attention_output_variance(ctx: LayerOne, level: str) -> sp.Expr:
    """`output_variance` of the value average at ``level``."""
    return output_variance(ctx, value_average_variance(ctx, level))


def z(ctx: LayerOne, level: str, tap: str = "blocks.0.attn.hook_z") -> StepResult:
    r"""Value average ``z_m = sum_n a_mn v_n``: the shrinkage, and the weight-value coupling.

    .. math:: \operatorname{Var}[z_j] = \sigma_v^2 \rho^2 \Big(S_2(m) + \frac{\Xi(m)}{d-1}\Big)

    The first term is the paper's shrinkage (``S_2 -> e^{tau^2}/m``); the second, from the
    dependence of a weight on the key it multiplies, does not shrink (``Xi -> tau_bar^2``),
    so the variance floors at ``sigma_v^2 rho^2 tau_bar^2/(d-1)`` beyond ``m ~ (d-1)/tau_bar^2``.
    Exact at eps = 0 (quadrature); with eps > 0 the radii inside the softmax are replaced by
    their r.m.s. (error ``O(tau_bar^2 delta^2)``). Leading (Chi et al. 2023, Eq. 6):
    ``sigma_v^2 d/m``.
    """
    if level == "leading":
        return leading_row_step(ctx, tap, "z = (1/m) sum_n v_n: variance sigma_v^2 d / m (the paper)",
                                value_average_variance(ctx, "leading"), "z")
    return row_step(
        ctx,
        tap,
        "z = sum_n a_mn v_n: Var = sigma_v^2 rho^2 (S_2(m) + Xi(m)/(d-1)); the second term is the weight-value coupling",
        {"mean": sp.Integer(0), "var": value_average_variance(ctx, "best")},
        variance_forms(ctx, lambda zv: zv),
        "z",
    )


def attn_out(ctx: LayerOne, level: str, tap: str = "blocks.0.hook_attn_out") -> StepResult:
    r"""Output projection ``o = W_o z``: exact given ``Var(z)``.

    .. math:: \operatorname{Var}[o_i] = \sigma_o^2\, d\, \operatorname{Var}[z_j]
    """
    if level == "leading":
        return leading_row_step(ctx, tap, "W_o z: variance sigma_o^2 d Var(z) (uniform attention)",
                                attention_output_variance(ctx, "leading"), "o")
    return row_step(
        ctx,
        tap,
        "Output projection W_o z: variance sigma_o^2 d Var(z_j), exact given Var(z)",
        {"mean": sp.Integer(0), "var": attention_output_variance(ctx, "best")},
        variance_forms(ctx, lambda zv: output_variance(ctx, zv)),
        "o",
    )


# ============================================================================ helpers
def variance_forms(ctx: LayerOne, wrap) -> dict[str, sp.Expr]:
    """Series and large-m forms of a variance that depends on Var(z)."""
    if not ctx.with_forms:
        return {}
    series = ctx.sigma_v**2 * ctx.rho2 * (mixed_series(ctx, "sum_sq") + mixed_series(ctx, "coupling") / ctx.sphere_dim)
    large = ctx.sigma_v**2 * ctx.rho2 * (large_m_limit(ctx, "sum_sq") / m_sym + large_m_limit(ctx, "coupling") / ctx.sphere_dim)
    return {"var series": wrap(series), "var, m -> oo": wrap(large)}


def _tolerance(approximate: bool) -> dict:
    """Exact: 0; approximate without a derived order: the declared default."""
    if approximate:
        return {"tolerance": DEFAULT_TOLERANCE, "tolerance_source": "default (no derived constant)"}
    return {"tolerance": 0.0, "tolerance_source": "exact"}


def _best_assumptions(ctx: LayerOne) -> tuple[str, ...]:
    base = (
        "annealed measure: fresh weights and inputs",
        "given the query side, key directions i.i.d. uniform on the sphere (exact)",
    )
    if sp.sympify(ctx.eps) != 0:
        base += (("LayerNorm radii |e_n| averaged jointly with the directions inside the softmax; "
                  "the key n = m's radius taken independent of the query's (eps > 0)",) if ctx.radius_jointly else
                 ("LayerNorm radii |e_n| replaced by their r.m.s. inside the softmax (eps > 0)",))
    return base


def _best_level(ctx: LayerOne) -> tuple[Level, str, dict]:
    """Level, stated error and declared tolerance of the best-level softmax steps."""
    if sp.sympify(ctx.eps) == 0:
        return Level.EXACT, "quadrature, relative error < 1e-6", _tolerance(approximate=False)
    # Neglected: fluctuation of |e_n|^2 about its mean, relative spread delta (entering at
    # second order, multiplied by the logit variance).
    spread = ctx.radius_spread
    error = f"relative O(tau_bar^2 delta^2), delta = {sp.sstr(sp.N(spread, 3) if ctx.numeric else spread)}"
    if not ctx.numeric:
        return Level.APPROXIMATE, error, {}
    order = ctx.f(ctx.tau2_bar) * ctx.f(spread) ** 2
    if ctx.radius_jointly:
        # radii averaged jointly (theory._row_law.layer_one_rows): left, the key n = m sharing the
        # query's radius, O(tau_bar^2 delta^2 / m), largest at m = 2; and the compressed mixture rule (3e-4)
        error = (f"relative O(tau_bar^2 delta^2 / m) (the key n = m shares the query's radius), "
                 f"delta = {sp.sstr(sp.N(spread, 3))}")
        return Level.APPROXIMATE, error, {"tolerance": from_order(order / 2 + 3e-4),
                                          "tolerance_source": f"tau_bar^2 delta^2 / 2 + 3e-4 = {order / 2 + 3e-4:.3g} (floor 1e-4)"}
    return Level.APPROXIMATE, error, {"tolerance": from_order(order),
                                      "tolerance_source": f"tau_bar^2 delta^2 = {order:.3g} (floor 1e-4)"}


def row_step(ctx, tap, title, quantities, forms, symbol, implied=None) -> StepResult:
    """A best-level step whose formulas contain ``S_2(m)`` and ``Xi(m)`` (evaluated by quadrature)."""
    level, error, tolerance = _best_level(ctx)
    return StepResult(
        tap=tap,
        title=title,
        level=level,
        quantities=quantities,
        implied=implied or {},
        forms=forms,
        definitions=dict(PLACEHOLDERS, **{
            "tau_bar^2": f"mean logit variance = {sp.sstr(sp.N(ctx.tau2_bar, 6) if ctx.numeric else ctx.tau2_bar)}",
            "series": f"small tau_bar^2, error O(tau_bar^{2 * SERIES_ORDER + 2})",
            "m -> oo": "law of large numbers, relative error O(1/m)",
        }),
        assumptions=_best_assumptions(ctx),
        regime="all m; series for tau_bar^2 << 1; limit for m >> 1",
        error=error,
        symbol=symbol,
        row=ctx.row if ctx.numeric else None,
        **tolerance,
    )


def leading_row_step(ctx, tap, title, var, symbol) -> StepResult:
    """A leading-level step of the attention path: uniform attention, LayerNorm output N(0, 1)."""
    return StepResult(
        tap=tap,
        title=title,
        level=Level.APPROXIMATE,
        quantities={"mean": sp.Integer(0), "var": var},  # kept as sigma_e^2 + .../m: reads like the paper
        assumptions=("LayerNorm output N(0, 1)", "uniform attention a_mn = 1/m", "weights independent of values"),
        regime="tau_bar^2 -> 0, m << (d-1)/tau_bar^2, eps << sigma_e^2",
        error="relative (e^{tau_bar^2} - 1) + m tau_bar^2/(d-1) - (1 - nu_1) at leading order",
        symbol=symbol,
        **_tolerance(approximate=True),
    )


# ---------------------------------------------------------------- text of the derivation document
# Each step's heading, the coordinate its quantities describe (the LaTeX subject) and its
# derivation in words and numbered equations, keyed by tap suffix. Templates: ``<<key>>`` for
# every symbol (`theory._latex.notation.Notation`), ``@label(name)``/``@ref(tap:name)`` for
# equations, ``@scale`` for the logit scale, ``@series_sum_sq`` for the softmax series
# (``Derivation.constants["S_2 | tau^2"]``); no spec-dependent number.
TEXT: dict[str, StepText] = {
    "attn.hook_q": StepText(
        heading="Query projection",
        subject="<<q>>_{<<m>>,j}",
        derivation=r"""Given $<<e>>_{<<m>>}$, one coordinate of the query is a sum of independent Gaussians,
\begin{align}
<<q>>_{<<m>>,j} = \sum_{i} (<<W>>_{q})_{ji}\, <<e>>_{<<m>>,i} \;\Big|\; <<e>>_{<<m>>} \sim \mathcal{N}\bigl(0, <<sigma_q>>^{2}\lVert <<e>>_{<<m>>}\rVert^{2}\bigr), \label{@label(conditional)}
\end{align}
a Gaussian scale mixture over $\lVert <<e>>\rVert$ (Gaussian when $<<ln_eps>> = 0$):
$<<Var>>[<<q>>_{<<m>>,j}] = <<sigma_q>>^{2}\, <<E>>\lVert <<e>>\rVert^{2}$ and excess kurtosis
$3\,<<E>>\lVert <<e>>\rVert^{4}/(<<E>>\lVert <<e>>\rVert^{2})^{2} - 3 = 3<<nu_2>>/<<nu_1>>^{2} - 3$.""",
    ),
    "attn.hook_k": StepText(
        heading="Key projection",
        subject="<<k>>_{<<n>>,j}",
        derivation=r"""As for the query (equation~\eqref{@ref(attn.hook_q:conditional)}), with $<<W>>_{k}$ and $<<sigma_k>>$.""",
    ),
    "attn.hook_v": StepText(
        heading="Value projection",
        subject="<<v>>_{<<n>>,j}",
        derivation=r"""As for the query (equation~\eqref{@ref(attn.hook_q:conditional)}), with $<<W>>_{v}$ and $<<sigma_v>>$.""",
    ),
    "attn.hook_attn_scores": StepText(
        heading="Query--key product (attention logits)",
        subject="<<l>>_{<<m>><<n>>}",
        derivation=r"""The logit of query $<<m>>$ and key $<<n>> \le <<m>>$ is a scaled sum of $<<d_head>>$ products,
\begin{align}
<<l>>_{<<m>><<n>>} = <<s>> \sum_{j=1}^{<<d_head>>} <<q>>_{<<m>>,j}\, <<k>>_{<<n>>,j}, \quad <<s>> = @scale. \label{@label(product)}
\end{align}
Given the two radii the terms are i.i.d.\ products of independent Gaussians, so $<<l>>_{<<m>><<n>>}$ is
variance-gamma (a modified Bessel $K$ density) with excess kurtosis $6/<<d_head>>$ when $<<ln_eps>>=0$.
For $<<n>> \ne <<m>>$ the radii are independent, for $<<n>> = <<m>>$ the same radius appears twice:
\begin{align}
<<Var>>[<<l>>_{<<m>><<n>>}] &= <<s>>^{2}<<sigma_q>>^{2}<<sigma_k>>^{2}<<d_head>> \times
\begin{cases} (<<E>>\lVert <<e>>\rVert^{2})^{2} = <<d_model>>^{2}<<nu_1>>^{2}, & <<n>> \ne <<m>>,\\
<<E>>\lVert <<e>>\rVert^{4} = <<d_model>>^{2}<<nu_2>>, & <<n>> = <<m>>, \end{cases} \label{@label(radii)}
\end{align}
and pooled over the $<<m>>$ keys $<<n>> \le <<m>>$ the variance is
$<<s>>^{2}<<sigma_q>>^{2}<<sigma_k>>^{2}<<d_head>><<d_model>>^{2}\bigl((<<m>>-1)<<nu_1>>^{2} + <<nu_2>>\bigr)/<<m>>$.""",
    ),
    "attn.hook_pattern": StepText(
        heading="Softmax (attention weights)",
        subject="<<a>>_{<<m>><<n>>}",
        derivation=r"""The weights $<<a>>_{<<m>><<n>>} = e^{<<l>>_{<<m>><<n>>}}/\sum_{<<n>>'\le <<m>>} e^{<<l>>_{<<m>><<n>>'}}$ of one row are exchangeable, so
$<<E>>[<<a>>_{<<m>><<n>>}] = 1/<<m>>$ exactly. Their spread is measured by
\begin{align}
<<S_2>>(<<m>>) = <<E>>\Bigl[\sum_{<<n>>\le <<m>>} <<a>>_{<<m>><<n>>}^{2}\Bigr], \quad <<S_2>>(1) = 1. \label{@label(s2)}
\end{align}
The query-side vector $u = <<s>> <<W>>_{k}^{\top} <<q>>_{<<m>>}$ is independent of every key direction
(when $<<ln_eps>>=0$, $<<q>>_{<<m>>}$ depends on $<<e>>_{<<m>>}$ only through $\lVert <<e>>_{<<m>>}\rVert$), so given $u$ the logits of
row $<<m>>$ are i.i.d.:
\begin{align}
<<l>>_{<<m>><<n>>} &= \sqrt{<<D>> <<tau>>^{2}}\, c_{<<n>>}, \quad <<D>> = <<d_model>> - 1, \nonumber\\
<<tau>>^{2} &= <<tau_bar>>^{2}\, \frac{\chi^{2}_{<<d_head>>}}{<<d_head>>}\,\frac{\chi^{2}_{<<D>>}}{<<D>>}, \label{@label(row)}
\end{align}
with $c_{<<n>>}$ one coordinate of a uniform unit vector in $\mathbb{R}^{<<D>>}$. Expanding
$\sum_{<<n>>} <<a>>_{<<m>><<n>>}^{2}$ in the logits and taking the moments of the i.i.d.\ sums by set
partitions gives, given $<<tau>>^{2}$,
\begin{align}
@series_sum_sq \label{@label(series)}
\end{align}
and the law of large numbers gives $<<m>> <<S_2>>(<<m>>) \to <<E>>[e^{<<tau>>^{2}}]$, which averaged over
$\chi^{2}_{<<d_head>>}$ is $\bigl(1 - 2<<tau_bar>>^{2}/<<d_head>>\bigr)^{-<<d_head>>/2}$. For numeric specifications
$<<S_2>>(<<m>>)$ is computed by quadrature from $1/S^{2} = \int_{0}^{\infty} t\, e^{-tS}\,dt$:
\begin{align}
<<S_2>>(<<m>>) &= <<m>> \int_{0}^{\infty} t\, \psi(t)\, \phi(t)^{<<m>>-1}\, dt, \nonumber\\
\phi(t) &= <<E>>\bigl[e^{-t e^{<<l>>}}\bigr], \quad \psi(t) = <<E>>\bigl[e^{2<<l>>} e^{-t e^{<<l>>}}\bigr], \label{@label(quadrature)}
\end{align}
with a relative error below $10^{-8}$.""",
    ),
    "attn.hook_z": StepText(
        heading="Value aggregation",
        subject="<<z>>_{<<m>>,j}",
        derivation=r"""With $<<v>>_{<<n>>} = <<W>>_{v} <<e>>_{<<n>>}$ and $<<W>>_{v}$ averaged first,
\begin{align}
<<Var>>[<<z>>_{<<m>>,j}] &= <<sigma_v>>^{2}\, <<E>>\Bigl[\sum_{<<n>>} <<a>>_{<<m>><<n>>}^{2} \lVert <<e>>_{<<n>>}\rVert^{2} \nonumber\\
&\quad + \sum_{<<n>> \ne <<n>>'} <<a>>_{<<m>><<n>>} <<a>>_{<<m>><<n>>'} \langle <<e>>_{<<n>>}, <<e>>_{<<n>>'}\rangle\Bigr]. \label{@label(split)}
\end{align}
Treating the weights as independent of the values keeps only the first term,
$<<sigma_v>>^{2}<<rho>>^{2}<<S_2>>(<<m>>)$; uniform attention then gives the paper's $<<sigma_v>>^{2}<<d_model>>/<<m>>$.
But a weight and the key it multiplies share the direction $<<e>>_{<<n>>}$. Writing
$<<e>>_{<<n>>} = <<rho>>\bigl(c_{<<n>>}\hat u + \sqrt{1-c_{<<n>>}^{2}}\, w_{<<n>>}\bigr)$ with $w_{<<n>>}$ uniform and independent of
the logits, $\langle <<e>>_{<<n>>}, <<e>>_{<<n>>'}\rangle$ averages to $<<rho>>^{2} c_{<<n>>} c_{<<n>>'}$ given the weights, and
$c_{<<n>>} = <<l>>_{<<m>><<n>>}/\sqrt{<<D>><<tau>>^{2}}$ (equation~\eqref{@ref(attn.hook_pattern:row)}):
\begin{align}
<<Var>>[<<z>>_{<<m>>,j}] &= <<sigma_v>>^{2}<<rho>>^{2}\Bigl(<<S_2>>(<<m>>) + \frac{<<Xi>>(<<m>>)}{<<d_model>>-1}\Bigr), \label{@label(coupling)}\\
<<Xi>>(<<m>>) &= <<E>>\Bigl[\sum_{<<n>> \ne <<n>>'} <<a>>_{<<m>><<n>>} <<a>>_{<<m>><<n>>'} \nonumber\\
&\qquad \times \frac{<<l>>_{<<m>><<n>>} <<l>>_{<<m>><<n>>'}}{<<tau>>^{2}}\Bigr]. \label{@label(xi)}
\end{align}
$<<Xi>>(1) = 0$ and $<<Xi>>(<<m>>) \to <<tau_bar>>^{2}$ as $<<m>>\to\infty$: the weighted average leans towards each
query's direction $\hat u$, and this part of the variance does not shrink with $<<m>>$. The
shrinkage flattens into the floor $<<sigma_v>>^{2}<<rho>>^{2}<<tau_bar>>^{2}/(<<d_model>>-1)$ once $<<m>>$ exceeds about
$(<<d_model>>-1)/<<tau_bar>>^{2}$.""",
    ),
    "hook_attn_out": StepText(
        heading="Output projection",
        subject="<<o>>_{<<m>>,i}",
        derivation=r"""The heads are concatenated and $<<o>>_{<<m>>} = <<W>>_{o} <<z>>_{<<m>>}$ with $<<W>>_{o}$ independent and of mean zero:
\begin{align}
<<Var>>[<<o>>_{<<m>>,i}] = <<sigma_o>>^{2}\, <<d_model>>\, <<Var>>[<<z>>_{<<m>>,j}]. \label{@label(projection)}
\end{align}""",
    ),
}

__all__ = ["projection", "scores", "pattern", "z", "attn_out", "value_average_variance", "output_variance", "attention_output_variance",
           "mixed_series", "large_m_limit", "row_step", "leading_row_step", "variance_forms"]
