"""The laws of modern attention variants: QK-norm, RoPE, ALiBi, the NoPE-layer temperature, GQA.

Each variant changes one input of the softmax-row law of `theory._quadrature` (i.i.d.
logits given the query side, ``l_k = b_k + sqrt(tau^2 G) x_k``), and this module computes
that input; `theory.depth_maps.modern_attention` assembles them through depth.

* **QK-norm** (``q / rms(q)``, ``k / rms(k)`` over ``d_head``): for independent ``W_q``, ``W_k``
  the normalised query and key are independent isotropic vectors, so the logit is
  ``s d_head cos(q, k)`` with ``cos^2 ~ Beta(1/2, (d_head - 1)/2)`` -- *whatever* the sigmas
  and the input: variance ``s^2 d_head`` (1 for the sqrt rule), excess kurtosis
  ``-6/(d_head + 2)`` (`qk_norm_cosine_moments`). In a softmax row the key law is one
  coordinate of a uniform point of ``S^{d_head - 1}`` (`qk_norm_key_dim`); the query norm's
  ``chi^2_{d_head}`` factor is gone, the ``chi^2_D/D`` factor of the projected query stays.
  The value coupling is ``kappa^2 = (E chi_{d_head})^2 / d_head`` times the coupling of the
  standardised cosines (`qk_norm_coupling_factor`: given the cosine the key's component
  along the query is ``|k| cos`` with ``|k|`` independent of the direction). With eps > 0
  the norms are ``d_head X/(X + c)``, ``X ~ chi^2_{d_head}`` (`qk_norm_radius2`).
* **RoPE** (rotate-half pairs, ``theta_i = base^(-2i/d_head)``): ``R_m q . R_n k =
  q . R_{n-m} k``. Averaged over the weights, the logits of two keys n, n' of one row
  covary as ``E[n, n'] c(n - n')`` with the mean cosine of the rotation angles over the
  frequency pairs, ``c(delta) = (2/d_head) sum_i cos(delta theta_i)`` (`rope_mean_cosine`),
  instead of ``E[n, n']``: the part of the keys shared along the row no longer cancels in
  the softmax. The value coupling of a key pair (n, n') is multiplied by ``c(n - n')``
  (the rotated query directions ``R_{n-m}^T q`` of the two keys have cosine ``c``), so the
  row's coupling by the pair mean ``cbar(m)`` (`rope_pair_mean`). At layer 0 with i.i.d.
  inputs ``E`` is diagonal: the logit law, ``E[a] = 1/m`` and ``S_2`` are unchanged, only
  the coupling shrinks.
* **ALiBi**: deterministic offsets ``-slope_h (m - k)`` (`alibi_slopes`, Press et al. 2022).
  The row law with offsets is computed fast by the shift identity
  ``E[exp(-t e^{b + l})] = phi(t e^b)``: every key's single-key function is the
  distance-0 one shifted by ``b`` in ``log t`` (`alibi_rows`).
* **Temperature** (Llama 4's NoPE layers): the queries of row m are multiplied by
  ``tau(m - 1)`` (`theory._spec_schedule.AttnTemperature`), so the row's logit variance
  by ``tau(m - 1)^2``.
* **GQA**: ``g = H/H_kv`` query heads share one key/value head. One head's (q, k, v) has the
  same law, and ``W_o``'s columns are independent with mean 0, so every per-tap second
  moment and every position kernel is unchanged under the annealed measure. What changes:
  heads of one group average the *same* values, so ``Cov(z^h_j, z^h'_j) = sigma_v^2 E[sum_kk'
  abar_k abar_k' e_k . e_k']`` (``abar``: the weights averaged over the query given the
  keys), ``sigma_v^2 d nu_1 / m`` at leading order (`gqa_cross_head_covariance`), 0 without GQA.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import integrate, special, stats
from scipy.interpolate import CubicSpline
from scipy.special import gammaln

from ._kernel_maps import layernorm_radius_moments
from ._quadrature import row_expectations, scaled_chi2_rule, sphere_coordinate_rule
from .quantities import alibi_slopes  # noqa: F401 (one rule for theory and simulate; re-exported)

# ---------------------------------------------------------------- QK-norm
def qk_norm_key_dim(d_head: int) -> int:
    """The sphere of the normalised keys: one coordinate of a uniform point of ``S^{d_head - 1}``."""
    if d_head < 2:
        raise ValueError(f"qk_norm needs d_head >= 2 (a cosine in d_head dimensions), got {d_head}")
    return int(d_head)


@lru_cache(maxsize=64)
def qk_norm_key_cosine2(d_head: int, D: float) -> float:
    """``E[cos^2(k_1, k_2)]`` of two keys of one network: ``k_i = W_k e_i`` with one ``W_k``.

    Given the input directions' cosine ``rho``, the rows of ``W_k [e_1 e_2]`` are ``d_head``
    i.i.d. Gaussian pairs of correlation ``rho``, so ``cos(k_1, k_2)`` is their uncentred sample
    correlation: ``E[r^2 | rho] = 1 - ((n - 1)/n)(1 - rho^2) 2F1(1, 1; n/2 + 1; rho^2)``, ``n = d_head``
    (Fisher 1915); ``rho^2 ~ Beta(1/2, (D - 1)/2)`` for independent inputs on the sphere of ``D``
    dimensions. One quadrature over the Beta law. ``1/d_head`` as ``D -> inf`` (isotropic keys),
    ``1/d_head + 1/D + O(D^-2)`` otherwise.
    """
    n = float(d_head)
    if not math.isfinite(D):
        return 1.0 / n
    law = stats.beta(0.5, (D - 1.0) / 2.0)

    def er2(b):
        return (1.0 - (n - 1.0) / n * (1.0 - b) * special.hyp2f1(1.0, 1.0, n / 2.0 + 1.0, b)) * law.pdf(b)

    return float(integrate.quad(er2, 0.0, 1.0, limit=200, epsabs=1e-13)[0])


def qk_norm_row_law(d_head: int, D: float) -> tuple[float, float]:
    """``(key_dim, g_dof)`` of the QK-norm row law: ``cos_n = sqrt(G / d_head) x_n``, ``G ~ chi^2_g/g``
    shared by the row, ``x_n`` i.i.d. ``sqrt(key_dim)`` times a sphere coordinate of ``S^{key_dim - 1}``.

    Why not the isotropic law (``key_dim = d_head``, G from the projected query): the keys of one
    row share ``W_k``, so given ``(W_k, q_hat)`` they are i.i.d. but anisotropic (directions
    ``ACG(W_k W_k^T)``), while *marginally* ``k_hat`` and ``q_hat`` are independent and uniform, so
    one cosine has exactly the sphere law of ``S^{d_head-1}`` (``E cos^4 = 3/(d_head(d_head+2))``).
    The row's conditional variance ``G = d_head E[cos^2 | row]`` has, averaging the uniform
    ``q_hat`` first (``E[(q.u)^2 (q.v)^2] = (1 + 2(u.v)^2)/(n(n+2))``),

        E[G^2] = d_head/(d_head + 2) (1 + 2 E[cos^2(k_1, k_2)])        (`qk_norm_key_cosine2`)

    and the shape given the row carries the rest of the fourth moment. Matching both moments:
    ``g = 2/(E[G^2] - 1)`` and ``key_dim/(key_dim + 2) = (d_head/(d_head+2))/E[G^2]``. Isotropic keys
    (``D -> inf``) give back ``(d_head, inf)``; ``key_dim`` is floored at 2 (d_head ~ 2 with small D). At d = 64, d_head = 16: (13.2, 86); the rows' S_2 at
    m = 64 is 1.6% lower than the isotropic sphere law with a chi^2_D/D factor (Monte Carlo of one
    row with a shared ``W_k``: tests/test_modern_qk_rows.py). Level: approximate, the conditional
    law's higher cumulants beyond the fourth moment (``O(D^-2)``); deeper layers: the keys'
    spread parts treated as independent inputs on the sphere of ``D`` dimensions.
    """
    n = float(d_head)
    eg2 = n / (n + 2.0) * (1.0 + 2.0 * qk_norm_key_cosine2(d_head, D))
    if eg2 <= 1.0 + 1e-12:
        return n, math.inf
    u = (n / (n + 2.0)) / eg2
    # The sphere rule needs key_dim >= 2 (the arcsine law); only d_head ~ 2 with small D reaches the floor,
    # where the fourth moment is then matched only approximately (outside the stated regime anyway).
    return max(2.0 * u / (1.0 - u), 2.0), 2.0 / (eg2 - 1.0)


def qk_norm_cosine_moments(d_head: int) -> tuple[float, float]:
    """``(E[cos^2], excess kurtosis of cos)`` for two independent isotropic vectors in ``d_head`` dims.

    ``cos^2 ~ Beta(1/2, (d_head - 1)/2)``: ``E cos^2 = 1/d_head``, ``E cos^4 = 3/(d_head (d_head + 2))``,
    excess kurtosis ``3 d_head/(d_head + 2) - 3 = -6/(d_head + 2)``.
    """
    return 1.0 / d_head, -6.0 / (d_head + 2.0)


def qk_norm_coupling_factor(d_head: int) -> float:
    """``kappa^2 = (E chi_{d_head})^2 / d_head = 2 Gamma((d_head+1)/2)^2 / (d_head Gamma(d_head/2)^2)``."""
    return float(2.0 * math.exp(2.0 * (gammaln((d_head + 1) / 2.0) - gammaln(d_head / 2.0))) / d_head)


def qk_norm_radius2(var, d_head: int, eps: float) -> np.ndarray:
    """``E|q_hat|^2 / d_head = E[X/(X + c)]``, ``X ~ chi^2_{d_head}``, ``c = d_head eps / var``.

    ``var`` is the variance of one coordinate of the projection (``sigma^2 d nu_1``).
    """
    nu1, _, _ = layernorm_radius_moments(np.asarray(var, dtype=float), d_head, eps, dof=d_head)
    return np.asarray(nu1, dtype=float)


# ---------------------------------------------------------------- RoPE
def rope_frequencies(d_head: int, base: float) -> np.ndarray:
    """``theta_i = base^(-2i/d_head)``, i = 0..d_head/2 - 1 (rotate-half pairs, Hugging Face Llama)."""
    if d_head % 2:
        raise ValueError(f"positional 'rope' rotates pairs of coordinates: d_head must be even, got {d_head}")
    return float(base) ** (-np.arange(0, d_head, 2, dtype=float) / d_head)


def rope_mean_cosine(T: int, d_head: int, base: float) -> np.ndarray:
    """``c(delta) = (2/d_head) sum_i cos(delta theta_i)`` for delta = 0..T-1 (``c(0) = 1``)."""
    theta = rope_frequencies(d_head, base)
    return np.cos(np.outer(np.arange(T, dtype=float), theta)).mean(axis=1)


def rope_logit_kernel(E: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``E[n, n'] c(|n - n'|)``: the kernel the rotated logits of one row see (T, T)."""
    T = E.shape[0]
    idx = np.arange(T)
    return E * c[np.abs(idx[:, None] - idx[None, :])]


