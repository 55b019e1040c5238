"""Depth map of a LayerNorm: ``E = LN(K)``, the kernel of the normalised stream.

Sublayer kind ``layernorm`` (`theory.block`); first-layer step `theory.steps.layernorm`,
forward function ``simulate.engine.sublayers.layernorm``.

Best level (`theory._kernel_maps.layernorm_kernel`): ``nu_1 = E|e|^2/d`` on the diagonal
(the finite-d radius law with eps, widened by the per-sample fluctuation of the position's norm:
`radial_law`), the mean cosine of Gaussian channel pairs off it.
Leading level: the correlation matrix (eps neglected, variance 1).

The result is labelled by the branch the norm opens: before the attention it is exact at
layer 0 at the best level for any eps (its input is the Gaussian embedding); before the
MLP it is as exact as the MLP branch (its input is the attention's residual write).
"""

from __future__ import annotations

import numpy as np

from .._kernel_maps import RadialLaw, correlation, layernorm_kernel
from .._result import Level
from ..block import Sublayer
from . import _gram
from ._state import CLOSURE, FLUCTUATION, GRAM_FLUCTUATION, Layer, Stream


def normalise(K: np.ndarray, at: Layer, stream: Stream | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(E, nu2)``: the normalised kernel and ``E|e|^4/d^2`` per position."""
    if at.best:
        return layernorm_kernel(K, at.d, at.eps, radial=radial_law(K, stream, at.d - 1, at.eps))
    return correlation(K), np.ones(K.shape[0])  # a zero-variance position gives 0, not 0/0


def radial_law(K: np.ndarray, stream: Stream | None, dof: int, eps: float) -> RadialLaw | None:
    """The per-sample law of each position's squared norm beyond ``chi^2_D`` (best level, eps > 0).

    With eps > 0 the norm's radius ``R = X/(X + c)`` is concave in ``X = |Px|^2/var``, so its mean
    falls with the spread of ``X`` (``(1/2) R'' Var X``); at ``c = d eps/var`` of order 1 (eps
    comparable to the stream's variance, C.json's ``sigma_embed = 0.002``) that is percent-level.
    Two sources beyond the closure's ``2/D``, each derived where it arises:

    * the stream's Gram diagonal (`theory.depth_maps._gram`, the ``gram_pairs`` view):
      ``Var(G_mm)/K_mm^2 = sum_c 2 q_c (K^c_mm)^2 / K_mm^2`` (``2/D`` for the closure alone; the
      values' Wishart over ``W_v``, ``W_o`` and the MLP's hidden units add to it);
    * the attention rows of one network: position m's write is ``A_mm = U_mm + v_m (S_m - 1/m)``
      per head with ``S_m = sum_k a_mk^2`` random, so the write has variance
      ``b_m = diag(K_attn)`` scaled by a factor of relative variance
      ``v_m^2 Var(S_m) / (H A_mm^2)`` (``Var(S_m) = E[(sum a^2)^2] - S_2^2``, the row law), rows
      of the ``H`` heads independent given the keys; writes add (independent networks per layer).

    Neglected: a write's norm following the fluctuation of its own input (the next attention
    averages it over keys; the MLP reads a normalised input), correlations between the two
    sources, and the factor's law beyond its variance (Gamma). ``None`` where nothing is carried.
    """
    if eps == 0 or stream is None:
        return None
    T = K.shape[0]
    diag = np.diag(K)
    safe = np.where(diag > 0, diag, np.inf)
    excess = np.zeros(T)
    if stream.gram_pairs:
        total = sum(2.0 * c.q * np.diag(c.K) ** 2 for c in stream.gram_pairs)
        excess = total / safe**2 - 2.0 / dof
    share, kappa = np.zeros(T), np.zeros(T)
    if stream.row_radial_mean is not None:
        b = stream.row_radial_mean
        share = np.minimum(b / safe, 1.0)
        kappa = np.divide(stream.row_radial_var, b**2, out=np.zeros(T), where=b > 0)
    if not (np.any(excess != 0) or np.any(kappa > 0)):
        return None
    return RadialLaw(excess, share, kappa)


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
    stream.E, stream.nu2 = normalise(stream.K, at, stream)
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
