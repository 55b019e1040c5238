"""The law of one softmax row of keys with per-key laws, offsets and a random logit scale.

One attention row ``m`` has keys ``k = 1..m``. Its logits are

    l_k = b_k + sqrt(tau^2 G) s_k x_k

* ``b_k``: a deterministic offset (0 for NoPE; ALiBi's ``-slope (m - k)``);
* ``tau^2``: the base logit variance of the row (a per-query logit scale or a NoPE-layer
  temperature multiplies it; QK-norm fixes it);
* ``G``: a random factor of mean 1 shared by the whole row (the query side: the
  ``chi^2_{d_head}`` of ``|q|^2``, the ``chi^2_D`` of the projected query, the query's
  LayerNorm radius, the per-network fluctuation of the keys' spread), given as a
  quadrature rule (`product_rule` multiplies independent factors);
* ``s_k``: the relative standard deviation of key k's own part (heterogeneous keys);
* ``x_k``: i.i.d. standardised key parts (variance 1) with a law given by nodes
  (`KeyLaw`): one sphere coordinate ``sqrt(D) c`` (exact at layer 0, eps = 0), the same
  times a LayerNorm radius ``r`` (eps > 0), or Gaussian (the channel closure). Each node
  carries ``r^2 = |e_k|^2 / E|e|^2`` for the value-norm weighting.

A part shared by all keys of a row (a common shift) leaves the softmax unchanged, so it
is not an input: callers pass the per-key parts (e.g. the spread about the centroid).
Keys come in *groups* of identical law (``offsets[g]``, ``scales[g]``); ``counts[p, g]``
says how many keys of group g row p has (NoPE: one group, ``counts = m``; ALiBi: one
group per distance).

With ``s = sum_k e^{l_k}`` and ``1/s^j = int_0^inf t^{j-1} e^{-ts} dt / (j-1)!`` every row
expectation is a one-dimensional integral over t of products of single-key expectations
(the keys are independent given G): with ``phi_g(t) = E[e^{-t e^l}]`` and
``Phi_p = prod_g phi_g^{counts[p, g]}``,

* ``E[sum_k a_k^2]            = int t  sum_g c_g psi_g Phi/phi_g dt``,      ``psi = E[e^{2l} e^{-te^l}]``
* ``E[sum_k a_k^2 r_k^2]``     the same with ``psi^r = E[r^2 e^{2l} e^{-te^l}]``
* ``E[sum_{k!=k'} a a' y y']  = int t  [(sum_g c_g chi_g/phi_g)^2 - sum_g c_g (chi_g/phi_g)^2] Phi dt``,
  ``y = (l - b)/sqrt(tau^2 G)`` the standardised random part, ``chi = E[y e^l e^{-te^l}]``
* ``E[(sum_k a_k^2)^2]        = int t^3/6 [sum_g c_g psi4_g/phi_g + (sum_g c_g psi_g/phi_g)^2
  - sum_g c_g (psi_g/phi_g)^2] Phi dt``, ``psi4 = E[e^{4l} e^{-te^l}]``
* ``E[sum_k a_k^3]           = int t^2/2 sum_g c_g psi3_g Phi/phi_g dt``, ``psi3 = E[e^{3l} e^{-te^l}]``
* ``E[a_k]`` for one key of group g ``= int E[e^l e^{-te^l}]_g Phi/phi_g dt``,

then averaged over the rule of G. The t integral is the trapezoid rule in ``log t`` of
`theory._quadrature` (geometric convergence); tests hold the result against
`theory._quadrature.row_expectations` (one group, same nodes) and against Monte Carlo
(heterogeneous scales, offsets, radii).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ._quadrature import gamma_rule, scaled_chi2_rule, sphere_coordinate_rule


@dataclass(frozen=True)
class KeyLaw:
    """Nodes of one key's standardised random part ``x`` (variance 1): values, weights, ``r^2`` per node."""

    nodes: np.ndarray
    weights: np.ndarray
    radius2: np.ndarray