def rope_pair_mean(c: np.ndarray) -> np.ndarray:
    """``cbar(m) = (1/(m(m-1))) sum_{n != n' <= m} c(n - n') = 2 sum_{delta<m} (m - delta) c(delta)/(m(m-1))``.

    ``cbar(1) = 1`` by convention (row 1 has no pair).
    """
    T = c.size
    m = np.arange(1, T + 1, dtype=float)
    delta = np.arange(T, dtype=float)
    # sum_{delta=1}^{m-1} (m - delta) c(delta) = m C1(m) - C2(m), with cumulative sums
    c1 = np.cumsum(np.where(delta >= 1, c, 0.0))  # sum_{delta<=j} c, j = m - 1
    c2 = np.cumsum(np.where(delta >= 1, delta * c, 0.0))
    pair = 2.0 * (m * c1 - c2)
    out = np.ones(T)
    out[1:] = pair[1:] / (m[1:] * (m[1:] - 1.0))
    return out


def rope_scale_sharing(T: int, d_head: int, base: float) -> np.ndarray:
    """The fraction of the variance of the ``chi^2_D/D`` factor that the keys of row m share under RoPE.

    The factor of key n is the quadratic form ``qhat_n^T (W_k W_k^T/(sigma^2 d)) qhat_n`` of
    the rotated query direction ``qhat_n = R_{n-m}^T qhat``; for Gaussian ``W_k`` two such
    forms covary as ``(2/d) (qhat_n . qhat_n')^2``, and over the query's pair energies
    ``p_i = |q_i|^2/|q|^2`` (Dirichlet(1, ..., 1), K = d_head/2 pairs)
    ``E[(sum_i p_i cos(delta theta_i))^2] = (K c(delta)^2 + mean_i cos^2(delta theta_i))/(K + 1)``.
    The row shares the variance of its mean: ``(1/m^2) sum_{n, n' <= m} r(n - n')``.
    """
    theta = rope_frequencies(d_head, base)
    K = theta.size
    cos = np.cos(np.outer(np.arange(T, dtype=float), theta))  # (T, K)
    r = (K * cos.mean(axis=1) ** 2 + (cos**2).mean(axis=1)) / (K + 1)  # r(delta), r(0) = 1
    m = np.arange(1, T + 1, dtype=float)
    delta = np.arange(T, dtype=float)
    c1 = np.cumsum(np.where(delta >= 1, r, 0.0))
    c2 = np.cumsum(np.where(delta >= 1, delta * r, 0.0))
    return (m + 2.0 * (m * c1 - c2)) / (m * m)


