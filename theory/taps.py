"""The one registry of tap names, shared by theory steps, simulation taps, verify checks,
report rows and LaTeX labels.

Names follow TransformerLens, which users already know: ``blocks.{l}.attn.hook_z`` is
the per-head attention output of layer ``l`` (0-based). A tap is addressed either by its
full name or by ``(short_name, layer)`` as in TransformerLens' ``utils.get_act_name``.

>>> tap_name("hook_z", 0)
'blocks.0.attn.hook_z'
>>> tap_name(("resid_mid", 3))
'blocks.3.hook_resid_mid'
>>> parse_tap("blocks.2.ln1.hook_normalized")
('ln1.hook_normalized', 2)
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Union

from .block import ALL_TAPS, FULL_BLOCK, BlockShape, block as _block

# Per-layer taps in forward order: suffix after ``blocks.{l}.``, with a one-line meaning
# and the shape of the tensor in a simulation (S networks, B sequences, T positions).
# Read from the one block declaration (`theory.block`).
LAYER_TAPS: dict[str, str] = {t.suffix: t.meaning for t in ALL_TAPS}

# The taps of the attention branch of a block with an MLP (entry, ln1, attention, its
# residual write): those the first-layer derivation covers (`attention_taps` for a spec).
ATTENTION_TAPS: tuple[str, ...] = FULL_BLOCK.tap_suffixes[: FULL_BLOCK.tap_suffixes.index("hook_resid_mid") + 1]

# First-layer taps upstream of the softmax: their moments are exact for any spec and their
# one-coordinate laws are known in closed form (verify's calibration and KS checks use them).
PRE_SOFTMAX_TAPS: tuple[str, ...] = tuple(f"blocks.0.{s}" for s in ATTENTION_TAPS[: ATTENTION_TAPS.index("attn.hook_pattern")])

# The taps of the MLP branch.
MLP_TAPS: tuple[str, ...] = FULL_BLOCK.tap_suffixes[len(ATTENTION_TAPS):]


def block_taps(spec_or_attn_only=False) -> tuple[str, ...]:
    """The tap suffixes of one block in forward order (an attention-only block ends at
    ``hook_resid_post``, as in TransformerLens), for a `ModelSpec` or, given a bool, for
    the standard block with or without its MLP. Every layer of a spec has the same taps."""
    if isinstance(spec_or_attn_only, bool):
        return _block(BlockShape(spec_or_attn_only)).tap_suffixes
    return _block(spec_or_attn_only).tap_suffixes


def attention_taps(spec_or_attn_only=False) -> tuple[str, ...]:
    """The attention branch's taps (entry to its residual write): the first layer's derived taps."""
    taps = block_taps(spec_or_attn_only)
    return taps[: len(ATTENTION_TAPS)]


_TAP_RE = re.compile(r"^blocks\.(\d+)\.(.+)$")

TapFilter = Union[str, Iterable[str], Callable[[str], bool], None]


def _suffix_for(short: str) -> str:
    """Resolve a short name (``"z"``, ``"hook_z"``, ``"attn.hook_z"``) to its suffix."""
    if short in LAYER_TAPS:
        return short
    candidates = [s for s in LAYER_TAPS if s.split(".")[-1] in (short, f"hook_{short}")]
    if short in ("normalized", "hook_normalized", "scale"):
        candidates = []  # ambiguous between ln1 and ln2: ask for the full suffix
    if len(candidates) != 1:
        raise ValueError(
            f"unknown tap {short!r}; allowed names are: {', '.join(LAYER_TAPS)} "
            "(or a short form such as 'z', 'hook_pattern', 'resid_mid')"
        )
    return candidates[0]


def tap_name(name: str | tuple[str, int], layer: int | None = None) -> str:
    """Full tap name from a full name, a short name and layer, or a ``(name, layer)`` pair."""
    if isinstance(name, tuple):
        name, layer = name
    if _TAP_RE.match(name):
        parse_tap(name)  # validates the suffix
        return name
    if layer is None:
        raise ValueError(f"tap {name!r} needs a layer, e.g. ({name!r}, 0)")
    if isinstance(layer, bool) or not isinstance(layer, int) or layer < 0:
        raise ValueError(f"tap layer must be a non-negative integer, got {layer!r}")
    return f"blocks.{layer}.{_suffix_for(name)}"


def parse_tap(full_name: str) -> tuple[str, int]:
    """Split ``blocks.{l}.{suffix}`` into ``(suffix, l)``; ValueError if unknown."""
    match = _TAP_RE.match(full_name)
    if not match or match.group(2) not in LAYER_TAPS:
        raise ValueError(
            f"unknown tap {full_name!r}; taps are 'blocks.{{layer}}.{{suffix}}' with suffix "
            f"one of: {', '.join(LAYER_TAPS)}"
        )
    return match.group(2), int(match.group(1))


def all_taps(n_layers: int, attn_only: bool = False) -> list[str]:
    """Every tap of a network with ``n_layers`` blocks, in forward order."""
    suffixes = block_taps(attn_only)
    return [f"blocks.{l}.{s}" for l in range(n_layers) for s in suffixes]


def select_taps(taps: TapFilter, n_layers: int, attn_only: bool = False) -> list[str]:
    """Resolve a TransformerLens-style filter (a name, a list, a callable) to full names."""
    universe = all_taps(n_layers, attn_only)
    if taps is None:
        return universe
    if callable(taps):
        return [t for t in universe if taps(t)]
    if isinstance(taps, (str, tuple)):
        taps = [taps]
    chosen = []
    for t in taps:
        full = tap_name(t) if isinstance(t, tuple) or _TAP_RE.match(t) else None
        if full is None:
            raise ValueError(f"tap {t!r} needs a layer: give 'blocks.0.{t}' or ({t!r}, 0)")
        if full not in universe:
            raise ValueError(f"tap {full!r} is not in this network (layers 0..{n_layers - 1})")
        chosen.append(full)
    return chosen
