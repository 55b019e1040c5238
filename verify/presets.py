"""The main job's specs and presets (how much work a run does), and its query positions."""

from __future__ import annotations

import math
from dataclasses import dataclass

from theory import ModelSpec

# The main job's spec: three full pre-LN blocks (attention and GELU MLP) at width 64, GPT-2
# small's initialisation (sigma 0.02, ln_eps 1e-5) except sigma_q = sigma_k = 0.09, the
# calibration spec's, for a logit variance of ~0.26 where the softmax is visibly non-uniform
# (at sigma 0.02 and width 64 the logits would be ~100x smaller than GPT-2's).
DEFAULT_SPEC = ModelSpec(d_model=64, n_heads=4, n_layers=3, seq_len=64, sigma_q=0.09, sigma_k=0.09)
# `--preset depth`: GPT-2 small's initialisation, six blocks at width 256, T = 256.
DEPTH_SPEC = ModelSpec(d_model=256, n_heads=4, n_layers=6, seq_len=256)
# GPT-2 small's width and initialisation, one attention layer, 256 positions (the layer-1 job).
LAYER1_SPEC = ModelSpec(n_layers=1, seq_len=256, attn_only=True)


@dataclass(frozen=True)
class Preset:
    """How much work a run does. The calibration runs at the main sample size, capped at
    ``calibration_samples`` when given (power is measured at the run's sample size, up to
    that cap)."""

    name: str
    samples: int
    calibration_runs: int
    per_octave: int  # recorded positions per doubling of m (plus 1 and T)
    calibration_samples: int | None = None
    description: str = ""
    spec: ModelSpec | None = None  # the spec a run without --spec uses (None: DEFAULT_SPEC)


PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", 96, 60, 2, description="a smoke test"),
    "default": Preset("default", 2000, 300, 2, calibration_samples=1000,
                      description="the main job: 3 layers with MLP at width 64, T = 64; ~2-3 min on 2 CPU cores"),
    "depth": Preset("depth", 600, 100, 2, calibration_samples=1000, spec=DEPTH_SPEC,
                    description="6 layers with MLP at width 256, T = 256 (GPT-2 init); a GPU or a long CPU run"),
    "paper": Preset("paper", 4000, 1000, 4, description="tight error bars for figures; meant for a GPU or a long run"),
}


def positions_for(seq_len: int, per_octave: int = 2) -> list[int]:
    """Log-spaced query positions 1..seq_len (``per_octave`` per doubling), always with 1 and T.

    >>> positions_for(16)
    [1, 2, 3, 4, 6, 8, 11, 16]
    """
    seq_len = int(seq_len)
    steps = int(math.floor(per_octave * math.log2(seq_len))) if seq_len > 1 else 0
    pos = {int(round(2 ** (k / per_octave))) for k in range(steps + 1)} | {1, seq_len}
    return sorted(p for p in pos if 1 <= p <= seq_len)


__all__ = ["DEFAULT_SPEC", "DEPTH_SPEC", "LAYER1_SPEC", "Preset", "PRESETS", "positions_for"]