# ---------------------------------------------------------------- ALiBi
def alibi_weights(T: int, slope: float) -> np.ndarray:
    """The tau -> 0 limit: ``w[m, k] = e^{-slope (m - k)} / sum_{k' <= m} e^{-slope (m - k')}`` (T, T)."""
    idx = np.arange(T)
    dist = idx[:, None] - idx[None, :]
    w = np.where(dist >= 0, np.exp(-slope * np.maximum(dist, 0)), 0.0)
    return w / w.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------- GQA
def gqa_cross_head_covariance(sigma_v: float, d: int, nu1: np.ndarray) -> np.ndarray:
    """Leading order of ``Cov(z^h_j, z^h'_j)`` for two query heads sharing a key/value head:
    ``sigma_v^2 d nu_1 / m`` (uniform attention: both heads average the same values). 0 across groups."""
    m = np.arange(1, np.asarray(nu1).size + 1, dtype=float)
    return sigma_v**2 * d * np.asarray(nu1, dtype=float) / m


# ---------------------------------------------------------------- the rows
# exact rows up to this position, log-spaced rows beyond (cubic spline in log m)
_EXACT_ROWS = 32
_LOG_ROWS = 48
_TAU_RTOL = 1e-4
_TAU_NODES = ((2.0, 5), (4.0, 7), (math.inf, 9))


