"""Depth map of the standard MLP: ``K_mlp = sigma_out^2 d_mlp F_phi(sigma_in^2 d E2)``.

Sublayer kind ``mlp`` (`theory.block`); forward function ``simulate.engine.sublayers.mlp``.
It has no separate first-layer step: at layer 0 with eps = 0, ``|e2|^2 = d`` exactly, so
``hook_pre ~ N(0, sigma_in^2 d)`` and every per-position moment is a one-dimensional
Gaussian integral (exact); this map gives them.

``F_phi[m, n] = E[phi(u_m) phi(u_n)]`` for Gaussian pre-activations ``u ~ N(0, C)``, by
Mehler's expansion in Hermite coefficients (`theory._activations.mehler_kernel`, any
activation, truncation bounded); tests hold it against sympy's closed-form conditional
means (`theory._activations.activation_kernel`) for ReLU and GELU.
"""

from __future__ import annotations

import numpy as np

from .. import _activations
from .._kernel_maps import correlation
from . import _gram
from ..block import Sublayer
from ._state import Layer, Stream
from .layernorm import mlp_label


def mlp(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``h = W_out phi(W_in h)``: pre-activation, activation and output taps, and ``K_mlp``."""
    spec, zero, d = at.spec, at.zero, at.d
    activation = sub.options["activation"]
    s_in, s_out, d_mlp = float(spec.sigma_mlp_in), float(spec.sigma_mlp_out_effective), int(spec.mlp_width)
    level, error, assumptions = mlp_label(at)
    pre_cov = s_in**2 * d * stream.E
    at.put("mlp.hook_pre", level, error, assumptions[:1], mean=zero, var=np.diag(pre_cov).copy())
    mu, second = _activations.activation_moments(activation, np.diag(pre_cov))
    at.put("mlp.hook_post", level, error, assumptions[:1], mean=mu, var=second - mu**2)
    F, tail = _activations.mehler_kernel(activation, pre_cov)
    K_mlp = s_out**2 * d_mlp * F
    if stream.norm_images is not None:  # the Gram fluctuation's image (`_gram`): dK_mlp/dE = s_out^2 d_mlp dF/dr / sqrt(E_mm E_nn)
        std = np.sqrt(np.diag(pre_cov))
        b = _activations.hermite_coefficients(activation, std, _gram.SLOPE_ORDER)
        nu = np.sqrt(np.maximum(np.diag(stream.E), 1e-300))
        slope = s_out**2 * d_mlp * _gram.mlp_slope(b, correlation(pre_cov), 0) / np.outer(nu, nu)
        stream.branch_gram = _gram.mlp_write(stream.norm_images, slope, K_mlp, d_mlp)
        stream.branch_gram_pairs = _gram.mlp_write(stream.norm_images_pairs, slope, K_mlp, d_mlp)
    write_branch(sub, stream, at, K_mlp, (level, with_truncation(error, tail, F), assumptions))


def with_truncation(error: str, tail: float, F: np.ndarray) -> str:
    """``error``, naming the Mehler truncation bound ``tail`` (absolute, in F's units) when it is not negligible."""
    if tail > 1e-8 * float(np.min(np.diag(F))):
        return error + f"; Mehler series truncated at {tail:.1e} (absolute)"
    return error


def write_branch(sub: Sublayer, stream: Stream, at: Layer, K_mlp: np.ndarray, label) -> None:
    """``hook_mlp_out`` and the branch the residual write adds (standard MLP and SwiGLU)."""
    level, error, assumptions = label
    at.put("hook_mlp_out", level, error, assumptions, mean=at.zero, var=np.diag(K_mlp).copy())
    stream.branch = K_mlp
    stream.branch_kind = sub.kind
    stream.branch_label = (level, error, assumptions)
    stream.block_assumptions = tuple(dict.fromkeys(stream.block_assumptions + assumptions))
