"""Depth map of a residual write: ``K <- K + K_branch``.

Sublayer kind ``residual`` (`theory.block`); first-layer step `theory.steps.residual`,
forward function ``simulate.engine.sublayers.residual``. Exact given the kernels:
``E[x_m . W z_n] = 0`` because the branch's last matrix has mean zero and is independent
of ``x``. Also the entry of the block (`entry`: ``hook_resid_pre``).
"""

from __future__ import annotations

import numpy as np

from .._kernel_maps import key_spread
from .._result import Level
from . import _gram
from ._fluctuation import combine
from ..block import ENTRY_TAP, Sublayer
from ._state import Layer, Stream

_GAINS = {"attention": "sigma_o, sigma_v", "mlp": "sigma_mlp_in, sigma_mlp_out", "swiglu": "sigma_mlp_in, sigma_mlp_out"}


def entry(stream: Stream, at: Layer) -> None:
    """``hook_resid_pre``: the stream entering the block (exact at layer 0: the embedding)."""
    level = Level.EXACT if at.first else Level.APPROXIMATE  # the embedding is exact; deeper, the closure
    at.put(ENTRY_TAP, level, "exact" if at.first else "as the kernel", at.closure, mean=at.zero, var=np.diag(stream.K).copy())
    at.keep(ENTRY_TAP, stream.K)
    stream.block_assumptions = ()
    if at.first and at.best and _gram.carried(at.spec):  # the Gram fluctuation starts as the embedding's Wishart
        stream.gram = _gram.entry(stream.K, sphere_dof(at.spec))
        stream.gram_pairs = _gram.entry(stream.K, sphere_dof(at.spec))


def sphere_dof(spec) -> int:
    """``D``: the norm's sphere (d - 1 after LayerNorm's centring, d after RMSNorm)."""
    d = int(spec.d_model)
    return d - 1 if getattr(spec, "normalization", "layernorm") == "layernorm" else d


def _gram_write(stream: Stream, at: Layer, K_new: np.ndarray) -> None:
    """The stream's Gram components after this write (`theory.depth_maps._gram`), in both views
    (without and with the radial noise, `_gram.normalised_images`)."""
    if stream.gram is None or stream.norm_images is None:
        stream.branch_gram = stream.branch_gram_pairs = None
        return
    spec = at.spec
    views = ((stream.gram, stream.norm_images, stream.branch_gram),
             (stream.gram_pairs, stream.norm_images_pairs, stream.branch_gram_pairs))
    updated = []
    for comps, images, branch_gram in views:
        if stream.branch_kind == "attention":
            gain = float(spec.sigma_o_effective) ** 2 * float(spec.sigma_v) ** 2 * at.d**2
            inherited, own = _gram.attention_write(images, stream.branch, stream.E, gain,
                                                   int(spec.n_heads), int(spec.kv_heads), int(spec.d_head))
        elif branch_gram is not None:
            inherited, own = branch_gram
        else:
            inherited, own = [np.zeros_like(K_new) for _ in comps], []
        updated.append(_gram.add_write(comps, inherited, own, stream.K, K_new, sphere_dof(spec)))
    stream.gram, stream.gram_pairs = updated
    stream.branch_gram = stream.branch_gram_pairs = None


def residual(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``x = x + h``: add the branch's kernel, check it stays finite, keep the kernel."""
    level, error, assumptions = stream.branch_label
    if stream.branch_kind == "attention" and stream.branch_spread_rel_var is not None:
        # the per-network fluctuation of the keys' spread (`_fluctuation.combine`); an MLP write follows its input
        T = stream.K.shape[0]
        before = stream.spread_rel_var if stream.spread_rel_var is not None else np.zeros(T)
        v, w = key_spread(stream.K), key_spread(stream.branch)  # (the diagonals of their uniform averages only)
        stream.spread_rel_var = combine(before, v, w, stream.branch_spread_rel_var)
    if stream.branch_kind == "attention" and stream.branch_row_radial is not None:
        # the rows' per-network scale of this write adds to each position's norm (an MLP write adds none)
        mean, var = stream.branch_row_radial
        T = stream.K.shape[0]
        stream.row_radial_mean = (stream.row_radial_mean if stream.row_radial_mean is not None else np.zeros(T)) + mean
        stream.row_radial_var = (stream.row_radial_var if stream.row_radial_var is not None else np.zeros(T)) + var
    stream.branch_row_radial = None
    K_new = stream.K + stream.branch
    _gram_write(stream, at, K_new)
    stream.K = K_new
    stream.writes += 1
    suffix = sub.taps[0].suffix
    at.put(suffix, level, error, stream.block_assumptions, mean=at.zero, var=np.diag(stream.K).copy())
    if not np.all(np.isfinite(stream.K)):
        fields = _GAINS[stream.branch_kind]
        sublayer = "attention" if stream.branch_kind == "attention" else "MLP"
        raise ValueError(
            f"n_layers, {fields}: the residual variance overflows float64 after the {sublayer} sub-block of "
            f"layer {at.layer} (each block multiplies it by its gain); use fewer layers or smaller {fields}")
    at.keep(suffix, stream.K)
    at.say(f"layer {at.layer}: {suffix.removeprefix('hook_')} var at m=1: {stream.K[0, 0]:.4g}, "
           f"m={stream.K.shape[0]}: {stream.K[-1, -1]:.4g}")
