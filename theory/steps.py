"""The catalogue of layer-1 steps: one function per tap, two levels each.

Model (pre-LN block, layer 1, annealed measure): inputs ``x_m ~ N(0, sigma_e^2 I_d)``
i.i.d. over positions; ``e = LN(x)``; per head ``q = W_q e``, ``k = W_k e``,
``v = W_v e`` (entries of ``W_*`` i.i.d. ``N(0, sigma_*^2)``); logits
``l_mn = s q_m . k_n`` with ``s = d_head^{-1/2}`` (``"sqrt"``) or ``d_head^{-1}``
(``"linear"``); ``a_mn = softmax_{n<=m}(l_mn)``; ``z_m = sum_n a_mn v_n``;
``o = W_o z``; ``x + o``.

Two levels per tap:

* ``leading`` -- the paper's (Chi et al. 2023): the LayerNorm output is N(0, 1) per
  coordinate and attention is uniform, ``a_mn = 1/m``.
* ``best`` -- ours, exact where it can be: LayerNorm eps through ``nu_1 = E|e|^2/d``
  and ``nu_2 = E|e|^4/d^2`` (:mod:`theory._layernorm`); the non-uniform softmax through
  ``S_2(m) = E[sum_n a_mn^2]``; and the coupling between the weights and the values they
  average, ``Xi(m) = E[sum_{n != n'} a_mn a_mn' l_mn l_mn' / tau^2]``
  (:mod:`theory._softmax`, :mod:`theory._quadrature`).

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

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from . import _layernorm
from ._moments import MomentSequence, beta_moment, chi2_mgf, chi2_moment
from ._quadrature import row_expectations
from ._domain import check_structure
from ._result import Level, StepResult, finite_or_raise
from ._softmax import D_sym, m_sym, row_large_m, row_series, v_sym
from .spec import ModelSpec
from .taps import ATTENTION_TAPS

LEVELS = ("leading", "best")

S2 = sp.Function("S_2")  # E[sum_n a_mn^2]
Xi = sp.Function("Xi")  # E[sum_{n != n'} a a' l l' / tau^2]
NU1 = sp.Symbol("nu_1", positive=True)  # E|e|^2 / d, symbolic mode with eps != 0
NU2 = sp.Symbol("nu_2", positive=True)  # E|e|^4 / d^2
TAU_BAR2 = sp.Symbol("tau_bar2", positive=True)  # the mean logit variance, printed as tau_bar^2

SERIES_ORDER = 2  # small-logit-variance series to tau_bar^4; error O(tau_bar^6)

PLACEHOLDERS = {
    "S_2(m)": "E[sum_{n<=m} a_mn^2], computed by quadrature (numeric specs)",
    "Xi(m)": "E[sum_{n != n'} a_mn a_mn' l_mn l_mn' / tau^2], computed by quadrature",
}


@dataclass(frozen=True)
class LayerOne:
    """The spec's fields as sympy objects, and the derived constants of layer 1."""

    spec: ModelSpec
    d: sp.Expr
    d_head: sp.Expr
    sigma_e: sp.Expr
    sigma_q: sp.Expr
    sigma_k: sp.Expr
    sigma_v: sp.Expr
    sigma_o: sp.Expr
    eps: sp.Expr
    scale: sp.Expr  # s, the factor multiplying q.k
    nu1: sp.Expr  # E|e|^2 / d
    nu2: sp.Expr  # E|e|^4 / d^2
    with_forms: bool = True  # derive the series and large-m forms (predict skips them)

    @classmethod
    def from_spec(cls, spec: ModelSpec, with_forms: bool = True) -> "LayerOne":
        check_structure(spec, zero_input_ok=not with_forms)  # positional, vocab_size, d_model >= 3, sigma_embed
        d = sp.sympify(spec.d_model)
        d_head = d / spec.n_heads if spec.is_symbolic else sp.Integer(spec.d_head)
        scale = 1 / sp.sqrt(d_head) if spec.attn_scale == "sqrt" else 1 / d_head
        eps = sp.nsimplify(spec.ln_eps) if spec.ln_eps == 0 else sp.sympify(spec.ln_eps)
        if spec.is_symbolic:
            # Keep nu_1, nu_2 as symbols in every formula (their incomplete-gamma closed
            # forms are long); the ln1 step states the closed forms.
            closed = _layernorm.norm_moments(d, eps, sp.sympify(spec.sigma_embed))
            nu1, nu2 = (closed if closed == (1, 1) else (NU1, NU2))
        else:  # closed form and quadrature agree (tests); the quadrature is faster
            n1, n2 = _layernorm.norm_moments_numeric(int(spec.d_model), float(spec.ln_eps), float(spec.sigma_embed))
            nu1, nu2 = sp.Float(n1, 17), sp.Float(n2, 17)
        return cls(
            spec=spec,
            d=d,
            d_head=d_head,
            sigma_e=sp.sympify(spec.sigma_embed),
            sigma_q=sp.sympify(spec.sigma_q),
            sigma_k=sp.sympify(spec.sigma_k),
            sigma_v=sp.sympify(spec.sigma_v),
            sigma_o=sp.sympify(spec.sigma_o_effective),
            eps=eps,
            scale=scale,
            nu1=nu1,
            nu2=nu2,
            with_forms=with_forms,
        )

    # --- derived constants
    @property
    def numeric(self) -> bool:
        return not self.spec.is_symbolic

    @property
    def rho2(self) -> sp.Expr:
        """``E|e|^2 = d nu_1``."""
        return self.d * self.nu1

    @property
    def e4(self) -> sp.Expr:
        """``E|e|^4 = d^2 nu_2``."""
        return self.d**2 * self.nu2

    @property
    def sphere_dim(self) -> sp.Expr:
        """``D = d - 1``: LayerNorm outputs live in the subspace orthogonal to ones."""
        return self.d - 1

    @property
    def tau2_bar(self) -> sp.Expr:
        """Mean conditional logit variance ``s^2 sigma_q^2 sigma_k^2 d_head rho^4`` = Var(l_mn), n != m."""
        return self.scale**2 * self.sigma_q**2 * self.sigma_k**2 * self.d_head * self.rho2**2

    @property
    def radius_spread(self) -> sp.Expr:
        """``delta = c/(d-1+c) sqrt(2/(d-1))``, ``c = d eps/sigma_e^2``: the relative spread of
        ``|e|^2`` inside the softmax (0 at eps = 0). Written without dividing by sigma_e^2
        (``sigma_embed = 0`` with eps > 0 is legal: then c/(d-1+c) = 1)."""
        share = self.d * self.eps / ((self.d - 1) * self.sigma_e**2 + self.d * self.eps)
        return share * sp.sqrt(2 / (self.d - 1))

    def constants(self) -> dict[str, object]:
        """The derived constants, for `theory.derive.Derivation.constants` (renderers print them)."""
        out: dict[str, object] = {
            "d_head": self.d_head,
            "s": self.scale,
            "D": self.sphere_dim,
            "c": self.d * self.eps / self.sigma_e**2,
            "nu_1": self.nu1,
            "nu_2": self.nu2,
            "rho^2": self.rho2,
            "tau_bar^2": self.tau2_bar,
        }
        if sp.sympify(self.eps) != 0:
            out["delta"] = self.c_share_spread_printed
        if isinstance(self.spec.sigma_q, sp.Symbol):
            out["sigma_q(tau_bar^2)"] = tuple(
                r for r in sp.solve(sp.Eq(self.tau2_bar, TAU_BAR2), self.spec.sigma_q) if r.is_positive is not False)
        return out

    @property
    def c_share_spread_printed(self) -> sp.Expr:
        """``delta`` as the document prints it: ``c/(d - 1 + c) sqrt(2/(d - 1))``."""
        c = self.d * self.eps / self.sigma_e**2
        return c / (self.d - 1 + c) * sp.sqrt(2 / (self.d - 1))

    def f(self, expr: sp.Expr) -> float:
        return float(sp.N(expr, 17))

    def row(self, positions: np.ndarray):
        """Quadrature for ``S_2(m)`` and ``Xi(m)`` at these positions (numeric specs)."""
        return _cached_row(
            tuple(int(p) for p in positions),
            self.f(self.tau2_bar),
            self.f(self.d_head),
            self.f(self.sphere_dim),
        )


