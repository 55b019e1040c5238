"""The context of the first-layer steps: the spec's fields as sympy objects and the derived constants.

Model (pre-LN block, layer 0, annealed measure): inputs ``x_m ~ N(0, sigma_e^2 I_d)``
i.i.d. over positions; ``e = LN(x)``; per head ``q = W_q e``, ``k = W_k e``,
``v = W_v e`` (entries of ``W_*`` i.i.d. ``N(0, sigma_*^2)``); logits
``l_mn = s q_m . k_n`` (`theory.quantities.logit_scale`); ``a_mn = softmax_{n<=m}(l_mn)``;
``z_m = sum_n a_mn v_n``; ``o = W_o z``; ``x + o``.

Two levels per step: ``leading`` (the paper, Chi et al. 2023: LayerNorm output N(0, 1)
per coordinate, uniform attention ``a_mn = 1/m``) and ``best`` (ours: LayerNorm eps
through ``nu_1 = E|e|^2/d`` and ``nu_2 = E|e|^4/d^2``; the non-uniform softmax through
``S_2(m) = E[sum_n a_mn^2]``; the weight-value coupling ``Xi(m)``).

``S_2`` and ``Xi`` are sympy functions in the formulas; for numbers they are implemented
by the row quadrature (`theory._quadrature.row_expectations`) and the formulas are
lambdified (`LayerOne.numbers`): every number comes from the expression that is printed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import sympy as sp

from .. import _layernorm
from .._domain import check_structure
from .._quadrature import row_expectations
from .._row_law import RADIUS_ORDER_MIN, layer_one_rows
from .._softmax import row_series
from ..quantities import logit_scale, radius_spread
from ..spec import ModelSpec

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
    """The spec's fields as sympy objects, and the derived constants of the first layer."""

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
        scale = logit_scale(d_head, spec.attn_scale)
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
        return self.scale**2 * self.sigma_q**2 * self.sigma_k**2 * self.d_head * self.rho2**2  # quantities.mean_logit_variance, in the order sympy prints

    @property
    def radius_spread(self) -> sp.Expr:
        """``delta = c/(d-1+c) sqrt(2/(d-1))``, ``c = d eps/sigma_e^2``: the relative spread of
        ``|e|^2`` inside the softmax (0 at eps = 0). Written without dividing by sigma_e^2
        (``sigma_embed = 0`` with eps > 0 is legal: then c/(d-1+c) = 1)."""
        return radius_spread(self.d, self.eps, self.sigma_e)

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
            # the small-tau series of S_2 given the logit variance (printed by the pattern's derivation)
            "S_2 | tau^2": row_series("sum_sq", SERIES_ORDER),
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
        c = self.f(self.d * self.eps / self.sigma_e**2) if self.f(self.eps) > 0 and self.f(self.sigma_e) > 0 else 0.0
        return _cached_row(
            tuple(int(p) for p in positions),
            self.f(self.tau2_bar),
            self.f(self.d_head),
            self.f(self.sphere_dim),
            c if self.radius_jointly else 0.0,
        )

    @property
    def radius_jointly(self) -> bool:
        """Numeric, eps > 0 and ``tau_bar^2 delta^2`` above `theory._row_law.RADIUS_ORDER_MIN`: the
        LayerNorm radii are averaged jointly with the directions inside the softmax
        (`theory._row_law.layer_one_rows`); below, replaced by their r.m.s. (error below the 1e-4 floor)."""
        if not self.numeric or sp.sympify(self.eps) == 0 or self.f(self.sigma_e) == 0:
            return False
        return self.f(self.tau2_bar) * self.f(self.radius_spread) ** 2 > RADIUS_ORDER_MIN


@dataclass(frozen=True)
class _Row:
    positions: np.ndarray
    sum_sq: np.ndarray
    coupling: np.ndarray


@lru_cache(maxsize=256)
def _cached_row(positions: tuple[int, ...], tau2: float, d_head: float, dim: float, c: float = 0.0):
    if c > 0:
        return _Row(*layer_one_rows(np.array(positions), tau2, d_head, int(round(dim)) + 1, c)[:3])
    return row_expectations(np.array(positions), tau2, d_head, dim)


def tidy(expr: sp.Expr) -> sp.Expr:
    """Simplify rational expressions; leave special functions alone (simplify can hang)."""
    expr = sp.sympify(expr)
    if expr.has(sp.uppergamma, sp.Derivative, sp.Integral):
        return expr
    return sp.factor(sp.cancel(expr)) if expr.free_symbols else expr

