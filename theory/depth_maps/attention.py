"""Depth map of causal softmax attention: ``K_attn = sigma_o^2 sigma_v^2 d^2 A(E)``.

Sublayer kind ``attention`` (`theory.block`); first-layer steps `theory.steps.attention`,
forward function ``simulate.engine.sublayers.attention``. Given the normalised kernel
``E`` (`theory.depth_maps.layernorm`)::

    A = U(E) + diag(v (S_2 - 1/m) + v Xi/(d-1))        E[ebar_m . ebar_n]/d, ebar_m = sum_k a_mk e_k

* ``U[m, n] = (1/(mn)) sum_{k<=m, k'<=n} E[k, k']`` is uniform causal attention (the
  paper's picture, now with correlated keys);
* ``v_m`` is the spread of the keys ``k <= m`` about their centroid (`key_spread`): a
  part shared by all keys shifts every logit of a row alike, so only ``v_m`` makes the
  softmax non-uniform. ``S_2(m)`` and the weight-value coupling ``Xi(m)`` are the
  first-layer row expectations (`theory._quadrature.row_expectations`, exact for i.i.d.
  keys) at the effective logit variance ``tau_m^2 = s^2 sigma_q^2 sigma_k^2 d_head d^2
  nu_1(m) v_m`` (`theory.quantities.mean_logit_variance` with ``rho^2 = d nu_1`` and
  ``d v_m``). At layer 0 (``E = nu_1 I``) this is the first-layer result exactly.

Leading level: uniform attention, ``A = U``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CubicSpline

from .._domain import check_logit_variance
from .._kernel_maps import key_spread, uniform_average
from .._quadrature import gamma_rules
from .._row_law import RADIUS_ORDER_MIN, chi2_mixture, layer_one_rows, row_law_many, sphere_key_law
from .._result import Level
from ..block import Sublayer
from ..quantities import logit_scale_squared, radius_spread
from ..tolerance import from_order
from . import _gram
from ._fluctuation import attention_spread_rel_var
from ._state import Layer, Stream
from .layernorm import opening_label

# Row quadrature is exact at every position up to this one and interpolated in log m
# (cubic spline of m S_2(m), Xi(m) and m^2 E[(sum a^2)^2], smooth in log m) on this many points beyond.
_EXACT_ROWS = 32
_LOG_ROWS = 48
# Effective logit variances within this relative range share one quadrature.
_TAU_RTOL = 1e-4
# Chebyshev nodes in tau^2 by the ratio max/min over the logit variances needed (measured:
# relative error of S_2 below 1e-7 with these counts up to a ratio of 8; tests); beyond, in log tau^2.
_TAU_NODES = ((2.0, 5), (4.0, 7), (8.0, 9))
_LOG_TAU_NODES = ((64.0, 11), (np.inf, 13))
# Gauss nodes of the Gamma law of the per-network spread factor W (`_fluctuation`).
_W_NODES = 6
# The row law's step in log t (its default 0.04 is for any law): the integrands here are smooth
# in log t, so the trapezoid rule converges geometrically and 0.16 changes the depth maps' rows by
# < 2e-13 relative (measured on 200 rows of GPT-2 small against 0.04) at a quarter of the cost.
_Y_STEP = 0.16


@dataclass(frozen=True)
class RowAverages:
    """Row expectations at m = 1..T averaged over the per-network spread factor ``W`` (mean 1)."""

    sum_sq: np.ndarray  # E_W[S_2(tau^2 W)]
    sum_sq2: np.ndarray  # E_W[E[(sum a^2)^2](tau^2 W)]
    sum_cube: np.ndarray  # E_W[E[sum a^3](tau^2 W)]
    diag: np.ndarray  # E_W[W (S_2(tau^2 W) - 1/m)]   (the softmax's share of the diagonal of A, per unit spread)
    coupling: np.ndarray  # E_W[W Xi(tau^2 W)]
    plain: tuple[np.ndarray, np.ndarray] | None = None  # (S_2, S_2 - 1/m + Xi/D) at W = 1, for the size of the correction


def _lagrange(x: np.ndarray, nodes: np.ndarray) -> np.ndarray:
    """Lagrange weights of points ``x`` (any shape) on ``nodes``: shape ``x.shape + (len(nodes),)``."""
    weights = np.ones(x.shape + (nodes.size,))
    for j in range(nodes.size):
        for i in range(nodes.size):
            if i != j:
                weights[..., j] *= (x - nodes[i]) / (nodes[j] - nodes[i])
    return weights


def row_averages(tau2: np.ndarray, d_head: int, sphere_dim: int, kappa: np.ndarray | None = None) -> RowAverages:
    """Softmax row expectations at per-row logit variances ``tau2`` (T,), averaged over ``W``.

    ``W`` has mean 1 and relative variance ``kappa`` (T,) per row (Gamma law, 6 Gauss nodes;
    a point mass where ``kappa = 0``). Exact quadrature (`theory._row_law.row_law_many`, the
    first-layer law) at m <= 32 and on 48 log-spaced rows beyond, a cubic spline in log m in
    between; the logit variances ``tau2_m W`` needed are reached by polynomial
    interpolation through 5-13 Chebyshev nodes in tau^2 (in log tau^2 past a ratio of 8).
    Tests compare with direct quadrature.
    """
    T = tau2.size
    pos = np.arange(1, T + 1)
    kappa = np.zeros(T) if kappa is None else np.asarray(kappa, dtype=float)
    grid = np.unique(np.concatenate([pos[:_EXACT_ROWS], np.round(np.geomspace(min(T, _EXACT_ROWS), T, _LOG_ROWS)).astype(int)]))
    # 8 + 6 mixture nodes: relative error < 1e-6 up to tau^2 = 2 (tests; 12 is the default)
    n_sphere = 6 if sphere_dim >= 100 else 8
    mixture = chi2_mixture(d_head, sphere_dim, 8, n_sphere)
    law = sphere_key_law(64, sphere_dim)

    def on_grid(t2s) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        """The rows at each logit variance of ``t2s`` (one batched quadrature), interpolated to m = 1..T
        (one spline through every column: the same per-column splines, bit for bit)."""
        tables = row_law_many(grid, t2s, law, mixture=mixture, y_step=_Y_STEP)
        if grid.size == T:
            return [(rows.sum_sq, rows.coupling, rows.sum_sq2, rows.sum_cube) for rows in tables]
        lm, lp = np.log(grid), np.log(pos)
        g2, p2 = grid.astype(float) ** 2, pos.astype(float) ** 2
        columns = [c for rows in tables for c in (grid * rows.sum_sq, rows.coupling, g2 * rows.sum_sq2, g2 * rows.sum_cube)]
        at_pos = CubicSpline(lm, np.stack(columns, axis=1))(lp)  # (T, 4 len(t2s))
        return [(at_pos[:, 4 * i] / pos, at_pos[:, 4 * i + 1], at_pos[:, 4 * i + 2] / p2, at_pos[:, 4 * i + 3] / p2)
                for i in range(len(tables))]

    # the per-row rule of W
    w_nodes = np.ones((T, 1))
    w_weights = np.ones((T, 1))
    if (kappa[1:] > 1e-12).any():
        w_nodes, w_weights = np.ones((T, _W_NODES)), np.zeros((T, _W_NODES))
        w_weights[:, 0] = 1.0
        # the Gamma rule of mean 1 and relative variance kappa_m (`gamma_factor_rule`) of every row
        # at once: one stacked eigh instead of a call per row
        sel = np.nonzero(kappa[1:] > 1e-12)[0] + 1
        shape = 1.0 / kappa[sel]
        x, w = gamma_rules(_W_NODES, shape)
        w_nodes[sel], w_weights[sel] = x / shape[:, None], w
    targets = tau2[:, None] * w_nodes  # (T, J)
    active = targets[1:] if T > 1 else targets
    lo, hi = float(active.min()), float(active.max())
    plain = None
    if hi <= lo * (1 + _TAU_RTOL) or hi == 0:
        s2, xi, s2sq, s3 = (np.broadcast_to(v[:, None], targets.shape) for v in on_grid([0.5 * (lo + hi)])[0])
    else:
        lo = max(lo, hi * 1e-8)
        ratio = hi / lo
        if ratio <= _TAU_NODES[-1][0]:
            count = next(n for r, n in _TAU_NODES if ratio <= r)
            x, a, b = targets, lo, hi
        else:
            count = next(n for r, n in _LOG_TAU_NODES if ratio <= r)
            x, a, b = np.log(np.maximum(targets, lo)), np.log(lo), np.log(hi)
        k = np.arange(count)
        nodes = 0.5 * (a + b) + 0.5 * (b - a) * np.cos((2 * k + 1) * np.pi / (2 * count))
        tables = on_grid([float(t if x is targets else np.exp(t)) for t in nodes])
        weights = _lagrange(x, nodes)  # (T, J, count)
        s2, xi, s2sq, s3 = (np.einsum("tjc,ct->tj", weights, np.array([tab[i] for tab in tables])) for i in range(4))
        if w_nodes.shape[1] > 1:  # the same tables at W = 1
            at_one = _lagrange(tau2 if x is targets else np.log(np.maximum(tau2, lo)), nodes)  # (T, count)
            p2, pxi = (np.einsum("tc,ct->t", at_one, np.array([tab[i] for tab in tables])) for i in range(2))
            plain = (p2, p2 - 1.0 / pos + pxi / sphere_dim)
    inv = 1.0 / pos
    sum_sq = (w_weights * s2).sum(1)
    sum_sq2 = (w_weights * s2sq).sum(1)
    sum_cube = (w_weights * s3).sum(1)
    diag = (w_weights * w_nodes * (s2 - inv[:, None])).sum(1)
    coupling = (w_weights * w_nodes * xi).sum(1)
    sum_sq[0], sum_sq2[0], sum_cube[0], diag[0], coupling[0] = 1.0, 1.0, 1.0, 0.0, 0.0  # one key: a_11 = 1
    return RowAverages(sum_sq, sum_sq2, sum_cube, diag, coupling, plain)


def rows_at_key_dim(tau2: np.ndarray, d_head: int, D: int, key_dim: np.ndarray, kappa: np.ndarray | None = None) -> RowAverages:
    """`row_averages` with a per-row effective key dimension ``key_dim`` (T,) in ``[16, D]``
    (`_gram.effective_key_dim`): the row law of keys uniform on a sphere of ``D_eff`` dimensions.

    Why both the key law and the query factor move. Given the query's direction ``v`` (isotropic,
    the weights being), the keys' coordinates ``c_n = v . x_n`` are exchangeable; at depth they are
    dependent, i.i.d. only given a per-row scale ``theta`` whose relative variance carries the
    excess of the keys' centred Gram. The marginal of one ``c_n`` is the ``D``-sphere coordinate
    exactly, so ``theta``'s variance fixes the conditional kurtosis as well: keys uniform on a
    ``D_eff``-sphere seen through ``chi^2_{D_eff}`` (the ``D``-sphere coordinate is that product in
    law) is the model with both right. Moving only the query factor leaves the keys' marginal too
    heavy-tailed: measured (d = 128, 4 heads, 4 layers, sigma_q = sigma_k = 0.1, 4000 networks),
    ``hook_pattern``'s sum of squares then comes out 4-5% over, against 2-3% under with both.

    The rows depend on ``1/D`` smoothly: they are computed at ``D`` and at the smallest ``key_dim``
    and interpolated linearly in ``1/D`` per row (error second order in the range of ``1/D``;
    exact where every row has ``key_dim = D``, then this is `row_averages`).
    """
    lo = float(np.min(key_dim[1:])) if key_dim.size > 1 else float(D)
    at_D = row_averages(tau2, d_head, D, kappa)
    if lo >= D * (1 - 1e-9):
        return at_D
    at_lo = row_averages(tau2, d_head, lo, kappa)
    w = (1.0 / key_dim - 1.0 / D) / (1.0 / lo - 1.0 / D)
    mix = lambda a, b: a + w * (b - a)  # noqa: E731  (per row, linear in 1/D)
    plain = None
    if at_D.plain is not None and at_lo.plain is not None:
        plain = tuple(mix(a, b) for a, b in zip(at_D.plain, at_lo.plain))
    fields = ("sum_sq", "sum_sq2", "sum_cube", "diag")
    out = {f: mix(getattr(at_D, f), getattr(at_lo, f)) for f in fields}
    # the coupling enters A as Xi/D: mixed as Xi/D_eff, so that ``coupling / D`` in `attention` reads it
    out["coupling"] = D * mix(at_D.coupling / D, at_lo.coupling / lo)
    return RowAverages(**out, plain=plain)


def softmax_rows(tau2: np.ndarray, d_head: int, sphere_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``S_2(m)`` and ``Xi(m)`` for m = 1..T at per-row effective logit variances ``tau2`` (T,)
    (`row_averages` without the spread's fluctuation)."""
    rows = row_averages(tau2, d_head, sphere_dim)
    return rows.sum_sq, rows.coupling