@lru_cache(maxsize=256)
def _cached_row(positions: tuple[int, ...], tau2: float, d_head: float, dim: float):
    return row_expectations(np.array(positions), tau2, d_head, dim)


def _tidy(expr: sp.Expr) -> sp.Expr:
    """Simplify rational expressions; leave special functions alone (simplify can hang)."""
    expr = sp.sympify(expr)
    if expr.has(sp.uppergamma, sp.Derivative, sp.Integral):
        return expr
    return sp.factor(sp.cancel(expr)) if expr.free_symbols else expr


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
        return _tidy(conditional.subs(v_sym, ctx.tau2_bar))
    if _tidy(conditional - sp.exp(v_sym)) != 0:
        raise AssertionError("the conditional large-m limit is expected to be exp(tau^2)")
    # E[exp(tau_bar^2 Y/d_head)], Y ~ chi^2_{d_head}: the chi-square MGF at t = tau_bar^2/d_head.
    return chi2_mgf(ctx.tau2_bar / ctx.d_head, ctx.d_head)


# ============================================================================ steps
def resid_pre(ctx: LayerOne, level: str) -> StepResult:
    var = ctx.sigma_e**2
    return StepResult(
        tap="blocks.0.hook_resid_pre",
        title="Embedding: x_m ~ N(0, sigma_e^2 I_d), i.i.d. over positions",
        level=Level.EXACT,
        quantities={"mean": sp.Integer(0), "var": var, "excess_kurtosis": sp.Integer(0)},
        assumptions=("continuous Gaussian token embeddings (vocab_size = null)",),
        regime="all m",
        symbol="x_m",
    )


