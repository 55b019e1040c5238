"""The functional, batched forward pass: the declared block (`theory.block`), sublayer by sublayer.

Every tensor carries a leading network axis ``S`` (independent networks side by side)
and a sequence axis ``B`` (sequences through the same network), so that small models
still fill the hardware. `forward` interprets the one declaration of the block: for each
layer, each `theory.block.Sublayer` runs the function of its kind (`FORWARD`), so a
pre-LN block reads as the math (nanoGPT's ``model.py``)::

    x = x + attn(ln1(x))          # hook_resid_mid
    x = x + mlp(ln2(x))           # hook_resid_post

and an attention-only block as ``x = x + attn(ln1(x))`` (``hook_resid_post``, as in
TransformerLens). Weights enter only through the projection callable (`Projections`).
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from theory import ModelSpec
from theory.block import ENTRY_TAP, block
from theory.taps import all_taps

from .positional import input_scheme
from .projections import Project
from .stats import MASKED_TAPS
from .sublayers import FORWARD, Context


class _StopForward(Exception):
    """Raised by the tap recorder after the last tap a pass needs; caught once, in `forward`."""


class _TapRecorder:
    """Keeps the taps asked for; ends the pass after ``stop_after``."""

    def __init__(self, record: set[str], stop_after: str | None):
        self.record, self.stop_after = record, stop_after
        self.taps: dict[str, torch.Tensor] = {}

    def __call__(self, name: str, value: torch.Tensor) -> None:
        if name in self.record:
            self.taps[name] = value
        if name == self.stop_after:
            raise _StopForward


def hand_written_attention(taps: Iterable[str]) -> bool:
    """Whether a pass recording ``taps`` materialises scores and pattern (in every layer:
    they are tapped somewhere) instead of running the fused attention kernel."""
    return any(t.endswith(MASKED_TAPS) for t in taps)


def last_needed(spec: ModelSpec, record: Iterable[str]) -> str | None:
    """The last tap, in forward order, among ``record`` (None when nothing is recorded)."""
    record = list(record)
    if not record:
        return None
    order = {name: i for i, name in enumerate(all_taps(spec.n_layers, spec))}  # the spec's own block (SwiGLU's taps)
    unknown = [t for t in record if t not in order]
    if unknown:
        raise ValueError(
            f"tap {unknown[0]!r} is not a tap of this network ({spec.n_layers} layer(s)"
            f"{', attention only: its blocks end at hook_resid_post' if spec.attn_only else ''})"
        )
    return max(record, key=order.__getitem__)


def forward(
    spec: ModelSpec,
    x: torch.Tensor,
    project: Project,
    record: Iterable[str] = (),
    stop_after: str | None = "auto",
    pos_embed: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Run ``x`` (S, B, T, d_model) through the network; return the recorded taps.

    Tap shapes: residual/LayerNorm/outputs (S, B, T, d_model); q, k, v, z
    (S, B, T, n_heads, d_head); scores and pattern (S, B, n_heads, T, T) with query on
    axis -2 and key on axis -1 (entries with key > query are not part of the tap: scores
    hold the raw logits there and the pattern zeros). ``stop_after="auto"`` stops after
    the last recorded tap; ``None`` runs every layer.

    Positional variants (`simulate.engine.positional`): ``learned`` and ``sinusoidal`` add
    a table to ``x`` before the first block (``hook_resid_pre`` of layer 0 includes it);
    ``rope`` rotates q and k after ``hook_q``/``hook_k`` (which stay unrotated, as in
    TransformerLens); ``alibi`` adds its bias to the logits (``hook_attn_scores`` includes
    it); a per-layer ``positional`` list picks each layer's scheme (`ModelSpec.positional_at`).
    The attention options of `theory.block` add grouped-query attention, QK-norm and the
    NoPE-layer temperature (`simulate.engine.sublayers.attention`; k and v then have
    n_kv_heads heads). ``pos_embed`` is the learned table (S or 1, T, d); by default the
    one ``project`` carries (`Projections.pos_embed`).
    """
    record = set(record)
    recorder = _TapRecorder(record, last_needed(spec, record) if stop_after == "auto" else stop_after)
    ctx = Context(spec, 0, project, recorder, hand_written=hand_written_attention(record))
    if pos_embed is None:
        pos_embed = getattr(project, "pos_embed", None)  # the network's learned table, if any
    try:
        # the network's input: the spec's positional scheme adds its table here, if it has one
        x = ctx.positional(input_scheme(spec), x).embed(x, pos_embed)  # (S, B, T, d)
        for layer in range(spec.n_layers):
            x = _block(spec, layer, x, ctx.at(layer, _prefixed(recorder, layer)))  # (S, B, T, d)
    except _StopForward:
        pass
    return recorder.taps


def _prefixed(recorder: _TapRecorder, layer: int) -> Callable[[str, torch.Tensor], None]:
    """The recorder of ``layer``'s taps: ``suffix`` -> ``blocks.{layer}.{suffix}``."""
    prefix = f"blocks.{layer}."
    return lambda suffix, value: recorder(prefix + suffix, value)


def _block(spec: ModelSpec, layer: int, x: torch.Tensor, ctx: Context) -> torch.Tensor:
    """One block: the stream entering it (``hook_resid_pre``), then its declared sublayers."""
    ctx.tap(ENTRY_TAP, x)
    h = x
    for sub in block(spec, layer):
        x, h = FORWARD[sub.kind](sub, x, h, ctx)
    return x  # (S, B, T, d)