def row_pair_excess(rows: RowAverages, tau2: np.ndarray, cosine: np.ndarray, d_head: int, D: int) -> np.ndarray:
    """``E[sum_k a_mk a_nk] - 1/max(m, n)`` for two rows m != n that share their keys (T x T, 0 on the diagonal).

    The logits of rows m and n over a common key k are correlated through the two
    queries, ``rho = cos(u_m, u_n)``: mean ``r`` (the cosine of the normalised queries,
    ``E[m, n]``), second moment ``r^2 + (1 - r^2)^2 (1/d_head + 1/D)`` (two independent
    query directions in a head). Mehler's expansion of ``E[f(x) g(x')]`` for standardised
    Gaussian logits with per-key correlation rho, to second order::

        excess = tau_m tau_n r F1 + (tau_m^2 tau_n^2 / 2) E[rho^2] F2,
        F1 = sum_{k,j<=m} E[d_j a^m_k] E[d_j a^n_k],  F2 = sum_{i,j,k<=m} E[d_i d_j a^m_k] E[d_i d_j a^n_k]

    (m = the shorter row). By exchangeability each derivative's mean takes one value per
    pattern of equal indices, from ``S_2`` and ``S_3 = E[sum a^3]`` of the row (r keys):
    ``E[d_j a_k] = (1 - S_2)/r`` (j = k), ``-(1 - S_2)/(r(r-1))`` (j != k);
    ``E[d_i d_j a_k] = (1 - 3S_2 + 2S_3)/r`` (all equal), ``(3S_2 - 2S_3 - 1)/(r(r-1))``
    (two equal), ``2(1 - 3S_2 + 2S_3)/(r(r-1)(r-2))`` (all distinct). Multiplied by the
    keys' per-key variance (their spread), this is the correction to the uniform
    off-diagonal ``U`` (exact at ``rho = 0``; error ``O(rho^3 tau^6)``). Returns the excess
    and its second-order part.
    """
    T = tau2.size
    r, (b1, b2), (c1, c2, c3) = _row_moment_coefficients(rows, T)
    # On and above the diagonal (row m = the shorter one) each term is an outer product; below it,
    # the mirror image. Same products in the same order as indexing by min/max of the pair.
    F1 = _symmetric_from_upper(np.outer(r * b1, b1) + np.outer(r * (r - 1.0) * b2, b2))
    F2 = _symmetric_from_upper(np.outer(r * c1, c1) + np.outer(3.0 * r * (r - 1.0) * c2, c2)
                               + np.outer(r * (r - 1.0) * (r - 2.0) * c3, c3))
    tau = np.sqrt(tau2)
    rho2 = cosine**2 + (1.0 - cosine**2) ** 2 * (1.0 / d_head + 1.0 / D)
    second = 0.5 * np.outer(tau2, tau2) * rho2 * F2
    excess = np.outer(tau, tau) * cosine * F1 + second
    np.fill_diagonal(excess, 0.0)
    np.fill_diagonal(second, 0.0)
    return excess, second


