"""Moments of the LayerNorm output's squared norm, derived from the chi-square density.

For ``x ~ N(0, sigma_e^2 I_d)`` and ``e = (x - mean(x)) / sqrt(var_biased(x) + eps)``
(gain 1, bias 0), the centred vector ``P x`` has ``|P x|^2 = sigma_e^2 X`` with
``X ~ chi^2_k``, ``k = d - 1``, and

    |e|^2 = d X / (X + c),        c = d eps / sigma_e^2.

So ``E|e|^2 = d nu_1`` and ``E|e|^4 = d^2 nu_2`` with ``nu_p = E[(X/(X+c))^p]``. With
the Laplace identity ``1/(X+c) = int_0^inf e^{-t(X+c)} dt`` and the chi-square moment
generating function ``E[e^{-tX}] = (1+2t)^{-k/2}`` (both integrated by sympy),

    E[1/(X+c)]   = int_0^inf e^{-ct} (1+2t)^{-k/2} dt      (an upper incomplete gamma)
    E[1/(X+c)^2] = -d/dc E[1/(X+c)]
    nu_1 = 1 - c E[1/(X+c)],   nu_2 = 1 - 2c E[1/(X+c)] + c^2 E[1/(X+c)^2].

For small ``c`` the asymptotic series ``nu_1 = sum_j (-c)^j E[X^-j]`` uses the inverse
chi-square moments ``E[X^-j] = Gamma(k/2 - j) / (2^j Gamma(k/2))``. The direction of
``e`` is uniform on the unit sphere of the (d-1)-dimensional subspace orthogonal to the
all-ones vector and independent of ``|e|``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy as sp
from scipy import integrate

from ._moments import chi2_moment

_k = sp.Symbol("k", positive=True)
_c = sp.Symbol("c", positive=True)


@lru_cache(maxsize=None)
def _norm_moment_formulas() -> tuple[sp.Expr, sp.Expr]:
    """``nu_1(k, c)`` and ``nu_2(k, c)`` as closed forms, integrated once by sympy."""
    t = sp.Symbol("t", positive=True)
    x = sp.Symbol("x", positive=True)
    chi2_density = x ** (_k / 2 - 1) * sp.exp(-x / 2) / (2 ** (_k / 2) * sp.gamma(_k / 2))
    mgf = sp.simplify(sp.integrate(sp.exp(-t * x) * chi2_density, (x, 0, sp.oo), conds="none"))
    inverse = sp.integrate(sp.exp(-_c * t) * mgf, (t, 0, sp.oo), conds="none")
    inverse_sq = -sp.diff(inverse, _c)
    nu1 = 1 - _c * inverse
    nu2 = 1 - 2 * _c * inverse + _c**2 * inverse_sq
    return nu1, nu2


def norm_moments(d_model: sp.Expr, ln_eps: sp.Expr, sigma_embed: sp.Expr) -> tuple[sp.Expr, sp.Expr]:
    """``(nu_1, nu_2)`` as sympy expressions of the spec fields (1, 1 when eps = 0)."""
    if sp.sympify(ln_eps) == 0:
        return sp.Integer(1), sp.Integer(1)
    nu1, nu2 = _norm_moment_formulas()
    subs = {_k: sp.sympify(d_model) - 1, _c: sp.sympify(d_model) * ln_eps / sigma_embed**2}
    return nu1.subs(subs), nu2.subs(subs)


def norm_moments_series(d_model: sp.Expr, ln_eps: sp.Expr, sigma_embed: sp.Expr, order: int = 2) -> tuple[sp.Expr, sp.Expr]:
    """Small-eps asymptotic series of ``(nu_1, nu_2)`` to ``c^order``.

    ``X/(X+c) = sum_j (-c/X)^j`` and ``(X/(X+c))^2 = sum_j (j+1)(-c/X)^j``, averaged with
    the inverse chi-square moments; valid when ``c << k`` (eps << sigma_e^2).
    """
    k = sp.sympify(d_model) - 1
    c = sp.sympify(d_model) * ln_eps / sigma_embed**2
    nu1 = sum((-c) ** j * chi2_moment(k, -j) for j in range(order + 1))
    nu2 = sum((j + 1) * (-c) ** j * chi2_moment(k, -j) for j in range(order + 1))
    return nu1, nu2


def norm_moments_numeric(d_model: int, ln_eps: float, sigma_embed: float) -> tuple[float, float]:
    """``(nu_1, nu_2)`` by adaptive quadrature of Laplace integrals with positive integrands.

    ``X/(X+c) = X int_0^inf e^{-t(X+c)} dt`` and ``E[X e^{-tX}] = k (1+2t)^{-k/2-1}`` give

        nu_1 = int_0^inf e^{-ct} k (1+2t)^{-k/2-1} dt,
        nu_2 = int_0^inf t e^{-ct} k (k+2) (1+2t)^{-k/2-2} dt,

    the module's formulas integrated by parts. Every term is positive, so there is no
    cancellation at any ``c`` (the closed form's incomplete gamma, and ``1 - c E[1/(X+c)]``,
    lose every digit once ``c`` is large: ``sigma_embed = 1e-30`` with ``eps = 1e-5``).
    ``c`` is formed as ``(d eps / sigma_e) / sigma_e`` so that it stays finite where
    ``sigma_e^2`` alone would underflow; `theory.check_domain` refuses the rest.
    """
    if ln_eps == 0:
        return 1.0, 1.0
    if sigma_embed == 0:
        return 0.0, 0.0  # x = 0: LayerNorm returns 0
    k = d_model - 1.0
    c = d_model * ln_eps / sigma_embed / sigma_embed
    if not math.isfinite(c):
        raise ValueError(f"d_model * ln_eps / sigma_embed^2 = {c} is outside float64: sigma_embed is too small for ln_eps")

    def laplace(power: int, log_factor: float, exponent: float) -> float:
        def f(t: float) -> float:
            return math.exp(log_factor - c * t - exponent * math.log1p(2 * t)) * t**power
        knee = 50.0 / (c + k)  # the integrand has decayed by ~e^-50 past this point
        head = integrate.quad(f, 0, knee, epsabs=0, epsrel=1e-12, limit=200)[0]
        tail = integrate.quad(f, knee, np.inf, epsabs=0, epsrel=1e-12, limit=200)[0]
        return head + tail

    nu1 = laplace(0, math.log(k), k / 2 + 1)
    nu2 = laplace(1, math.log(k) + math.log(k + 2), k / 2 + 2)
    return nu1, nu2