def _chebyshev(tau2: np.ndarray, table):
    """Per-row values of ``table(t2) -> tuple of arrays`` (rows first) at per-row ``tau2``:
    polynomial interpolation in tau^2 through 5-9 Chebyshev nodes (the row expectations are
    analytic in tau^2); one table when the rows share one tau^2."""
    active = tau2[1:] if tau2.size > 1 else tau2
    lo, hi = float(active.min()), float(active.max())
    if hi <= lo * (1 + _TAU_RTOL) or hi == 0:
        return tuple(np.array(v, dtype=float) for v in table(0.5 * (lo + hi)))
    count = next(n for ratio, n in _TAU_NODES if hi <= ratio * lo)
    k = np.arange(count)
    nodes = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos((2 * k + 1) * np.pi / (2 * count))
    tables = [table(float(t)) for t in nodes]
    weights = np.ones((tau2.size, count))
    for j in range(count):
        for i in range(count):
            if i != j:
                weights[:, j] *= (tau2 - nodes[i]) / (nodes[j] - nodes[i])

    def combine(w, arr):
        arr = np.asarray(arr, dtype=float)
        return w[:, None] * arr if arr.ndim == 2 else w * arr

    return tuple(sum(combine(weights[:, j], tables[j][q]) for j in range(count)) for q in range(len(tables[0])))


