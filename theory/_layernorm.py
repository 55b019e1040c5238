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
    """``(nu_1, nu_2)`` by adaptive quadrature of the same Laplace integrals.

    The closed form's incomplete gamma of large negative order cancels catastrophically in
    double precision; the integrals ``int e^{-ct}(1+2t)^{-k/2} t^p dt`` do not.
    """
    if ln_eps == 0:
        return 1.0, 1.0
    if sigma_embed == 0:
        return 0.0, 0.0  # x = 0: LayerNorm returns 0
    k = d_model - 1.0
    c = d_model * ln_eps / sigma_embed**2

    def laplace(power: int) -> float:
        f = lambda t: t**power * math.exp(-c * t - 0.5 * k * math.log1p(2 * t))
        knee = 50.0 / (c + k)  # the integrand has decayed by ~e^-50 past this point
        head = integrate.quad(f, 0, knee, epsabs=0, epsrel=1e-12, limit=200)[0]
        tail = integrate.quad(f, knee, np.inf, epsabs=0, epsrel=1e-12, limit=200)[0]
        return head + tail

    inverse, inverse_sq = laplace(0), laplace(1)
    nu1 = 1.0 - c * inverse
    nu2 = 1.0 - 2.0 * c * inverse + c * c * inverse_sq
    return nu1, nu2
