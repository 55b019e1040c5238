"""Depth map of a residual write: ``K <- K + K_branch``.

Sublayer kind ``residual`` (`theory.block`); layer-1 step `theory.steps.residual`,
forward function ``simulate.engine.sublayers.residual``. Exact given the kernels:
``E[x_m . W z_n] = 0`` because the branch's last matrix has mean zero and is independent
of ``x``. Also the entry of the block (`entry`: ``hook_resid_pre``).
"""

from __future__ import annotations

import numpy as np

from .._kernel_maps import key_spread, uniform_average
from .._result import Level
from ._fluctuation import combine
from ..block import ENTRY_TAP, Sublayer
from ._state import Layer, Stream

_GAINS = {"attention": "sigma_o, sigma_v", "mlp": "sigma_mlp_in, sigma_mlp_out", "swiglu": "sigma_mlp_in, sigma_mlp_out"}


def entry(stream: Stream, at: Layer) -> None:
    """``hook_resid_pre``: the stream entering the block (exact at layer 1: the embedding)."""
    level = Level.EXACT if at.first else Level.APPROXIMATE  # the embedding is exact; deeper, the closure
    at.put(ENTRY_TAP, level, "exact" if at.first else "as the kernel", at.closure, mean=at.zero, var=np.diag(stream.K).copy())
    at.keep(ENTRY_TAP, stream.K)
    stream.block_assumptions = ()


def residual(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``x = x + h``: add the branch's kernel, check it stays finite, keep the kernel."""
    level, error, assumptions = stream.branch_label
    if stream.branch_kind == "attention" and stream.branch_spread_rel_var is not None:
        # the per-network fluctuation of the keys' spread (`_fluctuation.combine`); an MLP write follows its input
        T = stream.K.shape[0]
        before = stream.spread_rel_var if stream.spread_rel_var is not None else np.zeros(T)
        v, w = key_spread(stream.K, uniform_average(stream.K)), key_spread(stream.branch, uniform_average(stream.branch))
        stream.spread_rel_var = combine(before, v, w, stream.branch_spread_rel_var)
    stream.K = stream.K + stream.branch
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