def per_key_scale_rows(positions, tau2: float, key_dim: float, mix_dof: float, query_norm: bool, g_dof: float, *,
                       n_logit: int = 40, n_scale: int = 6, n_mixture: int = 8, y_step: float = 0.04):
    """``S_2(m)``, ``Xi(m)`` when the ``chi^2_{g_dof}/g_dof`` factor of the logit variance is drawn per *key*.

    The row law of `single_group_rows` has ``tau^2 G`` with ``G`` shared by the row; RoPE
    rotates the query differently for each key, so the ``W_k W_k^T`` quadratic form
    ``|W_k^T R_{n-m}^T q|^2`` (the ``chi^2_D/D`` factor) differs from key to key. Here it is
    independent per key: logit ``sqrt(tau^2 a g_k) x_k`` with ``a`` the query norm's factor
    (``chi^2_{mix_dof}/mix_dof``, shared; absent under QK-norm), ``g_k`` i.i.d.
    ``chi^2_{g_dof}/g_dof`` and ``x_k`` the sphere coordinate; ``Xi = E[sum a a' x x']``.
    With ``1/s^2 = int t e^{-ts} dt`` as in `theory._quadrature`.
    """
    positions = np.asarray(positions, dtype=np.int64)
    x, wx = sphere_coordinate_rule(n_logit, key_dim)
    g, wg = scaled_chi2_rule(n_scale, g_dof)
    y_nodes = np.outer(np.sqrt(g), x).ravel()  # standardised logit per (g, x) node
    c_nodes = np.tile(x, g.size)  # the coupling variable: the key's direction along the query
    w_nodes = np.outer(wg, wx).ravel()
    a_nodes, a_w = scaled_chi2_rule(n_mixture, mix_dof) if query_norm else (np.ones(1), np.ones(1))
    m = positions[:, None].astype(float)
    sum_sq, coupling = np.zeros(positions.size), np.zeros(positions.size)
    for a, wa in zip(a_nodes, a_w):
        logit = math.sqrt(tau2 * a) * y_nodes
        e = np.exp(logit - logit.max())
        mean_e, e_min = float(w_nodes @ e), float(e.min())
        y_lo = -math.log(float(positions.max()) * mean_e) - 30.0
        y_hi = -math.log(float(positions.min()) * mean_e) + math.log(60.0 * mean_e / e_min) + 3.0
        y = np.arange(y_lo, y_hi + y_step, y_step)
        t = np.exp(y)
        decay = np.exp(-np.outer(t, e))  # (Y, N)
        phi = decay @ w_nodes
        psi = decay @ (w_nodes * e * e)
        chi = decay @ (w_nodes * c_nodes * e)
        log_phi = np.log(np.maximum(phi, 1e-300))
        jac = t * t * y_step
        sum_sq += wa * m[:, 0] * (np.exp((m - 1) * log_phi) @ (jac * psi))
        pair = np.where(m >= 2, m * (m - 1), 0.0)[:, 0]
        coupling += wa * pair * (np.exp(np.maximum(m - 2, 0) * log_phi) @ (jac * chi * chi))
    first = positions == 1
    sum_sq[first], coupling[first] = 1.0, 0.0
    return sum_sq, coupling