def ln1(ctx: LayerOne, level: str) -> StepResult:
    tap = "blocks.0.ln1.hook_normalized"
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
            "var": _tidy(var),
            "excess_kurtosis": _tidy(fourth / var**2 - 3),
            "cov_coordinates": _tidy(cov_value),
        },
        forms=forms,
        definitions=definitions,
        assumptions=("gain 1, bias 0 (initialisation)", "biased variance in the normaliser (torch)"),
        regime="all d >= 2, all eps",
        symbol="e_i",
    )


def _projection(ctx: LayerOne, level: str, which: str) -> StepResult:
    sigma = {"q": ctx.sigma_q, "k": ctx.sigma_k, "v": ctx.sigma_v}[which]
    norm2 = ctx.d if level == "leading" else ctx.rho2
    # Given e, q_j = sum_i W_ji e_i ~ N(0, sigma^2 |e|^2): a Gaussian scale mixture.
    kurt = sp.Integer(0) if level == "leading" else _tidy(3 * ctx.e4 / ctx.rho2**2 - 3)
    return StepResult(
        tap=f"blocks.0.attn.hook_{which}",
        title=f"Projection {which} = W_{which} e: Gaussian given |e|, variance sigma_{which}^2 |e|^2",
        level=Level.APPROXIMATE if level == "leading" else Level.EXACT,
        quantities={"mean": sp.Integer(0), "var": sigma**2 * norm2, "excess_kurtosis": kurt},
        assumptions=("W entries i.i.d. N(0, sigma^2), independent of e",)
        + (("|e|^2 = d (LayerNorm eps neglected)",) if level == "leading" else ()),
        regime="all m",
        error="relative O(eps/sigma_e^2)" if level == "leading" else None,
        symbol=which,
    )


def scores(ctx: LayerOne, level: str) -> StepResult:
    s2q2k2 = ctx.scale**2 * ctx.sigma_q**2 * ctx.sigma_k**2
    product = MomentSequence.gaussian(1) * MomentSequence.gaussian(1)  # g_j h_j
    dot = product.iid_sum(ctx.d_head)  # sum over the head's coordinates
    if level == "leading":
        var = s2q2k2 * ctx.d_head * ctx.d**2
        kurt = dot.excess_kurtosis
        return StepResult(
            tap="blocks.0.attn.hook_attn_scores",
            title="Logit l_mn = s q_m.k_n with Gaussian q, k of variance sigma^2 d",
            level=Level.APPROXIMATE,
            quantities={"mean": sp.Integer(0), "var": _tidy(var), "excess_kurtosis": _tidy(kurt)},
            assumptions=("|e|^2 = d", "q, k independent Gaussians"),
            regime="all m",
            error="relative O(eps/sigma_e^2)",
            symbol="l_{mn}",
        )
    # n != m: radii of e_m, e_n independent; n = m: one radius appears squared twice.
    var_off = s2q2k2 * ctx.d_head * ctx.rho2**2
    var_diag = s2q2k2 * ctx.d_head * ctx.e4
    var = ((m_sym - 1) * var_off + var_diag) / m_sym
    radius_ratio = ctx.e4 / ctx.rho2**2
    kurt_off = _tidy((dot.moments[4] / dot.moments[2] ** 2) * radius_ratio**2 - 3)
    return StepResult(
        tap="blocks.0.attn.hook_attn_scores",
        title="Logit l_mn = s sum_j q_j k_j: variance-gamma given the radii, pooled over keys n <= m",
        level=Level.EXACT,
        quantities={"mean": sp.Integer(0), "var": _tidy(var), "excess_kurtosis": kurt_off},
        forms={"var (n != m)": _tidy(var_off)},
        definitions={"excess_kurtosis": "of one off-diagonal score (n != m); 6/d_head when eps = 0"},
        assumptions=("W_q, W_k independent", "given e_m, e_n the head coordinates are i.i.d. products"),
        regime="all m",
        symbol="l_{mn}",
    )


