"""Gaussian expectations of the MLP activations: means, second moments and kernels.

For pre-activations ``(u, v)`` jointly Gaussian with variances ``s_u^2, s_v^2`` and
covariance ``c`` (one hidden unit at two positions), the MLP needs

* ``mu(s) = E[phi(s Z)]``                         (the mean of ``hook_post``),
* ``E[phi(s Z)^2]``                               (its second moment), and
* ``F(s_u, s_v, c) = E[phi(u) phi(v)]``           (the kernel across positions).

Two independent routes, and the recursion uses the first:

1. **Mehler's expansion** (`mehler_kernel`): ``F = sum_k r^k b_k(s_u) b_k(s_v)`` with
   ``b_k(s) = E[phi(sZ) He_k(Z)]/sqrt(k!)`` and ``r`` the correlation. It is separable in
   the two positions (a T x T kernel costs one pass per term), works for any activation
   (the tanh GELU of GPT-2 included), and its truncation is bounded.
2. **Closed-form conditional means** (`conditional_mean`, `activation_kernel`): writing
   ``v = a + b Z'`` given ``u`` (``a = c u / s_u^2``, ``b^2 = s_v^2 - c^2/s_u^2``),
   ``F = E_u[phi(u) g(a, b)]`` with ``g(a, b) = E[phi(a + b Z)]``, which sympy derives:

   * ReLU: ``int_{-a/b}^inf (a + b z) phi_N(z) dz = a Phi(a/b) + b phi_N(a/b)``.
   * GELU (exact, ``x Phi(x)``): ``E[Phi(a + bZ)]`` is the integral over ``a`` of
     ``E[phi_N(a + bZ)]`` (a Gaussian integral sympy evaluates), and Stein's lemma
     ``E[Z f(Z)] = E[f'(Z)]`` gives ``a E[Phi(a+bZ)] + b^2 E[phi_N(a+bZ)]``, i.e.
     ``a Phi(a/r) + (b^2/r) phi_N(a/r)``, ``r = sqrt(1 + b^2)``.
   * The tanh GELU and SiLU (SwiGLU's gate, ``x sigmoid(x)``) have no closed form;
     tests hold route 1 against scipy's adaptive ``dblquad`` for them.

   Tests require the two routes to agree to 1e-10 for ReLU and GELU.

Every one-dimensional expectation is a Gauss–Legendre rule on ``[-L, 0]`` and ``[0, L]``
(``L`` = 10-12 standard deviations; the mass beyond is below 1e-22): each piece is
smooth, also for ReLU, whose kink sits at the split, so the rule converges
geometrically.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import sympy as sp
from scipy.special import erf, expit

from ._kernel_maps import correlation

ACTIVATION_NAMES = ("gelu", "gelu_tanh", "relu", "silu")

# Mehler's series stops once its remainder bound is below this fraction of the smallest
# second moment (at float64 rounding: the truncation changes no result the goldens hold to 1e-12).
TRUNCATION_TARGET = 1e-16

_a = sp.Symbol("a", real=True)
_b = sp.Symbol("b", positive=True)
_z = sp.Symbol("z", real=True)
_t = sp.Symbol("t", real=True)


def _normal_pdf(x: sp.Expr) -> sp.Expr:
    return sp.exp(-x**2 / 2) / sp.sqrt(2 * sp.pi)


@lru_cache(maxsize=None)
def conditional_mean(activation: str) -> sp.Expr:
    """``g(a, b) = E[phi(a + b Z)]``, Z ~ N(0, 1), derived by sympy (symbols ``a``, ``b > 0``).

    >>> g = conditional_mean("relu")
    >>> round(float(g.subs({s: 0 if s.name == "a" else 1 for s in g.free_symbols})), 6)  # E[relu(Z)] = 1/sqrt(2 pi)
    0.398942
    """
    if activation == "relu":
        # phi(a + bz) = a + bz on z > -a/b, else 0.
        expr = sp.integrate((_a + _b * _z) * _normal_pdf(_z), (_z, -_a / _b, sp.oo), conds="none")
        return sp.simplify(expr.rewrite(sp.erf))
    if activation in ("gelu_tanh", "silu"):
        raise ValueError(f"{activation} has no closed-form conditional mean; use mehler_kernel")
    if activation == "gelu":
        # E[phi_N(a + bZ)]: a Gaussian integral; E[Phi(a + bZ)] its integral over a from -oo.
        density = sp.integrate(_normal_pdf(_a + _b * _z) * _normal_pdf(_z), (_z, -sp.oo, sp.oo), conds="none")
        density = sp.simplify(density.rewrite(sp.erf))
        density = density.replace(sp.exp, lambda arg: sp.exp(sp.factor(arg)))  # one negative exponent
        cdf = sp.simplify(sp.integrate(density.subs(_a, _t), (_t, -sp.oo, _a), conds="none"))
        # Stein's lemma: E[b Z Phi(a + bZ)] = b^2 E[phi_N(a + bZ)].
        return _a * cdf + _b**2 * density
    raise ValueError(f"activation must be one of {', '.join(ACTIVATION_NAMES)}; got {activation!r}")


@lru_cache(maxsize=None)
def _conditional_mean_numeric(activation: str):
    return sp.lambdify((_a, _b), conditional_mean(activation), modules=["scipy", "numpy"])


def activation_function(activation: str):
    """The activation as a numpy function (the same definitions torch uses)."""
    if activation == "relu":
        return lambda x: np.maximum(x, 0.0)
    if activation == "gelu":
        return lambda x: x * 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    if activation == "gelu_tanh":
        k = math.sqrt(2.0 / math.pi)
        return lambda x: 0.5 * x * (1.0 + np.tanh(k * (x + 0.044715 * (x * x * x))))  # x*x*x: numpy's x**3 is pow(), ~50x slower
    if activation == "silu":  # SwiGLU's gate, x sigmoid(x) (expit is stable for large |x|)
        return lambda x: x * expit(x)
    raise ValueError(f"activation must be one of {', '.join(ACTIVATION_NAMES)}; got {activation!r}")


@lru_cache(maxsize=8)
def _half_rules(n: int, half_width: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (standard units) and probability weights for E over N(0,1), split at 0."""
    x, w = np.polynomial.legendre.leggauss(n)
    right = 0.5 * half_width * (x + 1.0)  # [0, L]
    nodes = np.concatenate([-right[::-1], right])
    weights = np.concatenate([w[::-1], w]) * 0.5 * half_width
    weights = weights * np.exp(-nodes**2 / 2) / math.sqrt(2 * math.pi)
    return nodes, weights