def _row_moment_coefficients(rows: RowAverages, T: int):
    """Positions ``r = 1..T`` and the row moments of `row_pair_excess`'s docstring: ``E[d_j a_k]``
    for j = k and j != k (``b1, b2``), ``E[d_i d_j a_k]`` for all equal, two equal, all distinct
    (``c1, c2, c3``); 0 where the pattern of indices needs more keys than the row has."""
    r = np.arange(1, T + 1, dtype=float)
    S2, S3 = rows.sum_sq, rows.sum_cube
    with np.errstate(divide="ignore", invalid="ignore"):
        b1 = (1.0 - S2) / r
        b2 = np.where(r > 1, -(1.0 - S2) / (r * (r - 1.0)), 0.0)
        c1 = (1.0 - 3.0 * S2 + 2.0 * S3) / r
        c2 = np.where(r > 1, (3.0 * S2 - 2.0 * S3 - 1.0) / (r * (r - 1.0)), 0.0)
        c3 = np.where(r > 2, 2.0 * (1.0 - 3.0 * S2 + 2.0 * S3) / (r * (r - 1.0) * (r - 2.0)), 0.0)
    return r, (b1, b2), (c1, c2, c3)


def _symmetric_from_upper(upper: np.ndarray) -> np.ndarray:
    """The symmetric matrix whose upper triangle (with the diagonal) is ``upper``'s."""
    return np.triu(upper) + np.triu(upper, 1).T



