"""Depth map of a LayerNorm: ``E = LN(K)``, the kernel of the normalised stream.

Sublayer kind ``layernorm`` (`theory.block`); first-layer step `theory.steps.layernorm`,
forward function ``simulate.engine.sublayers.layernorm``.

Best level (`theory._kernel_maps.layernorm_kernel`): ``nu_1 = E|e|^2/d`` on the diagonal
(the finite-d radius law with eps), the mean cosine of Gaussian channel pairs off it.
Leading level: the correlation matrix (eps neglected, variance 1).

The result is labelled by the branch the norm opens: before the attention it is exact at
layer 0 at the best level for any eps (its input is the Gaussian embedding); before the
MLP it is as exact as the MLP branch (its input is the attention's residual write).
"""

from __future__ import annotations

import numpy as np

from .._kernel_maps import correlation, layernorm_kernel
from .._result import Level
from ..block import Sublayer
from . import _gram
from ._state import CLOSURE, FLUCTUATION, GRAM_FLUCTUATION, Layer, Stream


def normalise(K: np.ndarray, at: Layer) -> tuple[np.ndarray, np.ndarray]:
    """``(E, nu2)``: the normalised kernel and ``E|e|^4/d^2`` per position."""
    if at.best:
        return layernorm_kernel(K, at.d, at.eps)
    return correlation(K), np.ones(K.shape[0])  # a zero-variance position gives 0, not 0/0


def opening_label(at: Layer) -> tuple[Level, str, tuple[str, ...]]:
    """Label of the norm opening the attention branch (and of the projections and logits after it)."""
    level = Level.EXACT if at.first and at.best else Level.APPROXIMATE
    error = "exact" if (at.first and at.best) else ("O(1/d) from the closure" if at.best else "O(eps/Var(x)) + O(1/d)")
    assumptions = at.closure + (("eps neglected, LayerNorm output variance 1",) if not at.best else ())
    return level, error, assumptions


def mlp_label(at: Layer) -> tuple[Level, str, tuple[str, ...]]:
    """Label of the MLP branch: exact only where the first layer is (eps = 0: |e2|^2 = d exactly)."""
    level = Level.EXACT if at.exact_here else Level.APPROXIMATE
    return level, "exact (quadrature)" if at.exact_here else "O(1/d) from the closure", (
        CLOSURE, GRAM_FLUCTUATION if at.best else FLUCTUATION)


def layernorm(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``h = LN(x)``: ``E, nu2 = LN(K)``; the tap's variance is ``nu_1 = diag(E)``."""
    stream.E, stream.nu2 = normalise(stream.K, at)
    with_gram_fluctuation(stream, at, at.d - 1)
    put_normalised(sub, stream, at)


def with_gram_fluctuation(stream: Stream, at: Layer, dof: int) -> None:
    """The best level's second-order term of the norm (`theory.depth_maps._gram`): the mean cosine's
    excess over the closure added to ``E`` off the diagonal, the components' images kept for the branch."""
    if not at.best or not stream.gram:
        stream.norm_images, stream.norm_images_pairs, stream.cos_var_excess = None, None, None
        return
    nu1 = np.diag(stream.E).copy()
    mean, var = _gram.excess(stream.K, stream.gram, dof)
    bound = np.sqrt(np.outer(nu1, nu1))
    stream.E = np.clip(stream.E + mean * bound, -bound, bound)  # a cosine stays in [-1, 1]
    stream.cos_var_excess = var
    stream.norm_images = _gram.normalised_images(stream.K, stream.gram, nu1, radii=False)
    stream.norm_images_pairs = _gram.normalised_images(stream.K, stream.gram_pairs, nu1, radii=True)


def put_normalised(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """The norm's tap (``nu_1 = diag(E)``), labelled by the branch the norm opens (LayerNorm and RMSNorm)."""
    if stream.opens == "attention":
        level, error, assumptions = opening_label(at)
    else:
        level, error, assumptions = mlp_label(at)
        assumptions = assumptions[:1]
    at.put(sub.taps[0].suffix, level, error, assumptions, mean=at.zero, var=np.diag(stream.E).copy())
