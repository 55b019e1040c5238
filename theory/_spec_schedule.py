"""The spec fields of modern decoder blocks: per-layer schedules and the NoPE-layer temperature.

Modern NoPE models mix layer types: Llama 4 ("iRoPE") and SmolLM3 drop RoPE from every
fourth layer, Llama 4 puts QK-norm on its RoPE layers only and scales the queries of its
NoPE layers by a position-dependent temperature. `ModelSpec` carries that as

* ``positional``: one scheme for the whole model, or one entry per layer from
  `LAYER_POSITIONALS` (``"none" | "rope" | "alibi"``);
* ``qk_norm``: one boolean for the whole model, or one per layer;
* ``attn_temperature``: `AttnTemperature` (or None), applied to the queries of the ``"none"``
  layers.

This module validates them (naming the field and the allowed values) and answers the
per-layer questions (`positional_at`, `qk_norm_at`); `theory.block` reads the answers.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence

from ._outputs import shown

# Schemes a single layer may use. The input-level tables ("learned", "sinusoidal") add a
# vector to the residual stream once, before the first block: they are whole-model only.
LAYER_POSITIONALS = ("none", "rope", "alibi")

# The spec fields that may hold one entry per layer.
PER_LAYER_FIELDS = ("positional", "qk_norm")


@dataclass(frozen=True)
class AttnTemperature:
    """Llama 4's NoPE-layer query temperature ("attn_temperature_tuning").

    The queries of a NoPE layer at 0-based position ``p`` are multiplied by

        tau(p) = scale * log(floor((p + 1) / floor_scale) + 1) + 1,

    so the logits of position p are scaled by tau(p): 1 for ``p + 1 < floor_scale`` and
    growing like ``scale * log(p / floor_scale)`` beyond. Llama 4 uses ``floor_scale = 8192``
    and ``scale = 0.1`` (Hugging Face ``Llama4TextAttention``); a small ``floor_scale`` makes
    the effect visible at simulated lengths.

    >>> t = AttnTemperature(floor_scale=4, scale=0.5)
    >>> [round(t.factor(p), 4) for p in (0, 2, 3, 7, 11)]
    [1.0, 1.0, 1.3466, 1.5493, 1.6931]
    """

    floor_scale: float
    scale: float

    def __post_init__(self) -> None:
        for name, low, allowed in (("floor_scale", 0.0, "a finite number > 0"), ("scale", 0.0, "a finite number >= 0")):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
                raise ValueError(f"attn_temperature.{name} must be {allowed}, got {shown(value)}")
            value = float(value)
            if value < low or (name == "floor_scale" and value == 0):
                raise ValueError(f"attn_temperature.{name} must be {allowed}, got {value!r}")
            object.__setattr__(self, name, value)

    def factor(self, position: int) -> float:
        """tau(p) for the 0-based position ``p``."""
        return self.scale * math.log(math.floor((position + 1) / self.floor_scale) + 1) + 1.0

    def factors(self, seq_len: int) -> list[float]:
        """tau(p) for p = 0..seq_len-1 (query position m = p + 1)."""
        return [self.factor(p) for p in range(seq_len)]

    def to_dict(self) -> dict[str, float]:
        return {"floor_scale": self.floor_scale, "scale": self.scale}

    @classmethod
    def parse(cls, value: Any) -> "AttnTemperature | None":
        """None, an `AttnTemperature`, or its JSON object ``{"floor_scale": F, "scale": s}``."""
        if value is None or isinstance(value, cls):
            return value
        allowed = 'attn_temperature must be null or {"floor_scale": F > 0, "scale": s >= 0}'
        if not isinstance(value, dict):
            raise ValueError(f"{allowed}, got {shown(value)}")
        if set(value) != {"floor_scale", "scale"}:
            raise ValueError(f"{allowed}, got the keys {', '.join(map(repr, sorted(map(str, value))))}")
        return cls(floor_scale=value["floor_scale"], scale=value["scale"])


def _per_layer(name: str, value: Any, n_layers: Any, check_entry, whole_allowed: str, entry_allowed: str):
    """A whole-model value as it is, or a list of one entry per layer as a tuple."""
    if isinstance(value, (list, tuple)):
        if not isinstance(n_layers, int):
            raise ValueError(f"{name}: a per-layer list needs a numeric n_layers, got n_layers = {shown(n_layers)}")
        if len(value) != n_layers:
            raise ValueError(f"{name}: a per-layer list must have one entry per layer (n_layers = {n_layers}), "
                             f"got {len(value)} entries")
        for layer, entry in enumerate(value):
            if not check_entry(entry):
                raise ValueError(f"{name}[{layer}] must be {entry_allowed}; got {shown(entry)}")
        return tuple(value)
    if not check_entry(value, whole=True):
        raise ValueError(f"{name} must be {whole_allowed}; got {shown(value)}")
    return value


def check_positional(value: Any, n_layers: Any, whole_model: Sequence[str]):
    """``positional``: a scheme from ``whole_model``, or one of `LAYER_POSITIONALS` per layer."""
    def ok(entry, whole=False):
        return isinstance(entry, str) and entry in (whole_model if whole else LAYER_POSITIONALS)
    return _per_layer("positional", value, n_layers, ok,
                      f"one of {', '.join(map(repr, whole_model))}, or a list with one entry per layer",
                      f"one of {', '.join(map(repr, LAYER_POSITIONALS))} (input tables are whole-model only)")


def check_qk_norm(value: Any, n_layers: Any):
    """``qk_norm``: true/false for the whole model, or one boolean per layer."""
    def ok(entry, whole=False):
        return isinstance(entry, bool)
    return _per_layer("qk_norm", value, n_layers, ok, "true, false or a list of one boolean per layer",
                      "true or false")


def at_layer(value: Any, layer: int):
    """The entry of a whole-model-or-per-layer field at 0-based ``layer``."""
    return value[layer] if isinstance(value, tuple) else value


__all__ = ["AttnTemperature", "LAYER_POSITIONALS", "PER_LAYER_FIELDS", "check_positional", "check_qk_norm", "at_layer"]
