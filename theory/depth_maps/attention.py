"""Depth map of causal softmax attention: ``K_attn = sigma_o^2 sigma_v^2 d^2 A(E)``.

Sublayer kind ``attention`` (`theory.block`); layer-1 steps `theory.steps.attention`,
forward function ``simulate.engine.sublayers.attention``. Given the normalised kernel
``E`` (`theory.depth_maps.layernorm`)::

    A = U(E) + diag(v (S_2 - 1/m) + v Xi/(d-1))        E[ebar_m . ebar_n]/d, ebar_m = sum_k a_mk e_k

* ``U[m, n] = (1/(mn)) sum_{k<=m, k'<=n} E[k, k']`` is uniform causal attention (the
  paper's picture, now with correlated keys);
* ``v_m`` is the spread of the keys ``k <= m`` about their centroid (`key_spread`): a
  part shared by all keys shifts every logit of a row alike, so only ``v_m`` makes the
  softmax non-uniform. ``S_2(m)`` and the weight-value coupling ``Xi(m)`` are the
  layer-1 row expectations (`theory._quadrature.row_expectations`, exact for i.i.d.
  keys) at the effective logit variance ``tau_m^2 = s^2 sigma_q^2 sigma_k^2 d_head d^2
  nu_1(m) v_m`` (`theory.quantities.mean_logit_variance` with ``rho^2 = d nu_1`` and
  ``d v_m``). At layer 1 (``E = nu_1 I``) this is the layer-1 result exactly.

Leading level: uniform attention, ``A = U``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.interpolate import CubicSpline

from .._domain import check_logit_variance
from .._kernel_maps import key_spread, uniform_average
from .._quadrature import row_expectations
from .._result import Level
from ..block import Sublayer
from ..quantities import logit_scale_squared
from ._state import Layer, Stream
from .layernorm import opening_label

# Row quadrature is exact at every position up to this one and interpolated in log m
# (cubic spline of m S_2(m) and Xi(m), both smooth in log m) on this many points beyond.
_EXACT_ROWS = 32
_LOG_ROWS = 48
# Effective logit variances within this relative range share one quadrature.
_TAU_RTOL = 1e-4
# Chebyshev nodes in tau^2 by the ratio max/min over rows (measured: relative error of
# S_2 below 1e-7 with these counts up to a ratio of 8; tests).
_TAU_NODES = ((2.0, 5), (4.0, 7), (math.inf, 9))

def softmax_rows(tau2: np.ndarray, d_head: int, sphere_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``S_2(m)`` and ``Xi(m)`` for m = 1..T at per-row effective logit variances ``tau2`` (T,).

    Exact quadrature (`row_expectations`) at m <= 32 and on 48 log-spaced rows beyond,
    a cubic spline in log m in between; a spread of ``tau2`` over rows is handled by
    polynomial interpolation in tau^2 through 5-9 Chebyshev nodes (both are analytic in
    tau^2). Tests compare with direct quadrature (relative 2e-6 for S_2).
    """
    T = tau2.size
    pos = np.arange(1, T + 1)
    grid = np.unique(np.concatenate([pos[:_EXACT_ROWS], np.round(np.geomspace(min(T, _EXACT_ROWS), T, _LOG_ROWS)).astype(int)]))
    # 8 + 6 mixture nodes: relative error < 1e-6 up to tau^2 = 2 (tests; 12 is the default)
    n_sphere = 6 if sphere_dim >= 100 else 8
    active = tau2[1:] if T > 1 else tau2
    lo, hi = float(active.min()), float(active.max())

    def on_grid(t2: float) -> tuple[np.ndarray, np.ndarray]:
        rows = row_expectations(grid, t2, d_head, sphere_dim, n_mixture=8, n_mixture_sphere=n_sphere)
        if grid.size == T:
            return rows.sum_sq, rows.coupling
        lm = np.log(grid)
        s2 = CubicSpline(lm, grid * rows.sum_sq)(np.log(pos)) / pos
        xi = CubicSpline(lm, rows.coupling)(np.log(pos))
        return s2, xi

    if hi <= lo * (1 + _TAU_RTOL) or hi == 0:
        s2, xi = on_grid(0.5 * (lo + hi))
    else:
        count = next(n for ratio, n in _TAU_NODES if hi <= ratio * lo)
        k = np.arange(count)
        nodes = 0.5 * (lo + hi) + 0.5 * (hi - lo) * np.cos((2 * k + 1) * np.pi / (2 * count))
        tables = [on_grid(float(t)) for t in nodes]
        # Lagrange weights of each row's tau^2 on the nodes
        weights = np.ones((T, count))
        for j in range(count):
            for i in range(count):
                if i != j:
                    weights[:, j] *= (tau2 - nodes[i]) / (nodes[j] - nodes[i])
        s2 = sum(weights[:, j] * tables[j][0] for j in range(count))
        xi = sum(weights[:, j] * tables[j][1] for j in range(count))
    s2[0], xi[0] = 1.0, 0.0  # one key: a_11 = 1
    return s2, xi


def attention(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``h = W_o z``: the taps of the attention path from ``E``, and the branch kernel ``K_attn``."""
    spec, E, nu2, pos, zero, d = at.spec, stream.E, stream.nu2, at.pos, at.zero, at.d
    T, d_head, D = E.shape[0], int(spec.d_head), d - 1
    scale2 = logit_scale_squared(d_head, spec.attn_scale)
    sq, sk, sv, so = float(spec.sigma_q), float(spec.sigma_k), float(spec.sigma_v), float(spec.sigma_o_effective)
    nu1 = np.diag(E).copy()
    level, error, assumptions = opening_label(at)
    for which, sigma in (("q", sq), ("k", sk), ("v", sv)):
        at.put(f"attn.hook_{which}", level, error, assumptions, mean=zero, var=sigma**2 * d * nu1)
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
        s2, xi = softmax_rows(tau2, d_head, D)
        at.say(f"layer {at.layer}: effective logit variance {tau2[1:].min():.4g}..{tau2[1:].max():.4g}")
        A = U.copy()
        A[np.diag_indices(T)] += spread * (s2 - 1.0 / pos) + spread * xi / D
        att_assume = closure + (
            "softmax rows: keys with the same spread about their centroid, treated as i.i.d.",
            "off-diagonal attention terms uniform (E[a_mk a_nk'] = 1/(mn), m != n)",
        ) if not at.first else ("given the query side, keys i.i.d. (exact at layer 1)",)
    else:
        s2 = 1.0 / pos
        A = U
        att_assume = closure + ("uniform attention a_mn = 1/m",)
    err_att = ("exact (quadrature, relative < 1e-6)" if at.exact_here else
               "layer 1: O(tau^2 delta^2); deeper: measured per layer by verify" if at.best else
               "relative O(tau^2) at small m, e^{tau^2} - 1 at large m")
    a_lvl = Level.EXACT if at.exact_here else Level.APPROXIMATE
    at.put("attn.hook_pattern", a_lvl, err_att, att_assume, mean=1.0 / pos, sum_sq=s2)
    at.put("attn.hook_z", a_lvl, err_att, att_assume, mean=zero, var=sv**2 * d * np.diag(A))
    K_attn = so**2 * sv**2 * d**2 * A
    at.put("hook_attn_out", a_lvl, err_att, att_assume, mean=zero, var=np.diag(K_attn).copy())
    stream.branch = K_attn
    stream.branch_kind = sub.kind
    stream.branch_label = (a_lvl, err_att, att_assume)
    stream.block_assumptions = tuple(dict.fromkeys(stream.block_assumptions + att_assume))