def pattern(ctx: LayerOne, level: str) -> StepResult:
    tap = "blocks.0.attn.hook_pattern"
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
        )
    return _row_step(
        ctx,
        tap,
        "Softmax weights: E[a_mn] = 1/m; S_2(m) = E[sum a^2] by quadrature over the exact row law",
        {"mean": mean, "sum_sq": S2(m_sym)},
        {"sum_sq series": mixed_series(ctx, "sum_sq"), "m*sum_sq, m -> oo": large_m_limit(ctx, "sum_sq")}
        if ctx.with_forms else {},
        lambda row, pos: {"mean": 1.0 / pos, "sum_sq": row.sum_sq, "var": row.sum_sq / pos - 1.0 / pos**2},
        "a_{mn}",
    )


def _z_var(ctx: LayerOne) -> sp.Expr:
    return ctx.sigma_v**2 * ctx.rho2 * (S2(m_sym) + Xi(m_sym) / ctx.sphere_dim)


def _z_var_leading(ctx: LayerOne) -> sp.Expr:
    return ctx.sigma_v**2 * ctx.d / m_sym


def _out_var(ctx: LayerOne, z_var: sp.Expr) -> sp.Expr:
    # o_i = sum_k W_o[i, k] z_k over all d coordinates of the concatenated heads.
    return ctx.sigma_o**2 * ctx.d * z_var


def z(ctx: LayerOne, level: str) -> StepResult:
    tap = "blocks.0.attn.hook_z"
    if level == "leading":
        return _leading_row_step(ctx, tap, "z = (1/m) sum_n v_n: variance sigma_v^2 d / m (the paper)", _z_var_leading(ctx), "z")
    return _row_step(
        ctx,
        tap,
        "z = sum_n a_mn v_n: Var = sigma_v^2 rho^2 (S_2(m) + Xi(m)/(d-1)); the second term is the weight-value coupling",
        {"mean": sp.Integer(0), "var": _z_var(ctx)},
        _var_forms(ctx, lambda zv: zv),
        lambda row, pos: {"mean": 0 * pos, "var": _z_numeric(ctx, row)},
        "z",
    )


def attn_out(ctx: LayerOne, level: str) -> StepResult:
    tap = "blocks.0.hook_attn_out"
    if level == "leading":
        return _leading_row_step(ctx, tap, "W_o z: variance sigma_o^2 d Var(z) (uniform attention)", _out_var(ctx, _z_var_leading(ctx)), "o")
    return _row_step(
        ctx,
        tap,
        "Output projection W_o z: variance sigma_o^2 d Var(z_j), exact given Var(z)",
        {"mean": sp.Integer(0), "var": _out_var(ctx, _z_var(ctx))},
        _var_forms(ctx, lambda zv: _out_var(ctx, zv)),
        lambda row, pos: {"mean": 0 * pos, "var": ctx.f(ctx.sigma_o**2 * ctx.d) * _z_numeric(ctx, row)},
        "o",
    )


def resid_mid(ctx: LayerOne, level: str) -> StepResult:
    tap = "blocks.0.hook_resid_mid"
    # E[x_i o_i] = 0 because W_o has mean zero and is independent of x.
    if level == "leading":
        return _leading_row_step(ctx, tap, "x + W_o z: variances add (W_o is independent, mean 0)", ctx.sigma_e**2 + _out_var(ctx, _z_var_leading(ctx)), "x'")
    return _row_step(
        ctx,
        tap,
        "Residual x + W_o z: variances add (x and W_o z are uncorrelated)",
        {"mean": sp.Integer(0), "var": ctx.sigma_e**2 + _out_var(ctx, _z_var(ctx))},
        _var_forms(ctx, lambda zv: ctx.sigma_e**2 + _out_var(ctx, zv)),
        lambda row, pos: {
            "mean": 0 * pos,
            "var": ctx.f(ctx.sigma_e**2) + ctx.f(ctx.sigma_o**2 * ctx.d) * _z_numeric(ctx, row),
        },
        "x'",
    )


