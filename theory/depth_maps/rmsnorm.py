"""Depth map of an RMSNorm: ``E = RMSNorm(K)``, the kernel of the normalised stream.

Sublayer kind ``rmsnorm`` (`theory.block`); forward function
``simulate.engine.sublayers.rmsnorm``. ``RMSNorm(x) = x / sqrt(|x|^2/d + eps)`` (gain 1):
no mean is removed, so the radius law is that of ``|x|^2 = K_mm chi^2_d`` (all ``d``
dimensions, where LayerNorm keeps ``d - 1``) and the angle that of two Gaussian vectors
in ``d`` dimensions (`theory._kernel_maps.layernorm_kernel` with ``dof = d``).

Best level: ``nu_1 = E[X/(X + c)]``, ``X ~ chi^2_d``, ``c = d eps / K_mm`` on the
diagonal; ``E[cos] E[sqrt R_m] E[sqrt R_n]`` off it. Exact at layer 0 for Gaussian
inputs at any eps (as for LayerNorm). Leading level: the correlation matrix (eps
neglected, output variance 1).
"""

from __future__ import annotations

import numpy as np

from .._kernel_maps import correlation, layernorm_kernel
from ..block import Sublayer
from ._state import Layer, Stream
from .layernorm import put_normalised, radial_law, with_gram_fluctuation


def rms_normalise(K: np.ndarray, at: Layer, stream: Stream | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(E, nu2)``: the RMS-normalised kernel and ``E|e|^4/d^2`` per position (the radius law as
    LayerNorm's, `theory.depth_maps.layernorm.radial_law`, on the sphere of all d dimensions)."""
    if at.best:
        return layernorm_kernel(K, at.d, at.eps, dof=at.d, radial=radial_law(K, stream, at.d, at.eps))
    return correlation(K), np.ones(K.shape[0])


def rmsnorm(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``h = x / rms(x)``: ``E, nu2 = RMSNorm(K)``; the tap's variance is ``nu_1 = diag(E)``."""
    stream.E, stream.nu2 = rms_normalise(stream.K, at, stream)
    with_gram_fluctuation(stream, at, at.d)
    put_normalised(sub, stream, at)
