"""Depth map of the SwiGLU MLP: ``K_mlp = sigma_out^2 d_mlp (F_silu(C) * C)``, ``C = sigma_in^2 d E2``.

Sublayer kind ``swiglu`` (`theory.block`); forward function
``simulate.engine.sublayers.swiglu``. ``h = W_down (silu(g) * u)`` with the gate
``g = W_gate e`` and the up projection ``u = W_up e`` drawn independently, both with std
``sigma_mlp_in``; ``W_down`` with std ``sigma_mlp_out`` (times the residual write scale).

Given the normalised stream, one hidden unit's ``(g_m)`` and ``(u_m)`` over positions are
two *independent* Gaussian vectors with the same covariance ``C = sigma_in^2 d E2``, so

    E[silu(g_m) u_m silu(g_n) u_n] = E[silu(g_m) silu(g_n)] E[u_m u_n] = F_silu[m, n] C[m, n],

``hook_post`` has mean ``E[silu(g)] E[u] = 0`` and variance ``E[silu(g)^2] C_mm``.

Off the diagonal the covariance ``C`` that the gate and the up projection see is the
*Gram matrix of this input*, ``sigma_in^2 e_m . e_n``, not its mean: given the input,
Mehler's expansion (`theory._activations.hermite_coefficients`) gives
``E[silu(g_m) silu(g_n) u_m u_n | e] = sqrt(C_mm C_nn) sum_k b_k(s_m) b_k(s_n) r^{k+1}``
with ``r = cos(e_m, e_n)``, and the average over inputs needs ``E[r^{k+1}]``, not
``E[r]^{k+1}``. The product with ``u`` makes the ``k = 1`` term quadratic in ``r``: for
independent positions ``E[r] = 0`` but ``E[r^2] = 1/D``, an off-diagonal kernel
``b_1^2 C/D`` that the kernel-only map (``F_silu(E[C]) * E[C]``) misses; summed over the
m^2 key pairs of a causal average it moves a deeper ``hook_z`` by several percent at
d = 64. Here ``E[r^j] = rbar^j + j(j-1)/2 rbar^(j-2) V + O(D^-2)`` with ``rbar`` the mean
cosine (`theory._kernel_maps.gaussian_cosine_mean`) and ``V = (1 - rho^2)^2 / D`` the
variance of the cosine of two Gaussian vectors of correlation ``rho`` in ``D`` dimensions
(the delta method; D = d - 1 after LayerNorm's centring, d after RMSNorm). The radii are
held at their means (``eps``-sized fluctuations neglected).

Exact at layer 0 with eps = 0 on the diagonal (then ``|e2|^2 = d`` exactly), as the
standard MLP; the off-diagonal carries the ``O(D^-2)`` remainder of the cosine moments.
"""

from __future__ import annotations

import numpy as np

from .. import _activations
from .._kernel_maps import correlation
from ..block import Sublayer
from ._state import Layer, Stream
from . import _gram
from .layernorm import mlp_label
from .mlp import with_truncation, write_branch


def swiglu(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``h = W_down (silu(W_gate h) * W_up h)``: gate, up, product and output taps, and ``K_mlp``."""
    spec, zero, d = at.spec, at.zero, at.d
    s_in, s_out, d_mlp = float(spec.sigma_mlp_in), float(spec.sigma_mlp_out_effective), int(spec.mlp_width)
    level, error, assumptions = mlp_label(at)
    C = s_in**2 * d * stream.E  # covariance of the gate (and of the up projection) over positions
    var = np.diag(C).copy()
    at.put("mlp.hook_pre", level, error, assumptions[:1], mean=zero, var=var)
    at.put("mlp.hook_pre_linear", level, error, assumptions[:1], mean=zero, var=var.copy())
    _, second = _activations.activation_moments("silu", var)
    at.put("mlp.hook_post", level, error, assumptions[:1], mean=zero, var=second * var)
    if at.best:
        dof = d - 1 if spec.normalization == "layernorm" else d  # the sphere the norm projects onto
        FC, tail = gated_kernel(C, correlation(stream.K), dof, stream.cos_var_excess)
    else:  # the kernel-only map: the input's Gram matrix replaced by its mean
        F, tail = _activations.mehler_kernel("silu", C)
        FC = F * C
    K_mlp = s_out**2 * d_mlp * FC
    if at.best and stream.norm_images is not None:  # the Gram fluctuation's image (`_gram`): dK/dE = s_out^2 d_mlp s_in^2 d dF/dr
        b = _activations.hermite_coefficients("silu", np.sqrt(var), _gram.SLOPE_ORDER)
        slope = s_out**2 * d_mlp * s_in**2 * d * _gram.mlp_slope(b, correlation(C), 1)
        stream.branch_gram = _gram.mlp_write(stream.norm_images, slope, K_mlp, d_mlp)
        stream.branch_gram_pairs = _gram.mlp_write(stream.norm_images_pairs, slope, K_mlp, d_mlp)
    write_branch(sub, stream, at, K_mlp, (level, with_truncation(error, tail, FC), assumptions))


def gated_kernel(C: np.ndarray, rho: np.ndarray, dof: int, var_excess: np.ndarray | None = None,
                 order: int = 60) -> tuple[np.ndarray, float]:
    """``E[silu(g_m) u_m silu(g_n) u_n]`` for gate and up projections of one normalised input.

    ``C``: the mean covariance of the gate over positions (T, T); ``rho``: the correlation
    of the stream the norm normalised (its cosine's variance); ``dof``: the norm's
    dimensions. Returns the kernel and the Mehler truncation bound (absolute).
    """
    var = np.diag(C).copy()
    std = np.sqrt(var)
    b = _activations.hermite_coefficients("silu", std, order)  # (T, K+1)
    rbar = correlation(C)
    np.fill_diagonal(rbar, 0.0)
    V = (1.0 - np.clip(rho, -1.0, 1.0) ** 2) ** 2 / dof
    if var_excess is not None:  # the Gram fluctuation's excess over the closure (`theory.depth_maps._gram`)
        V = np.maximum(V + var_excess, 0.0)
    np.fill_diagonal(V, 0.0)
    total = np.zeros_like(C)
    below, power = np.zeros_like(C), np.ones_like(C)  # rbar^(k-1) (0 at k = 0, unused) and rbar^k
    for k in range(order + 1):
        j = k + 1
        moment = power * rbar + 0.5 * j * (j - 1) * below * V  # E[r^j] = rbar^j + C(j, 2) rbar^(j-2) V
        total += moment * np.outer(b[:, k], b[:, k])
        below, power = power, power * rbar
    FC = np.sqrt(np.outer(var, var)) * total
    _, second = _activations.activation_moments("silu", var)
    np.fill_diagonal(FC, second * var)
    missing = float(np.max(second - (b * b).sum(axis=1)))
    r_max = float(np.max(np.abs(rbar))) if rbar.size > 1 else 0.0
    # The terms beyond ``order``: |E[r^j]| <= r_max^j + j^2 r_max^(j-2) V / 2, and sum_k>order b_k^2 <= missing.
    tail_moment = r_max ** (order + 1) + (order + 2) ** 2 * r_max ** order * float(np.max(V))
    return FC, max(missing, 0.0) * float(np.max(var)) * tail_moment