# Rows per block of `pair_corrected` (32 x T float64 work arrays: a few hundred kB at T = 1024, in cache).
_PAIR_BLOCK = 32


def pair_corrected(U: np.ndarray, E: np.ndarray, rows: RowAverages, tau2: np.ndarray, spread: np.ndarray,
                   diag: np.ndarray, d_head: int, D: int) -> tuple[np.ndarray, float]:
    """``A = U + sqrt(v_m v_n) excess`` off the diagonal and ``diag`` on it (`row_pair_excess` on the
    cosines ``correlation(E)``), and the largest relative size of the second-order part,
    ``max |sqrt(v_m v_n) second| / sqrt(A_mm A_nn)``.

    The same products in the same order as forming `row_pair_excess`'s T x T matrices and
    combining them (bit-identical, tested), a block of rows at a time: every work array stays in
    cache and no T x T temporary is made.
    """
    T = tau2.size
    r, (b1, b2), (c1, c2, c3) = _row_moment_coefficients(rows, T)
    f1 = ((r * b1, b1), (r * (r - 1.0) * b2, b2))
    f2 = ((r * c1, c1), (3.0 * r * (r - 1.0) * c2, c2), (r * (r - 1.0) * (r - 2.0) * c3, c3))
    tau = np.sqrt(tau2)
    q = 1.0 / d_head + 1.0 / D
    s = np.sqrt(np.diag(E))
    A = np.empty((T, T))
    size = 0.0
    for r0 in range(0, T, _PAIR_BLOCK):
        r1 = min(T, r0 + _PAIR_BLOCK)
        blk = slice(r0, r1)
        scale = np.outer(s[blk], s)
        cosine = np.zeros((r1 - r0, T))
        np.divide(E[blk], scale, out=cosine, where=scale > 0)  # `correlation`
        F1, F2 = _min_max_block(f1, r0, r1), _min_max_block(f2, r0, r1)
        cos2 = cosine**2
        rho2 = cos2 + (1.0 - cos2) ** 2 * q
        second = 0.5 * np.outer(tau2[blk], tau2) * rho2 * F2
        excess = np.outer(tau[blk], tau) * cosine * F1 + second
        on = (np.arange(r1 - r0), np.arange(r0, r1))
        excess[on] = 0.0
        second[on] = 0.0
        root = np.sqrt(np.outer(spread[blk], spread))
        A[blk] = U[blk] + root * excess
        A[on[0] + r0, on[1]] = diag[blk]
        scale_a = np.sqrt(np.outer(diag[blk], diag))
        size = max(size, float(np.max(np.abs(root * second) / np.where(scale_a > 0, scale_a, np.inf))))
    return A, size