def activation_moments(activation: str, variance: np.ndarray, n: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """``(E[phi(u)], E[phi(u)^2])`` for ``u ~ N(0, variance)`` (arrays of the same shape)."""
    var = np.asarray(variance, dtype=float)
    if np.any(var < 0) or not np.all(np.isfinite(var)):
        raise ValueError("pre-activation variances must be finite and >= 0")
    phi = activation_function(activation)
    z, w = _half_rules(n, 10.0)
    s = np.sqrt(var)[..., None]
    values = phi(s * z)  # (..., 2n)
    return values @ w, (values * values) @ w


def activation_kernel(activation: str, cov: np.ndarray, n: int = 48, block: int = 64) -> np.ndarray:
    """``F[m, k] = E[phi(u_m) phi(u_k)]`` for a Gaussian vector ``u`` with covariance ``cov`` (T, T).

    The diagonal is ``E[phi(u_m)^2]``; off the diagonal the conditional-mean closed form
    (`conditional_mean`) under a split Gauss–Legendre rule over ``u_m``. ReLU and exact
    GELU only (the independent check of `mehler_kernel`, which the recursion uses).
    """
    cov = np.asarray(cov, dtype=float)
    T = cov.shape[0]
    var = np.diag(cov).copy()
    if np.any(var <= 0):
        raise ValueError("pre-activation variances must be > 0")
    phi = activation_function(activation)
    g = _conditional_mean_numeric(activation)
    z, w = _half_rules(n, 10.0)
    s = np.sqrt(var)
    out = np.empty((T, T))
    for r0 in range(0, T, block):
        r1 = min(T, r0 + block)
        rows = slice(r0, r1)
        # v = a + b Z' given u_m = s_m z: a = (c / s_m) z, b^2 = s_k^2 - c^2 / s_m^2
        ratio = cov[rows] / s[rows, None]  # (R, T)
        b = np.sqrt(np.maximum(var[None, :] - ratio**2, 1e-300))  # (R, T)
        a = ratio[..., None] * z  # (R, T, 2n)
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            inner = g(a, b[..., None])  # (R, T, 2n)
        out[rows] = np.einsum("rtn,rn->rt", inner, phi(s[rows, None] * z) * w)
    _, second = activation_moments(activation, var, n)
    np.fill_diagonal(out, second)
    return 0.5 * (out + out.T)


# ------------------------------------------------------------------ Hermite (Mehler) expansion
def hermite_coefficients(activation: str, std: np.ndarray, order: int, n: int = 160) -> np.ndarray:
    """``b_k(s) = E[phi(s Z) He_k(Z)] / sqrt(k!)`` for k = 0..order, per std (T, order+1).

    ``He_k`` are the probabilists' Hermite polynomials, evaluated through the stable
    recurrence of the normalised ``h_k = He_k/sqrt(k!)``:
    ``h_{k+1} = (z h_k - sqrt(k) h_{k-1}) / sqrt(k+1)``. Quadrature: the split
    Gauss–Legendre rule (smooth on each side of 0, also for ReLU).
    """
    phi = activation_function(activation)
    z, w = _half_rules(n, 12.0)
    H = np.empty((order + 1, z.size))
    H[0] = 1.0
    if order >= 1:
        H[1] = z
    for k in range(1, order):
        H[k + 1] = (z * H[k] - math.sqrt(k) * H[k - 1]) / math.sqrt(k + 1)
    values = phi(np.asarray(std, dtype=float)[:, None] * z)  # (T, N)
    return (values * w) @ H.T  # (T, order+1)


def mehler_kernel(activation: str, cov: np.ndarray, order: int = 120) -> tuple[np.ndarray, float]:
    """``F[m, n] = E[phi(u_m) phi(u_n)]`` by Mehler's expansion; returns (F, truncation bound).

    For ``(u, v)`` Gaussian with standard deviations ``s_m, s_n`` and correlation
    ``r``, Mehler's formula gives ``E[phi(u) phi(v)] = sum_k r^k b_k(s_m) b_k(s_n)``
    (`hermite_coefficients`) -- separable in the two positions, so a T x T kernel costs
    one elementwise pass per term, for any activation (the tanh GELU included). The
    diagonal is set to the directly integrated ``E[phi(u_m)^2]``.

    Truncation. The series is cut at ``order``; the mass beyond it, ``max_m (E[phi(u_m)^2] -
    sum_{j<=order} b_j(s_m)^2)``, times ``r_max^{order+1}`` bounds what that neglects
    (Cauchy–Schwarz on the tail). Below ``order`` it stops at the first k where the terms
    k+1..order it computed could add at most ``r_max^{k+1} max_m sum_{k<j<=order} b_j(s_m)^2 <
    TRUNCATION_TARGET min_m E[phi(u_m)^2]`` (float64 rounding of the smallest entry; the
    series converges geometrically, weakly correlated positions need a few terms), with
    ``r_max`` taken per block of rows. The bound returned adds both parts.

    Evaluation: Horner's rule ``F = b_0 b_0^T + r (b_1 b_1^T + r (...))`` on the upper
    triangle, 16 rows at a time (the block, its correlations and a buffer stay in cache),
    then mirrored (F is symmetric).
    """
    cov = np.asarray(cov, dtype=float)
    var = np.diag(cov).copy()
    if np.any(var < 0):
        raise ValueError("pre-activation variances must be >= 0")
    std = np.sqrt(var)
    # (a zero variance is the constant u = 0: b_k(0) = phi(0) [k = 0], and correlation 0 is exact)
    b = hermite_coefficients(activation, std, order)  # (T, K+1)
    _, second = activation_moments(activation, var)
    corr = correlation(cov)
    np.fill_diagonal(corr, 0.0)
    T = cov.shape[0]
    sq = b * b
    beyond = max(float(np.max(second - sq.sum(1), initial=0.0)), 0.0)  # mass past ``order``
    computed_tail = np.max(np.cumsum(sq[:, ::-1], axis=1)[:, ::-1], axis=0)  # (K+1,): sum_{j>=k}
    tail_after = np.append(computed_tail[1:], 0.0)  # sum_{k<j<=order} b_j^2, max over positions
    floor = TRUNCATION_TARGET * max(float(np.min(second)), 1e-300)
    powers = np.arange(1, order + 2)
    bT = np.ascontiguousarray(b.T)  # (K+1, T): each order's coefficients contiguous (a strided column halves the outer's speed)
    F = np.empty_like(cov)
    bound = 0.0
    block = _MEHLER_BLOCK
    for r0 in range(0, T, block):
        r1 = min(T, r0 + block)
        rho = corr[r0:r1, r0:]  # (B, T - r0)
        r_max = float(np.max(np.abs(rho))) if rho.size else 0.0
        small = np.nonzero(r_max ** powers * tail_after < floor)[0]
        last = int(small[0]) if small.size else order
        bound = max(bound, r_max ** (last + 1) * float(tail_after[last]) + r_max ** (order + 1) * beyond)
        acc = np.einsum("i,j->ij", bT[last, r0:r1], bT[last, r0:])  # the outer product b_k(m) b_k(n)
        term = np.empty_like(acc)
        for k in range(last - 1, -1, -1):
            acc *= rho
            np.einsum("i,j->ij", bT[k, r0:r1], bT[k, r0:], out=term)
            acc += term
        F[r0:r1, r0:] = acc
        F[r1:, r0:r1] = acc[:, r1 - r0:].T  # the mirror image below the diagonal
    np.fill_diagonal(F, second)
    return F, bound


# Rows per block of `mehler_kernel`'s Horner loop (16 x T float64 arrays: a few hundred kB at T = 1024).
_MEHLER_BLOCK = 16
