"""Depth map of the standard MLP: ``K_mlp = sigma_out^2 d_mlp F_phi(sigma_in^2 d E2)``.

Sublayer kind ``mlp`` (`theory.block`); forward function ``simulate.engine.sublayers.mlp``.
It has no separate layer-1 step: at layer 1 with eps = 0, ``|e2|^2 = d`` exactly, so
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
    write_branch(sub, stream, at, s_out**2 * d_mlp * F, (level, with_truncation(error, tail, F), assumptions))


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