def _min_max_block(terms, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of the symmetric ``X[m, n] = sum_i u_i[min] v_i[max]`` (the sum in the order of
    ``terms``, each product as ``u[min] * v[max]``): `_symmetric_from_upper` of the sum of outer products."""
    T = terms[0][0].size
    upper = np.multiply.outer(terms[0][0][r0:r1], terms[0][1][r0:])  # columns r0.. (n >= r0)
    lower = np.multiply.outer(terms[0][1][r0:r1], terms[0][0][:r1])  # columns ..r1: u[n] v[m], as v[m] u[n]
    for u, v in terms[1:]:
        upper += np.multiply.outer(u[r0:r1], v[r0:])
        lower += np.multiply.outer(v[r0:r1], u[:r1])
    out = np.empty((r1 - r0, T))
    out[:, r1:] = upper[:, r1 - r0:]
    out[:, :r0] = lower[:, :r0]
    mask = np.arange(r0, r1)[None, :] >= np.arange(r0, r1)[:, None]  # n >= m in the diagonal block
    out[:, r0:r1] = np.where(mask, upper[:, :r1 - r0], lower[:, r0:r1])
    return out

def _radius_order(at: Layer, tau2_bar: float) -> float:
    """The neglected order of the first layer's joint radius average, ``tau_bar^2 delta^2 / 2`` (m = 2), + 3e-4 (its rule)."""
    return tau2_bar * radius_spread(at.d, at.eps, float(at.spec.sigma_embed)) ** 2 / 2.0 + 3e-4


def _layer_one_radius(at: Layer, tau2_bar: float) -> float:
    """``c = d eps/sigma_e^2`` where the first layer averages the radii jointly (`theory._row_law.layer_one_rows`), else 0."""
    spec = at.spec
    if not (at.first and at.best and at.eps > 0 and float(spec.sigma_embed) > 0):
        return 0.0
    delta = radius_spread(at.d, at.eps, float(spec.sigma_embed))
    return at.d * at.eps / float(spec.sigma_embed) ** 2 if tau2_bar * delta**2 > RADIUS_ORDER_MIN else 0.0


def put_projections(at: Layer, nu1: np.ndarray, label) -> None:
    """``hook_q|k|v``: ``Var = sigma^2 d nu_1`` per coordinate (a zero-mean projection of the normalised stream)."""
    spec, (level, error, assumptions) = at.spec, label
    for which, sigma in (("q", spec.sigma_q), ("k", spec.sigma_k), ("v", spec.sigma_v)):
        at.put(f"attn.hook_{which}", level, error, assumptions, mean=at.zero, var=float(sigma)**2 * at.d * nu1)


def attention(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``h = W_o z``: the taps of the attention path from ``E``, and the branch kernel ``K_attn``."""
    spec, E, nu2, pos, zero, d = at.spec, stream.E, stream.nu2, at.pos, at.zero, at.d
    T, d_head, D = E.shape[0], int(spec.d_head), d - 1
    scale2 = logit_scale_squared(d_head, spec.attn_scale)
    sq, sk, sv, so = float(spec.sigma_q), float(spec.sigma_k), float(spec.sigma_v), float(spec.sigma_o_effective)
    nu1 = np.diag(E).copy()
    level, error, assumptions = opening_label(at)
    put_projections(at, nu1, (level, error, assumptions))
    # logits: Var(s q_m.k_n) = s^2 sq^2 sk^2 d_head E|e_m|^2 E|e_n|^2 (n != m), E|e_m|^4 (n = m); pooled over n <= m
    off = np.cumsum(np.concatenate([[0.0], nu1[:-1]])) * nu1  # sum_{n<m} nu1_m nu1_n
    at.put("attn.hook_attn_scores", level, error, assumptions,
           mean=zero, var=scale2 * sq**2 * sk**2 * d_head * d**2 * (off + nu2) / pos)

    U = uniform_average(E)
    closure = at.closure
    if at.best:
        spread = key_spread(E, U)
        tau2 = scale2 * sq**2 * sk**2 * d_head * d**2 * nu1 * spread
        check_logit_variance(float(tau2[1:].max()) if T > 1 else 0.0, at.layer, d_head, D)
        kappa = stream.spread_rel_var if stream.spread_rel_var is not None else np.zeros(T)
        radius_c = _layer_one_radius(at, float(tau2[-1]))
        if radius_c:  # layer 0, eps > 0: the radii averaged jointly, as in `theory.derive`
            _, s2r, xir, s2sqr, s3r = layer_one_rows(pos.astype(int), float(tau2[-1]), d_head, d, radius_c)
            rows = RowAverages(s2r, s2sqr, s3r, s2r - 1.0 / pos, xir)
        else:
            key_dim = (_gram.effective_key_dim(stream.K, stream.gram_pairs, nu1, D)
                       if stream.norm_images is not None else np.full(T, float(D)))
            rows = rows_at_key_dim(tau2, d_head, D, key_dim, kappa)
            if stream.norm_images is not None:
                at.say(f"layer {at.layer}: effective key dimension {key_dim[1:].min():.4g}..{key_dim[1:].max():.4g} (D = {D})")
        s2 = rows.sum_sq
        at.say(f"layer {at.layer}: effective logit variance {tau2[1:].min():.4g}..{tau2[1:].max():.4g}, "
               f"spread fluctuation {kappa.max():.3g}")
        # A = U + sqrt(v v^T) row_pair_excess off the diagonal; with the size of the second-order
        # corrections (their next order taken as large; theory.tolerance)
        A, second_size = pair_corrected(U, E, rows, tau2, spread, np.diag(U) + spread * rows.diag + spread * rows.coupling / D,
                                        d_head, D)
        sizes = [second_size]
        if rows.plain is not None:
            s2_plain, diag_plain = rows.plain
            a_plain = np.diag(U) + spread * diag_plain
            sizes += [float(np.max(np.abs(s2[1:] / s2_plain[1:] - 1))),
                      float(np.max(np.abs(np.diag(A)[1:] / np.where(a_plain[1:] > 0, a_plain[1:], np.inf) - 1)))]
        if radius_c:
            sizes.append(_radius_order(at, float(tau2[-1])))
        stream.correction = max(stream.correction, *sizes)
        stream.branch_spread_rel_var = attention_spread_rel_var(rows.sum_sq, rows.sum_sq2, int(spec.n_heads))
        # one position's write scales with its rows' sum a^2 (``spread (S - 1/m)`` of ``A_mm``), which
        # fluctuates per network; the H heads' rows are independent given the keys (`layernorm.radial_law`)
        gain = so**2 * sv**2 * d**2
        var_s = np.maximum(rows.sum_sq2 - rows.sum_sq**2, 0.0)
        stream.branch_row_radial = (gain * np.diag(A), gain**2 * spread**2 * var_s / int(spec.n_heads))
        att_assume = closure + (
            "softmax rows: keys with the same spread about their centroid, treated as i.i.d.; the spread's "
            "per-network fluctuation (attention randomness over the heads) by its relative variance, Gamma law",
            "rows sharing keys: correlated through their queries, to second order (Mehler); mean weights uniform",
        ) if not at.first else ("given the query side, keys i.i.d. (exact at layer 0)",
                                "rows sharing keys: correlated through their queries, to second order (Mehler)")
    else:
        s2 = 1.0 / pos
        A = U
        stream.branch_spread_rel_var = None
        stream.branch_row_radial = None
        att_assume = closure + ("uniform attention a_mn = 1/m",)
    err_att = ("exact (quadrature, relative < 1e-6)" if at.exact_here else
               "layer 0: the radius order; deeper: closure O(1/d) per block + next order of the softmax corrections" if at.best else
               "relative O(tau^2) at small m, e^{tau^2} - 1 at large m")
    a_lvl = Level.EXACT if at.exact_here else Level.APPROXIMATE
    tol = None
    if at.first and at.best and a_lvl == Level.APPROXIMATE:  # layer 0, eps > 0: the radius order (as `theory.derive`)
        order = _radius_order(at, float(tau2[-1])) if radius_c else (
            float(tau2[-1]) * radius_spread(at.d, at.eps, float(spec.sigma_embed)) ** 2)
        tol = (from_order(order), f"first-layer radius order {order:.3g} (floor 1e-4)")
        stream.correction = max(stream.correction, order)
    at.put("attn.hook_pattern", a_lvl, err_att, att_assume, tolerance=tol, mean=1.0 / pos, sum_sq=s2)
    at.put("attn.hook_z", a_lvl, err_att, att_assume, tolerance=tol, mean=zero, var=sv**2 * d * np.diag(A))
    K_attn = so**2 * sv**2 * d**2 * A
    at.put("hook_attn_out", a_lvl, err_att, att_assume, tolerance=tol, mean=zero, var=np.diag(K_attn).copy())
    stream.branch = K_attn
    stream.branch_kind = sub.kind
    stream.branch_label = (a_lvl, err_att, att_assume)
    stream.block_assumptions = tuple(dict.fromkeys(stream.block_assumptions + att_assume))
