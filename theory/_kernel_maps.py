"""Maps of the position kernel through one block: LayerNorm, causal attention, MLP.

The state of the depth recursion (`theory.depth`) is the *position kernel* of the
residual stream, ``K[m, n] = E[x_m . x_n] / d`` (T x T, positions 1..T), under the
annealed measure. Every coordinate has mean zero (each write into the stream goes
through a zero-mean weight matrix), so ``K[m, m]`` is the variance of one coordinate and
``K[m, n]`` the covariance between positions. The maps below assume, as NNGP /
signal-propagation theory does, that given the kernel the channels of ``x`` are i.i.d.
Gaussian vectors over positions, ``x[:, i] ~ N(0, K)`` -- exact at the embedding,
approximate from the first residual write on (each coordinate is a sum over many
channels of the layer below).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.special import gammaln, hyp2f1

from ._quadrature import gamma_rule, gamma_rules


# ---------------------------------------------------------------- LayerNorm
def correlation(cov: np.ndarray) -> np.ndarray:
    """``cov[m, n] / sqrt(cov[m, m] cov[n, n])``, 0 where a variance is 0 (a constant is uncorrelated)."""
    s = np.sqrt(np.diag(cov))
    scale = np.outer(s, s)
    out = np.zeros(np.shape(cov))
    np.divide(cov, scale, out=out, where=scale > 0)  # the same quotients as cov / scale, in one pass
    return out


def layernorm_radius_moments(var: np.ndarray, d: int, eps: float, n: int = 48, dof: int | None = None,
                             *, radial: RadialLaw | None = None):
    """Per position ``(nu_1, nu_2, g) = (E[R], E[R^2], E[sqrt(R)])``, ``R = |e|^2/d``.

    With the ``D = d - 1`` centred channels Gaussian of variance ``var``,
    ``|P x|^2 = var X``, ``X ~ chi^2_D`` and ``R = X / (X + c)``, ``c = d eps / var``
    (LayerNorm divides by ``sqrt(|P x|^2/d + eps)``). Gauss rule for the chi-square law
    (Golub–Welsch); ``R = 1`` exactly when ``eps = 0``. RMSNorm removes no mean: ``dof = d``
    (``|x|^2 = var chi^2_d``), the same formula otherwise.

    ``radial`` (`RadialLaw`, the depth recursion's best level): the per-sample norm fluctuates
    more than ``chi^2_D``. ``X = D Y (1 - s + s W)``: ``Y`` Gamma of mean 1 and relative variance
    ``2/D + excess`` (the stream's Gram diagonal, `theory.depth_maps._gram`), ``W`` Gamma of mean 1
    and relative variance ``kappa`` on the share ``s`` of the variance that the attention rows
    of one network scale (one row may average many keys or copy one). Only the mean of the
    concave ``R`` moves, by ``(1/2) R''(X) Var X`` to leading order: this matters where
    ``c = d eps/var`` is not small (eps comparable to the stream's variance).
    """
    var = np.asarray(var, dtype=float)
    if eps == 0:
        one = np.ones_like(var)
        return one, one, one
    D = (d - 1) if dof is None else dof
    # A zero input (var = 0) has LayerNorm output 0 when eps > 0: c = inf, R = 0.
    with np.errstate(divide="ignore"):
        c = np.where(var > 0, d * eps / var, np.inf)[:, None]
    if radial is None:
        x, w = gamma_rule(n, D / 2.0)
        X = 2.0 * x  # chi^2_D nodes
        R = X / (X + c)  # (T, n)
        return R @ w, (R * R) @ w, np.sqrt(R) @ w
    return _radius_moments_mixed(c, D, n, radial)


@dataclass(frozen=True)
class RadialLaw:
    """The per-sample law of a norm's input radius beyond ``chi^2_D`` (`layernorm_radius_moments`).

    ``excess`` (T,): relative variance of ``|P x|^2`` beyond the closure's ``2/D``;
    ``share`` (T,) in [0, 1] and ``kappa`` (T,) >= 0: the part of the variance scaled by a
    per-network factor of mean 1 and relative variance ``kappa`` (the attention rows).
    """

    excess: np.ndarray
    share: np.ndarray
    kappa: np.ndarray


# Gauss nodes of the rows' factor W (Gamma law): its second moment is matched exactly from 2 nodes on,
# the rest of the law is a modelling choice (the next order, E[W^3], is not derived)
_W_NODES = 8


def _radius_moments_mixed(c: np.ndarray, D: int, n: int, radial: RadialLaw):
    """`layernorm_radius_moments` with a `RadialLaw`: the Gamma rules of ``Y`` and ``W`` per position."""
    T = c.shape[0]
    rel = np.maximum(2.0 / D + np.asarray(radial.excess, dtype=float), 1.0 / D)  # never below chi^2_{2D}'s spread
    shape = 1.0 / rel
    y, wy = gamma_rules(n, shape)
    Y = D * y / shape[:, None]  # (T, n), mean D
    share = np.clip(np.asarray(radial.share, dtype=float), 0.0, 1.0)
    kappa = np.asarray(radial.kappa, dtype=float)
    W, ww = np.ones((T, _W_NODES)), np.zeros((T, _W_NODES))
    ww[:, 0] = 1.0
    sel = np.nonzero((kappa > 1e-12) & (share > 0))[0]
    if sel.size:
        a = 1.0 / kappa[sel]
        x, w = gamma_rules(_W_NODES, a)
        W[sel], ww[sel] = x / a[:, None], w
    X = Y[:, :, None] * (1.0 - share[:, None, None] + share[:, None, None] * W[:, None, :])  # (T, n, J)
    R = X / (X + c[:, :, None])
    weight = wy[:, :, None] * ww[:, None, :]
    total = lambda f: (f * weight).sum(axis=(1, 2))  # noqa: E731
    return total(R), total(R * R), total(np.sqrt(R))


def gaussian_cosine_mean(r: np.ndarray, dim: int) -> np.ndarray:
    """``E[u.v / (|u| |v|)]`` for ``u, v`` in R^dim with i.i.d. coordinate pairs of correlation ``r``.

    ``r (2/dim) (Gamma((dim+1)/2) / Gamma(dim/2))^2 2F1(1/2, 1/2; dim/2 + 1; r^2)``:
    the radial factors integrate to the Gamma ratio and the angular average to the
    hypergeometric series (it is 1 at r = 1 and ``r (1 - (1 - r^2)/(2 dim) + ...)`` for
    large dim). Tests check it against Monte Carlo.
    """
    r = np.clip(np.asarray(r, dtype=float), -1.0, 1.0)
    ratio = math.exp(2.0 * (gammaln((dim + 1) / 2.0) - gammaln(dim / 2.0))) * 2.0 / dim
    z = r * r
    c = dim / 2.0 + 1.0
    edge = z >= 1.0  # |r| = 1 (a kernel's diagonal); the series elsewhere
    coefficients = _cosine_series(c, float(np.max(z, where=~edge, initial=0.0)))
    if coefficients is None:
        return r * ratio * hyp2f1(0.5, 0.5, c, z)
    out = np.asarray(r * ratio * _horner(coefficients, z))
    # At |r| = 1 Gauss's 2F1(a, b; c; 1) = Gamma(c) Gamma(c - 1) / Gamma(c - 1/2)^2 is 1/ratio: the
    # cosine of identical (opposite) vectors, +-1 exactly (scipy's hyp2f1 gives nan there for large c).
    out[edge] = r[edge]
    return out if out.ndim else out[()]


# The hypergeometric series of `gaussian_cosine_mean` is summed directly when this many terms
# bound its remainder below float64 rounding (wide LayerNorms: c = dim/2 + 1 large), else scipy's hyp2f1.
_SERIES_TERMS = 40
_SERIES_REMAINDER = 2.0**-56  # below half an ulp of the sum (>= 1)


def _cosine_series(c: float, z_max: float) -> np.ndarray | None:
    """Taylor coefficients ``a_n`` of ``2F1(1/2, 1/2; c; z) = sum_n a_n z^n`` up to the first N whose
    remainder on ``[0, z_max]`` is below ``_SERIES_REMAINDER``, or None past ``_SERIES_TERMS`` terms.

    ``a_0 = 1``, ``a_{n+1} = a_n (n + 1/2)^2 / ((c + n)(n + 1))``. For ``c >= 1/4`` every ratio
    ``a_{n+1} z / a_n`` is at most ``z``, so the remainder after N is at most
    ``a_{N+1} z_max^{N+1} / (1 - z_max)``: the truncated sum equals the function to float64
    rounding (tests compare with scipy's hyp2f1).
    """
    if c < 0.25 or z_max >= 1.0:
        return None
    a = [1.0]
    for n in range(_SERIES_TERMS):
        nxt = a[-1] * (n + 0.5) ** 2 / ((c + n) * (n + 1.0))
        if nxt * z_max ** (n + 1) / (1.0 - z_max) < _SERIES_REMAINDER:
            return np.array(a)
        a.append(nxt)
    return None


def _horner(coefficients: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``sum_n coefficients[n] x^n`` elementwise (Horner's rule, in place, highest power first)."""
    out = np.full(x.shape, coefficients[-1])
    for a in coefficients[-2::-1]:
        out *= x
        out += a
    return out


def layernorm_kernel(K: np.ndarray, d: int, eps: float, dof: int | None = None,
                     *, radial: RadialLaw | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``E[e_m . e_n]/d`` of the LayerNorm outputs, and ``nu_2`` per position.

    ``e_m . e_n / d = cos(Px_m, Px_n) sqrt(R_m R_n)``. The diagonal is ``nu_1`` (exact
    for Gaussian channels); off the diagonal the mean cosine of two Gaussian vectors in
    ``D = d - 1`` dimensions (`gaussian_cosine_mean`), with correlation ``r = K_mn /
    sqrt(K_mm K_nn)`` -- centring does not change it, the channels being i.i.d. -- times
    ``E[sqrt(R_m)] E[sqrt(R_n)]`` (radii treated as independent of the angle: exact at
    eps = 0, where R = 1). RMSNorm: ``dof = d`` (no centring), the sphere of all d dimensions.
    """
    dof = d - 1 if dof is None else dof
    var = np.diag(K).copy()
    nu1, nu2, g = layernorm_radius_moments(var, d, eps, dof=dof, radial=radial)
    E = _cosine_kernel(K, dof, g)
    np.fill_diagonal(E, nu1)
    return E, nu2


# Rows per block of `_cosine_kernel` (32 x T float64 work arrays, in cache).
_COSINE_BLOCK = 32


def _cosine_kernel(K: np.ndarray, dof: int, g: np.ndarray) -> np.ndarray:
    """``gaussian_cosine_mean(correlation(K), dof) * outer(g, g)``, a block of rows at a time.

    The same operations on each element as the T x T form (bit-identical, tested): a first pass
    makes the clipped correlations and their largest square below 1 (which fixes the series'
    length), a second sums the series by Horner's rule and scales each block while it is in cache.
    """
    T = K.shape[0]
    s = np.sqrt(np.diag(K))
    r = np.zeros((T, T))
    z_max = 0.0
    for r0 in range(0, T, _COSINE_BLOCK):
        blk = slice(r0, min(T, r0 + _COSINE_BLOCK))
        scale = np.outer(s[blk], s)
        np.divide(K[blk], scale, out=r[blk], where=scale > 0)  # `correlation`
        np.clip(r[blk], -1.0, 1.0, out=r[blk])
        z = r[blk] * r[blk]
        z_max = max(z_max, float(np.max(z, where=z < 1.0, initial=0.0)))
    c = dof / 2.0 + 1.0
    coefficients = _cosine_series(c, z_max)
    if coefficients is None:
        return gaussian_cosine_mean(r, dof) * np.outer(g, g)
    ratio = math.exp(2.0 * (gammaln((dof + 1) / 2.0) - gammaln(dof / 2.0))) * 2.0 / dof
    for r0 in range(0, T, _COSINE_BLOCK):
        blk = slice(r0, min(T, r0 + _COSINE_BLOCK))
        rb = r[blk]
        z = rb * rb
        out = rb * ratio * _horner(coefficients, z)
        edge = z >= 1.0
        out[edge] = rb[edge]  # |r| = 1: +-1 exactly (`gaussian_cosine_mean`)
        out *= np.outer(g[blk], g)
        r[blk] = out
    return r


# ---------------------------------------------------------------- attention
def uniform_average(E: np.ndarray) -> np.ndarray:
    """``U[m, n] = (1/(m n)) sum_{k <= m} sum_{k' <= n} E[k, k']``: the kernel of causal means."""
    T = E.shape[0]
    C = np.array(E, dtype=float)  # C = cumsum(cumsum(E, axis=0), axis=1), the same additions in the same order:
    for i in range(1, T):  # numpy's cumsum along axis 0 walks the columns with a stride, a row at a time is ~3x faster
        np.add(C[i], C[i - 1], out=C[i])
    np.cumsum(C, axis=1, out=C)
    return np.divide(C, _position_products(T), out=C)


@lru_cache(maxsize=4)
def _position_products(T: int) -> np.ndarray:
    """``outer(pos, pos)``, ``pos = 1..T`` (exact integers; cached read-only, the recursion divides by it per layer)."""
    pos = np.arange(1, T + 1, dtype=float)
    out = np.outer(pos, pos)
    out.flags.writeable = False
    return out


# Rows per block of `uniform_average_diagonal`.
_DIAGONAL_BLOCK = 64


def uniform_average_diagonal(E: np.ndarray) -> np.ndarray:
    """``diag(uniform_average(E))`` without the T x T result: the same additions in the same order
    (bit-identical, tested), the row sums along each row only up to the diagonal."""
    T = E.shape[0]
    E = np.asarray(E, dtype=float)
    diag = np.empty(T)
    buf = np.empty((_DIAGONAL_BLOCK, T))
    prev = None
    for r0 in range(0, T, _DIAGONAL_BLOCK):
        r1 = min(T, r0 + _DIAGONAL_BLOCK)
        for i in range(r0, r1):  # the column cumsum, a row at a time (as `uniform_average`)
            if prev is None:
                buf[0] = E[0]
            else:
                np.add(E[i], prev, out=buf[i - r0])
            prev = buf[i - r0]
        rows = np.cumsum(buf[:r1 - r0, :r1], axis=1)  # row m summed to column r1 > m only
        k = np.arange(r1 - r0)
        diag[r0:r1] = rows[k, r0 + k]
        if r1 < T:
            buf[0] = prev  # the carry into the next block (its first row adds to it)
            prev = buf[0]
    pos = np.arange(1, T + 1, dtype=float)
    return diag / (pos * pos)


def key_spread(E: np.ndarray, U: np.ndarray | None = None) -> np.ndarray:
    """Per query m: the variance of the keys ``k <= m`` about their centroid, per coordinate.

    ``v_m = (m/(m-1)) [ (1/m) sum_{k<=m} E[k,k] - U[m,m] ]`` (unbiased, so that for keys
    ``e_k = g + h_k`` with a shared part ``g`` and i.i.d. parts ``h_k`` it is
    ``E|h|^2/d`` for every m). The shared part shifts all logits of a row alike and
    leaves the softmax unchanged; only this spread makes attention non-uniform. ``v_1``
    is set to ``E[1,1]`` (one key: the weight is 1 whatever the logits). ``U``: `uniform_average` of
    ``E`` where the caller has it (only its diagonal is read; computed, `uniform_average_diagonal`, when None).
    """
    T = E.shape[0]
    pos = np.arange(1, T + 1, dtype=float)
    mean_diag = np.cumsum(np.diag(E)) / pos
    u_diag = uniform_average_diagonal(E) if U is None else np.diag(U)
    spread = np.empty(T)
    spread[0] = E[0, 0]
    m = pos[1:]
    spread[1:] = m / (m - 1) * (mean_diag[1:] - u_diag[1:])
    return np.maximum(spread, 0.0)