def sphere_key_law(n: int, dim: float) -> KeyLaw:
    """``x = sqrt(D) c``, c one coordinate of a uniform unit vector in R^D (Gaussian as D -> oo); ``r = 1``."""
    x, w = sphere_coordinate_rule(n, dim)
    return KeyLaw(np.asarray(x), np.asarray(w), np.ones_like(x))


def radius_rule(n: int, d: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights of ``r^2 = R/E[R]``, ``R = X/(X + c)``, ``X ~ chi^2_{d-1}``: the LayerNorm
    radius ``|e|^2/E|e|^2`` when the centred input is Gaussian (``c = d eps / sigma^2``)."""
    if c == 0:
        return np.ones(1), np.ones(1)
    x, w = gamma_rule(n, (d - 1) / 2.0)
    R = 2.0 * x / (2.0 * x + c)
    return R / float(w @ R), np.asarray(w)


def radius_key_law(n: int, dim: float, d: int, c: float, n_radius: int = 8) -> KeyLaw:
    """``x = r sqrt(D) c_k``: the sphere coordinate times an independent LayerNorm radius (`radius_rule`)."""
    x, w = sphere_coordinate_rule(n, dim)
    r2, wr = radius_rule(n_radius, d, c)
    r = np.sqrt(r2)
    return KeyLaw(np.outer(r, x).ravel(), np.outer(wr, w).ravel(), np.repeat(r2, x.size))


def product_rule(*rules: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The rule of a product of independent factors (tensor product of their rules)."""
    nodes, weights = np.ones(1), np.ones(1)
    for x, w in rules:
        nodes = np.outer(nodes, x).ravel()
        weights = np.outer(weights, w).ravel()
    return nodes, weights


def compress_rule(rule: tuple[np.ndarray, np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """A rule of at most ``n`` nodes with the same mean: the sorted nodes cut into ``n`` bins of equal
    probability, each replaced by its probability and conditional mean (error: the within-bin
    variance times half the second derivative of the integrand)."""
    x, w = rule
    if x.size <= n:
        return x, w
    order = np.argsort(x)
    x, w = x[order], w[order]
    cdf = np.cumsum(w) / w.sum()
    bins = np.minimum((cdf * n - 1e-12).astype(int), n - 1)
    mass = np.bincount(bins, weights=w, minlength=n)
    mean = np.bincount(bins, weights=w * x, minlength=n)
    keep = mass > 0
    return mean[keep] / mass[keep], mass[keep]


def chi2_mixture(d_head: float, sphere_dim: float, n: int = 8, n_sphere: int | None = None):
    """The query-side factor ``(chi^2_{d_head}/d_head)(chi^2_D/D)`` of the first layer (`theory.steps.attention`)."""
    return product_rule(scaled_chi2_rule(n, d_head), scaled_chi2_rule(n if n_sphere is None else n_sphere, sphere_dim))


def gamma_factor_rule(n: int, rel_var: float) -> tuple[np.ndarray, np.ndarray]:
    """A Gamma factor of mean 1 and relative variance ``rel_var`` (a point mass at 1 when 0)."""
    if rel_var <= 0:
        return np.ones(1), np.ones(1)
    shape = 1.0 / rel_var
    x, w = gamma_rule(n, shape)
    return x / shape, np.asarray(w)


@dataclass(frozen=True)
class RowMoments:
    """Row expectations at each row p (see the module docstring)."""

    sum_sq: np.ndarray  # E[sum a^2]                               (P,)
    sum_sq_r: np.ndarray  # E[sum a^2 r^2]                         (P,)
    coupling: np.ndarray  # E[sum_{k!=k'} a a' y y']               (P,)
    sum_sq2: np.ndarray  # E[(sum a^2)^2]                          (P,)
    sum_cube: np.ndarray  # E[sum a^3]                            (P,)
    mean_weight: np.ndarray  # E[a_k], one key of group g          (P, G)


def row_law(counts, tau2: float, key_law: KeyLaw, *, offsets=None, scales=None,
            mixture: tuple[np.ndarray, np.ndarray] | None = None, y_step: float = 0.04,
            mean_weights: bool = False) -> RowMoments:
    """Expectations of softmax rows with keys in groups (module docstring).

    Parameters
    ----------
    counts : (P, G) or (P,) keys of each group in each row (>= 0, at least one per row).
    tau2 : base logit variance of the rows (>= 0, finite); a per-query scale multiplies it.
    key_law : law of the standardised random part of one key (`sphere_key_law`,
        `radius_key_law`, or any `KeyLaw`).
    offsets : (G,) deterministic logit offsets per group (default 0).
    scales : (G,) relative standard deviations of each group's random part (default 1).
    mixture : (nodes, weights) of the random factor G of ``tau^2`` (mean 1; default a point mass).
    mean_weights : also compute ``E[a_k]`` per group (``mean_weight``; zeros otherwise).
    """
    counts = np.asarray(counts, dtype=float)
    if counts.ndim == 1:
        counts = counts[:, None]
    P, G = counts.shape
    if (counts < 0).any() or (counts.sum(1) < 1).any():
        raise ValueError("counts must be >= 0 with at least one key per row")
    if not (tau2 >= 0 and math.isfinite(tau2)):
        raise ValueError(f"tau2 must be finite and >= 0, got {tau2!r}")
    offsets = np.zeros(G) if offsets is None else np.asarray(offsets, dtype=float)
    scales = np.ones(G) if scales is None else np.asarray(scales, dtype=float)
    if offsets.shape != (G,) or scales.shape != (G,) or (scales < 0).any():
        raise ValueError(f"offsets and scales must have shape ({G},) (one per group), scales >= 0")
    g_nodes, g_weights = (np.ones(1), np.ones(1)) if mixture is None else mixture
    out = [np.zeros(P), np.zeros(P), np.zeros(P), np.zeros(P), np.zeros(P), np.zeros((P, G))]
    for gn, gw in zip(g_nodes, g_weights):
        for acc, part in zip(out, _row_integrals(counts, math.sqrt(tau2 * gn), key_law, offsets, scales, y_step, mean_weights)):
            acc += gw * part
    return RowMoments(*out)


def _row_integrals(counts, sd, law: KeyLaw, offsets, scales, y_step, mean_weights):
    """The six expectations at one node of G (logit random part of standard deviation ``sd``)."""
    y_k = np.outer(scales, law.nodes)  # standardised random part per group and node    (G, N)
    logit = offsets[:, None] + sd * y_k  # (G, N)
    shift = float(logit.max())  # softmax is shift invariant: keep e^l <= 1
    e = np.exp(logit - shift)
    mean_e = e @ law.weights  # (G,)
    row_mass = counts @ mean_e  # (P,)
    e_min = float(e[e > 0].min()) if (e > 0).any() else 1.0
    # Left of the mass of t (t ~ 1/row mass) the integrands fall like t^(j+1) in y = log t, j the power
    # of t of the measure (dt = t dy): 30 units left of the heaviest row leave e^-30 of 1/s (mean
    # weights, j = 0); without it the lowest power is t^2 (j = 1), where 20 units leave e^-40 < 1e-17.
    y_lo = -math.log(float(row_mass.max())) - (30.0 if mean_weights else 20.0)
    y_hi = -math.log(float(row_mass.min())) + math.log(60.0 * float(mean_e.max()) / e_min) + 3.0
    y = np.arange(y_lo, y_hi + y_step, y_step)  # (Y,)
    t = np.exp(y)
    Y, G = y.size, counts.shape[1]
    phi, psi, psi_r, chi, psi4, psi3, first = (np.empty((G, Y)) for _ in range(7))
    w, r2 = law.weights, law.radius2
    radii = bool((r2 != 1.0).any())
    for g in range(G):
        decay = np.exp(-np.outer(t, e[g]))  # (Y, N)
        columns = [w, w * e[g] ** 2, w * y_k[g] * e[g], w * e[g] ** 4, w * e[g] ** 3]
        columns += [w * r2 * e[g] ** 2] if radii else []
        columns += [w * e[g]] if mean_weights else []
        block = decay @ np.stack(columns, axis=1)  # (Y, 4-6)
        phi[g], psi[g], chi[g], psi4[g], psi3[g] = block[:, 0], block[:, 1], block[:, 2], block[:, 3], block[:, 4]
        psi_r[g] = block[:, 5] if radii else block[:, 1]
        first[g] = block[:, -1] if mean_weights else 0.0
    tiny = 1e-300
    with np.errstate(divide="ignore"):
        log_phi = np.where(phi > 0, np.log(phi), -1e10)  # where phi underflows those t carry no mass (and 0 x -inf is nan)
    # (P, Y); one group: the same products as the matrix product, without BLAS's slow inner dimension 1
    log_Phi = np.multiply.outer(counts[:, 0], log_phi[0]) if G == 1 else counts @ log_phi
    inv = 1.0 / np.maximum(phi, tiny)
    rp, rpr, rc, r4, r3, r1 = psi * inv, psi_r * inv, chi * inv, psi4 * inv, psi3 * inv, first * inv  # (G, Y)
    # the measures of 1/s = int e^{-ts} dt, 1/s^2 = int t e^{-ts} dt, 1/s^3 = int t^2/2 e^{-ts} dt,
    # 1/s^4 = int t^3/6 e^{-ts} dt (dt = t dy), times Phi
    if 4.0 * float(y.max()) < 700.0 and G <= 8:
        # Phi once; every integral a matrix product (P, Y) @ (Y, k): sums over groups and pairs of groups
        Phi = np.exp(log_Phi)
        m1, m2, m3, m4 = t * y_step, t**2 * y_step, t**3 * y_step / 2.0, t**4 * y_step / 6.0
        lin = Phi @ np.stack([(rp * m2).T, (rpr * m2).T, (r4 * m4).T, (r3 * m3).T, (r1 * m1).T, (rc * rc * m2).T,
                              (rp * rp * m4).T], axis=0).transpose(1, 0, 2).reshape(Y, -1)  # (P, 7 G)
        lin = lin.reshape(-1, 7, G)
        sum_sq = (counts * lin[:, 0]).sum(1)
        sum_sq_r = (counts * lin[:, 1]).sum(1)
        pair_c = Phi @ (rc[:, None, :] * rc[None, :, :] * m2).reshape(G * G, Y).T  # (P, G G)
        pair_p = Phi @ (rp[:, None, :] * rp[None, :, :] * m4).reshape(G * G, Y).T
        cc = (counts[:, :, None] * counts[:, None, :]).reshape(-1, G * G)
        coupling = (cc * pair_c).sum(1) - (counts * lin[:, 5]).sum(1)
        sum_sq2 = (counts * lin[:, 2]).sum(1) + (cc * pair_p).sum(1) - (counts * lin[:, 6]).sum(1)
        sum_cube = (counts * lin[:, 3]).sum(1)
        mean_weight = lin[:, 4] * (counts > 0) if mean_weights else np.zeros((counts.shape[0], G))
    else:  # products formed in logs: t^4 overflows where Phi and the integrand are tiny; or many groups
        log_dy = math.log(y_step)
        L1, L2, L4 = log_Phi + y + log_dy, log_Phi + 2.0 * y + log_dy, log_Phi + 4.0 * y + log_dy - math.log(6.0)
        L3 = log_Phi + 3.0 * y + log_dy - math.log(2.0)
        sum_sq = _integrate(L2, counts @ rp)
        sum_sq_r = _integrate(L2, counts @ rpr)
        cc = counts @ rc
        coupling = _integrate(L2, cc * cc - counts @ (rc * rc))
        cp = counts @ rp
        sum_sq2 = _integrate(L4, counts @ r4 + cp * cp - counts @ (rp * rp))
        sum_cube = _integrate(L3, counts @ r3)
        mean_weight = (np.stack([_integrate(L1, np.broadcast_to(r1[g], L1.shape)) for g in range(G)], axis=1) * (counts > 0)
                       if mean_weights else np.zeros((counts.shape[0], G)))
    return sum_sq, sum_sq_r, coupling, sum_sq2, sum_cube, mean_weight



def row_law_many(counts, tau2s, key_law: KeyLaw, *, mixture: tuple[np.ndarray, np.ndarray] | None = None,
                 y_step: float = 0.04) -> list[RowMoments]:
    """`row_law` of rows with one key group (NoPE: offsets 0, scales 1) at many base logit
    variances ``tau2s`` at once: ``[row_law(counts, t, key_law, mixture=mixture, y_step=y_step) for t in tau2s]``.

    The same integrals on the same t grids (each node of the mixture keeps its own range in
    ``log t``), evaluated for all nodes of all ``tau2s`` together (`_row_integrals_many`):
    stacked arrays and batched matrix products instead of a Python call per node. The result
    equals the per-node evaluation up to the order of the floating-point sums (tests:
    relative 1e-14).
    """
    counts = np.asarray(counts, dtype=float).reshape(-1)
    if (counts < 1).any():
        raise ValueError("counts must be >= 1 (one key group, at least one key per row)")
    tau2s = [float(t) for t in tau2s]
    for t in tau2s:
        if not (t >= 0 and math.isfinite(t)):
            raise ValueError(f"tau2 must be finite and >= 0, got {t!r}")
    g_nodes, g_weights = (np.ones(1), np.ones(1)) if mixture is None else mixture
    sds = np.array([math.sqrt(t * gn) for t in tau2s for gn in g_nodes])
    parts = _row_integrals_many(counts, sds, key_law, y_step)  # 5 arrays (C M, P)
    P, M = counts.size, g_nodes.size
    out = []
    for c in range(len(tau2s)):
        acc = [np.zeros(P) for _ in range(5)]
        for j, gw in enumerate(g_weights):  # the mixture's sum in row_law's order
            for a, part in zip(acc, parts):
                a += gw * part[c * M + j]
        out.append(RowMoments(*acc, np.zeros((P, 1))))
    return out



def _row_integrals_many(counts: np.ndarray, sds: np.ndarray, law: KeyLaw, y_step: float):
    """`_row_integrals` for one key group (offsets 0, scales 1, no mean weights) at many standard
    deviations ``sds`` (B,): ``(sum_sq, sum_sq_r, coupling, sum_sq2, sum_cube)``, each (B, P).

    Per node the same t grid as `_row_integrals` (``np.arange`` from its own ``y_lo`` to ``y_hi``);
    the grids of a batch are padded to the longest with zero measure. Nodes whose ``t^4`` would
    overflow take `_row_integrals`' logarithmic branch, one at a time.

    Underflow. ``exp`` of an argument below about -708 (a subnormal or zero result) is 6-70 times
    slower than of a normal one, and most of ``e^{-t e^l}`` and ``Phi = phi^m`` underflows at large t
    or m. Both arguments are cut at ``_EXP_FLOOR`` (-700) where ``t <= e^75``: an entry then carries
    at most ``e^-700`` instead of less, and every integrand is ``Phi`` times a measure of at most
    ``t^4 <= e^300`` times a ratio of at most ``max|y|^2`` (``psi/phi``, ``chi/phi``, ... are means of
    ``e^{jl} <= 1`` or ``y e^l`` under a probability), so a sum moves by less than ``e^-390``
    absolute: below the rounding of any row expectation (a shifted ``phi`` moves ``log phi`` by a
    relative ``e^-700/phi``, and where that is not negligible ``Phi`` itself is below ``e^-390``).
    """
    B, P = sds.size, counts.size
    out = [np.empty((B, P)) for _ in range(5)]
    if B == 0:
        return out
    x, w, r2 = law.nodes, law.weights, law.radius2
    one = np.ones(1)
    if (r2 != 1.0).any():  # radii: the general path
        for b in range(B):
            res = _row_integrals(counts[:, None], float(sds[b]), law, np.zeros(1), one, y_step, False)
            for o, v in zip(out, res):
                o[b] = v
        return out
    c_max, c_min = float(counts.max()), float(counts.min())
    logit = sds[:, None] * x[None, :]  # (B, N)
    shift = logit.max(1)
    e = np.exp(logit - shift[:, None])
    mean_e = e @ w  # (B,)
    # per node: psi, chi, psi4, psi3 weights (phi's are w), as in `_row_integrals`
    columns = np.stack([np.broadcast_to(w, e.shape), w * e ** 2, w * x * e, w * e ** 4, w * e ** 3], axis=2)  # (B, N, 5)
    grids, slow = [], []
    for b in range(B):
        eb = e[b]
        pos = eb > 0
        e_min = float(eb[pos].min()) if pos.any() else 1.0
        me = float(mean_e[b])
        y_lo = -math.log(c_max * me) - 20.0
        y_hi = -math.log(c_min * me) + math.log(60.0 * me / e_min) + 3.0
        y = np.arange(y_lo, y_hi + y_step, y_step)
        grids.append(y)
        if not 4.0 * float(y.max()) < 700.0:
            slow.append(b)
    skip = set(slow)
    for b in slow:
        res = _row_integrals(counts[:, None], float(sds[b]), law, np.zeros(1), one, y_step, False)
        for o, v in zip(out, res):
            o[b] = v
    cc = counts * counts
    order = sorted((b for b in range(B) if b not in skip), key=lambda b: grids[b].size)  # similar lengths together
    if not order:
        return out
    N = x.size
    Y_max = max(grids[b].size for b in order)
    n_max = max(1, min(len(order), _BATCH_ELEMENTS // (max(P, N) * Y_max)))
    decay_buf, phi_buf = np.empty(n_max * Y_max * N), np.empty(n_max * P * Y_max)
    start = 0
    while start < len(order):
        Y = grids[order[min(start + n_max, len(order)) - 1]].size
        batch = order[start:start + n_max]
        n = len(batch)
        y = np.empty((n, Y))
        live = np.zeros((n, Y), dtype=bool)
        for i, b in enumerate(batch):
            g = grids[b]
            y[i, :g.size], y[i, g.size:] = g, g[0]  # padding: a finite t, zero measure below
            live[i, :g.size] = True
        t = np.exp(y)
        floor = float(y.max()) <= _FLOOR_Y_MAX  # the cut's bound holds (docstring)
        decay = np.multiply((-t)[:, :, None], e[batch][:, None, :], out=decay_buf[:n * Y * N].reshape(n, Y, N))
        if floor:
            np.maximum(decay, _EXP_FLOOR, out=decay)
        np.exp(decay, out=decay)  # e^{-t e}: the sign flip is exact
        block = decay @ columns[batch]  # (n, Y, 5)
        phi, psi, chi, psi4, psi3 = (block[:, :, k] for k in range(5))
        with np.errstate(divide="ignore"):
            log_phi = np.where(phi > 0, np.log(phi), -1e10)
        Phi = np.multiply(counts[None, :, None], log_phi[:, None, :], out=phi_buf[:n * P * Y].reshape(n, P, Y))
        if floor:
            np.maximum(Phi, _EXP_FLOOR, out=Phi)
        np.exp(Phi, out=Phi)  # (n, P, Y)
        inv = 1.0 / np.maximum(phi, 1e-300)
        rp, rc, r4, r3 = psi * inv, chi * inv, psi4 * inv, psi3 * inv
        m2, m3, m4 = t**2 * y_step, t**3 * y_step / 2.0, t**4 * y_step / 6.0
        m2, m3, m4 = (np.where(live, m, 0.0) for m in (m2, m3, m4))
        lin = Phi @ np.stack([rp * m2, r4 * m4, r3 * m3, rc * rc * m2, rp * rp * m4], axis=2)  # (n, P, 5)
        c = counts[None, :]
        out[0][batch] = out[1][batch] = c * lin[:, :, 0]
        out[2][batch] = cc[None, :] * lin[:, :, 3] - c * lin[:, :, 3]
        out[3][batch] = c * lin[:, :, 1] + cc[None, :] * lin[:, :, 4] - c * lin[:, :, 4]
        out[4][batch] = c * lin[:, :, 2]
        start += n
    return out


# `_row_integrals_many`: elements of its largest work array, the cut of exp's argument and the
# largest log t at which the cut's bound holds.
_BATCH_ELEMENTS = 1 << 18
_EXP_FLOOR = -700.0
_FLOOR_Y_MAX = 75.0

# Below this size of the neglected order tau_bar^2 delta^2 the LayerNorm radii are replaced by
# their r.m.s. inside the softmax: its error is then below the floor of every declared
# tolerance (`theory.tolerance.APPROX_FLOOR`).
RADIUS_ORDER_MIN = 1e-4


def layer_one_rows(positions, tau2_bar: float, d_head: float, d: int, c: float,
                   n_mixture: int = 12, n_mixture_sphere: int | None = None, n_radius: int = 6,
                   n_compressed: int = 24):
    """First-layer ``S_2(m)`` and ``Xi(m)`` with the LayerNorm radii averaged jointly (``eps > 0``).

    With ``c = d eps / sigma_e^2`` the radius ``|e_n|^2 = rho^2 r_n^2`` fluctuates
    (`radius_rule`; independent of the direction for the Gaussian embedding). Given the
    query side, ``l_n = |Pu| |e_n| c_n``: the key law is the sphere coordinate times
    ``r_n`` (`radius_key_law`), and the query radius ``r_m^2`` joins the mixture of
    ``tau^2`` with the two chi-square factors (their tensor rule compressed to 24 nodes,
    `compress_rule`). The value average is
    ``E[sum a_n^2 |e_n|^2] + E[sum_{n != n'} a a' e_n.e_n'] = rho^2 (E[sum a^2 r^2] + Xi_c/(d-1))``
    with ``r_n c_n = l_n/|Pu|`` (so ``Xi_c`` is the coupling of the standardised logits), so
    ``Var(z) = sigma_v^2 rho^2 (S_2 + Xi/(d - 1))`` holds with

        Xi(m) = Xi_c(m) + (d - 1) (E[sum a^2 r^2] - S_2(m)),

    the weight-value coupling through the directions and through the radii. Neglected: the
    key ``n = m`` shares the query's radius (relative ``O(tau_bar^2 delta^2 / m)``).
    Returns ``(positions, S_2, Xi, E[(sum a^2)^2], E[sum a^3])`` (rows of one key: ``1, 0, 1, 1``).
    """
    positions = np.asarray(positions, dtype=np.int64)
    D = d - 1
    mixture = compress_rule(product_rule(scaled_chi2_rule(n_mixture, d_head),
                                         scaled_chi2_rule(n_mixture if n_mixture_sphere is None else n_mixture_sphere, D),
                                         radius_rule(n_radius, d, c)), n_compressed)
    rows = row_law(positions, tau2_bar, radius_key_law(64, D, d, c, n_radius), mixture=mixture)
    s2, s2sq, s3 = rows.sum_sq.copy(), rows.sum_sq2.copy(), rows.sum_cube.copy()
    xi = rows.coupling + D * (rows.sum_sq_r - rows.sum_sq)
    first = positions == 1
    s2[first], xi[first], s2sq[first], s3[first] = 1.0, 0.0, 1.0, 1.0
    return positions, s2, xi, s2sq, s3


def _integrate(log_measure: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``sum_y exp(log_measure) values`` per row; where the measure would overflow, each product
    is formed in logs (the integrand is small where ``t^4`` is huge and ``Phi`` tiny)."""
    if float(np.max(log_measure)) < 700.0:
        return (np.exp(log_measure) * values).sum(1)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        terms = np.sign(values) * np.exp(log_measure + np.log(np.abs(values)))
    return np.where(np.isfinite(terms), terms, 0.0).sum(1)


__all__ = ["KeyLaw", "RowMoments", "row_law", "row_law_many", "layer_one_rows", "RADIUS_ORDER_MIN", "sphere_key_law", "radius_key_law", "radius_rule", "product_rule",
           "chi2_mixture", "gamma_factor_rule", "compress_rule"]