def single_group_rows(tau2: np.ndarray, key_dim: float, mix_dof: float, query_norm: bool,
                      shared: np.ndarray | None = None, g_dof: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``S_2(m)``, ``Xi(m)`` for exchangeable keys at per-row logit variances ``tau2`` (T,).

    ``key_dim``: the sphere of one standardised key coordinate (``D`` for LayerNorm/RMSNorm
    keys, ``d_head`` under QK-norm). The row's logit variance is ``tau^2 G``: with
    ``query_norm`` (no QK-norm) ``G = (chi^2_{mix_dof}/mix_dof)(chi^2_D/D)``, ``mix_dof =
    d_head`` (the query norm) and ``D = key_dim`` (the projected query); under QK-norm
    ``G = chi^2_{mix_dof}/mix_dof`` with ``mix_dof = D``. Exact rows at m <= 32, 48
    log-spaced rows beyond (a cubic spline of ``m S_2`` and ``Xi`` in log m).

    ``shared`` (T,), RoPE: the fraction of the variance of the ``chi^2_{g_dof}/g_dof`` factor
    that the row's keys share (1: NoPE); the rest is per key (`per_key_scale_rows`). To first
    order in that variance (``2/g_dof``) the rows are linear in the split:
    ``S_2 = S_2^shared + (1 - shared)(S_2^per-key - S_2^shared)``, and likewise ``Xi``.
    """
    tau2 = np.asarray(tau2, dtype=float)
    T = tau2.size
    pos = np.arange(1, T + 1)
    grid = np.unique(np.concatenate([pos[:_EXACT_ROWS], np.round(np.geomspace(min(T, _EXACT_ROWS), T, _LOG_ROWS)).astype(int)]))
    # the second mixture factor of row_expectations is the key sphere's: 1 node (a point mass) under QK-norm
    n_second = (6 if key_dim >= 100 else 8) if query_norm else 1

    split = shared is not None and bool(np.any(np.asarray(shared)[1:] < 1.0 - 1e-12))

    def spline(values_s2, values_xi):
        if grid.size == T:
            return values_s2, values_xi
        lm = np.log(grid)
        return (CubicSpline(lm, grid * values_s2)(np.log(pos)) / pos, CubicSpline(lm, values_xi)(np.log(pos)))

    def on_grid(t2: float):
        rows = row_expectations(grid, t2, mix_dof, key_dim, n_mixture=8, n_mixture_sphere=n_second)
        s2, xi = spline(rows.sum_sq, rows.coupling)
        if not split:
            return s2, xi
        if query_norm:  # the second factor of row_expectations is the one drawn per key here
            pk = per_key_scale_rows(grid, t2, key_dim, mix_dof, True, key_dim)
        else:  # QK-norm: the only factor (chi^2_D/D) is drawn per key
            pk = per_key_scale_rows(grid, t2, key_dim, mix_dof, False, mix_dof)
        pk_s2, pk_xi = spline(*pk)
        return s2, xi, pk_s2, pk_xi

    parts = _chebyshev(tau2, on_grid)
    if split:
        own = 1.0 - np.asarray(shared, dtype=float)
        s2, xi = parts[0] + own * (parts[2] - parts[0]), parts[1] + own * (parts[3] - parts[1])
    else:
        s2, xi = parts
    s2[0], xi[0] = 1.0, 0.0
    return s2, xi


def alibi_rows(tau2: np.ndarray, slope: float, key_dim: float, mix_dims: tuple[float, ...], *,
               n_logit: int = 40, n_mix: int = 4, y_step: float = 0.025):
    """Rows of one ALiBi head: ``S_2(m)``, ``Xi(m)`` and the mean weights ``w[m, k] = E[a_mk]`` (T, T).

    Logits ``l_k = -slope (m - k) + sqrt(tau_m^2 G) x_k`` with ``x_k`` i.i.d. sphere coordinates
    in ``key_dim`` dimensions and ``G`` the product of the chi-square factors ``mix_dims``.
    With ``1/s^j = int t^{j-1} e^{-ts} dt/(j-1)!`` every row expectation is an integral over
    ``y = log t`` of products of single-key functions, and a key at distance g has
    ``phi_g(y) = phi_0(y - slope g)`` (the shift identity), ``psi_g = e^{-2 slope g} psi_0(y - slope g)``,
    ``chi_g = e^{-slope g} chi_0(y - slope g)``: the distance-0 functions on a fine grid, a cubic
    spline, and cumulative sums over distance. ``Xi`` is ``E[sum_{k != k'} a a' x x']``.
    """
    tau2 = np.asarray(tau2, dtype=float)
    T = tau2.size
    x, wx = sphere_coordinate_rule(n_logit, key_dim)
    g_nodes, g_w = np.ones(1), np.ones(1)
    for dof in mix_dims:
        gn, gw = scaled_chi2_rule(n_mix, dof)
        g_nodes, g_w = np.outer(g_nodes, gn).ravel(), np.outer(g_w, gw).ravel()
    dist = np.arange(T, dtype=float)
    # every logit variance needed (row m, mixture node j), reached by interpolation in
    # log tau^2 through Chebyshev nodes (the row expectations are smooth in it)
    targets = np.maximum(tau2[:, None] * g_nodes[None, :], 0.0)  # (T, J)
    active = targets[1:] if T > 1 else targets
    lo, hi = float(active.min()), float(active.max())
    if hi <= 0:
        W = alibi_weights(T, slope)
        return (W * W).sum(axis=1), np.zeros(T), W
    lo = max(lo, hi * 1e-8)
    if hi <= lo * (1 + _TAU_RTOL):
        tables = [_alibi_one(math.sqrt(0.5 * (lo + hi)), slope, x, wx, T, dist, y_step)]
        weights = np.ones(targets.shape + (1,))
    else:
        ratio = hi / lo
        count = next(n for r, n in _TAU_NODES + ((64.0, 11), (math.inf, 13)) if ratio <= r)
        a, b = math.log(lo), math.log(hi)
        k = np.arange(count)
        nodes = 0.5 * (a + b) + 0.5 * (b - a) * np.cos((2 * k + 1) * np.pi / (2 * count))
        tables = [_alibi_one(math.exp(0.5 * t), slope, x, wx, T, dist, y_step) for t in nodes]
        lx = np.log(np.maximum(targets, lo))
        weights = np.ones(targets.shape + (count,))
        for j in range(count):
            for i in range(count):
                if i != j:
                    weights[..., j] *= (lx - nodes[i]) / (nodes[j] - nodes[i])
    row_w = (weights * g_w[None, :, None]).sum(axis=1)  # (T, nodes): each row's weight on each table
    s2 = sum(row_w[:, j] * tab[0] for j, tab in enumerate(tables))
    xi = sum(row_w[:, j] * tab[1] for j, tab in enumerate(tables))
    Wd = sum(row_w[:, j, None] * tab[2] for j, tab in enumerate(tables))
    s2[0], xi[0] = 1.0, 0.0
    # Wd[p, g]: the key at distance g of row p -> w[m, k] with k = m - g
    idx = np.arange(T)
    gdist = idx[:, None] - idx[None, :]
    w = np.where(gdist >= 0, np.take_along_axis(Wd, np.maximum(gdist, 0), axis=1), 0.0)
    return s2, xi, w


def _alibi_one(sd: float, slope: float, x, wx, T: int, dist: np.ndarray, y_step: float):
    """The three row tables at one random-part standard deviation ``sd`` (see `alibi_rows`)."""
    logit = sd * x
    shift = float(logit.max())
    e = np.exp(logit - shift)  # distance-0 key, e^l <= 1 (softmax is shift invariant)
    mean_e = float(wx @ e)
    e_min = float(e.min())
    mass_max = mean_e / (1.0 - math.exp(-slope)) if slope > 0 else mean_e * T
    y_lo = -math.log(mass_max) - 20.0  # the integrands fall like t^2 on the left: e^-40
    y_hi = -math.log(mean_e) + math.log(60.0 * mean_e / e_min) + 3.0
    y = np.arange(y_lo, y_hi + y_step, y_step)  # (Y,)
    # distance-0 functions on a grid that also covers y - slope g for every distance g
    yb = np.arange(y_lo - slope * (T - 1) - 2 * y_step, y_hi + 2 * y_step, y_step)
    decay = np.exp(-np.outer(np.exp(yb), e))  # (Yb, N)
    phi0 = np.maximum(decay @ wx, 1e-300)
    log_phi0 = CubicSpline(yb, np.log(phi0))
    r_psi = CubicSpline(yb, (decay @ (wx * e * e)) / phi0)
    r_chi = CubicSpline(yb, (decay @ (wx * x * e)) / phi0)
    r_one = CubicSpline(yb, (decay @ (wx * e)) / phi0)
    at = y[None, :] - slope * dist[:, None]  # (G, Y)
    damp = np.exp(-slope * dist)[:, None]
    L = log_phi0(at)  # log phi_g
    Rp = damp**2 * r_psi(at)  # psi_g / phi_g
    Rc = damp * r_chi(at)  # chi_g / phi_g
    R1 = damp * r_one(at)  # first_g / phi_g
    Phi = np.exp(np.cumsum(L, axis=0))  # (P, Y): row p has distances 0..p
    t = np.exp(y)
    j2 = t * t * y_step
    j1 = t * y_step
    cp = np.cumsum(Rp, axis=0)
    cc = np.cumsum(Rc, axis=0)
    cc2 = np.cumsum(Rc * Rc, axis=0)
    s2 = (Phi * cp) @ j2
    xi = (Phi * (cc * cc - cc2)) @ j2
    W = (Phi * j1) @ R1.T  # (P, G)
    W = np.where(dist[None, :] <= np.arange(T)[:, None], W, 0.0)
    return s2, xi, W


__all__ = ["qk_norm_key_dim", "qk_norm_cosine_moments", "qk_norm_coupling_factor", "qk_norm_radius2",
           "rope_frequencies", "rope_mean_cosine", "rope_scale_sharing", "per_key_scale_rows", "rope_logit_kernel", "rope_pair_mean", "alibi_slopes",
           "alibi_weights", "gqa_cross_head_covariance", "single_group_rows", "alibi_rows"]