# ============================================================================ helpers
def _z_numeric(ctx: LayerOne, row) -> np.ndarray:
    return ctx.f(ctx.sigma_v**2 * ctx.rho2) * (row.sum_sq + row.coupling / ctx.f(ctx.sphere_dim))


def _var_forms(ctx: LayerOne, wrap) -> dict[str, sp.Expr]:
    """Series and large-m forms of a variance that depends on Var(z)."""
    if not ctx.with_forms:
        return {}
    series = ctx.sigma_v**2 * ctx.rho2 * (mixed_series(ctx, "sum_sq") + mixed_series(ctx, "coupling") / ctx.sphere_dim)
    large = ctx.sigma_v**2 * ctx.rho2 * (large_m_limit(ctx, "sum_sq") / m_sym + large_m_limit(ctx, "coupling") / ctx.sphere_dim)
    return {"var series": wrap(series), "var, m -> oo": wrap(large)}


def _best_assumptions(ctx: LayerOne) -> tuple[str, ...]:
    base = (
        "annealed measure: fresh weights and inputs",
        "given the query side, key directions i.i.d. uniform on the sphere (exact)",
    )
    if sp.sympify(ctx.eps) != 0:
        base += ("LayerNorm radii |e_n| replaced by their r.m.s. inside the softmax (eps > 0)",)
    return base


def _best_level(ctx: LayerOne) -> tuple[Level, str]:
    if sp.sympify(ctx.eps) == 0:
        return Level.EXACT, "quadrature, relative error < 1e-6"
    # Neglected: fluctuation of |e_n|^2 about its mean, relative spread
    # (c/(d-1+c)) sqrt(2/(d-1)) with c = d eps/sigma_e^2, entering at second order.
    # c/(d-1+c) written without dividing by sigma_e^2 (sigma_embed = 0, eps > 0 is legal: 1)
    share = ctx.d * ctx.eps / ((ctx.d - 1) * ctx.sigma_e**2 + ctx.d * ctx.eps)
    spread = share * sp.sqrt(2 / (ctx.d - 1))
    return Level.APPROXIMATE, f"relative O(tau_bar^2 delta^2), delta = {sp.sstr(sp.N(spread, 3) if ctx.numeric else spread)}"


def _row_step(ctx, tap, title, quantities, forms, numeric, symbol) -> StepResult:
    level, error = _best_level(ctx)
    evaluator = None
    if ctx.numeric:
        def evaluator(pos: np.ndarray) -> dict[str, np.ndarray]:
            row = ctx.row(pos)
            return {k: finite_or_raise(f"{tap} {k}", np.asarray(v, dtype=float)) for k, v in numeric(row, pos.astype(float)).items()}
    return StepResult(
        tap=tap,
        title=title,
        level=level,
        quantities=quantities,
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
        evaluator=evaluator,
    )


def _leading_row_step(ctx, tap, title, var, symbol) -> StepResult:
    return StepResult(
        tap=tap,
        title=title,
        level=Level.APPROXIMATE,
        quantities={"mean": sp.Integer(0), "var": var},  # kept as sigma_e^2 + .../m: reads like the paper
        assumptions=("LayerNorm output N(0, 1)", "uniform attention a_mn = 1/m", "weights independent of values"),
        regime="tau_bar^2 -> 0, m << (d-1)/tau_bar^2, eps << sigma_e^2",
        error="relative (e^{tau_bar^2} - 1) + m tau_bar^2/(d-1) - (1 - nu_1) at leading order",
        symbol=symbol,
    )


STEPS = {
    "hook_resid_pre": resid_pre,
    "ln1.hook_normalized": ln1,
    "attn.hook_q": lambda ctx, level: _projection(ctx, level, "q"),
    "attn.hook_k": lambda ctx, level: _projection(ctx, level, "k"),
    "attn.hook_v": lambda ctx, level: _projection(ctx, level, "v"),
    "attn.hook_attn_scores": scores,
    "attn.hook_pattern": pattern,
    "attn.hook_z": z,
    "hook_attn_out": attn_out,
    "hook_resid_mid": resid_mid,
}
assert tuple(STEPS) == ATTENTION_TAPS, "every layer-1 tap has exactly one theory step"
