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
# GPT-2 small's width and initialisation, one attention layer, 256 positions (the first-layer job).
LAYER1_SPEC = ModelSpec(n_layers=1, seq_len=256, attn_only=True)

# Modern decoder blocks (docs/modern-blocks.md), from the public configs in tests/data/hf_configs/.
# Scaled down for a CPU: width 64, 4 query heads and 1 key/value head (SmolLM3's 16:4 and Llama 4's
# 40:8 share a head between 4 and 5 query heads), 4 layers = one period of the NoPE schedule (RoPE,
# RoPE, RoPE, NoPE), T = 64, the MLP width in the model's ratio; sigma_q = sigma_k = 0.09 as the
# main job (at sigma 0.02 and width 64 the logits of the RoPE/NoPE layers would be ~100x smaller
# than at the real width, and the check would be trivially uniform; QK-norm layers do not care).
# Llama 4's temperature floor_scale 8192 is 8 here, so that it acts within T = 64.
_SMOL = dict(normalization="rmsnorm", mlp="swiglu", ln_eps=1e-6, rope_theta=5e6,
             positional=["rope", "rope", "rope", "none"])
SMOLLM3_SPEC = ModelSpec(d_model=64, n_heads=4, n_kv_heads=1, n_layers=4, seq_len=64, d_mlp=344 // 2,
                         sigma_q=0.09, sigma_k=0.09, **_SMOL)
_LLAMA4 = dict(normalization="rmsnorm", mlp="swiglu", ln_eps=1e-5, rope_theta=5e5,
               positional=["rope", "rope", "rope", "none"], qk_norm=[True, True, True, False])
LLAMA4_SPEC = ModelSpec(d_model=64, n_heads=4, n_kv_heads=1, n_layers=4, seq_len=64, d_mlp=102,
                        sigma_q=0.09, sigma_k=0.09, attn_temperature={"floor_scale": 8, "scale": 0.1}, **_LLAMA4)
# With a GPU: the real widths, heads, key/value heads and MLP widths and GPT-2-style init 0.02
# (initializer_range), 8 layers (two periods of the schedule), T = 256; Llama 4's floor_scale 64.
SMOLLM3_GPU_SPEC = ModelSpec(d_model=2048, n_heads=16, n_kv_heads=4, n_layers=8, seq_len=256, d_mlp=11008,
                             **dict(_SMOL, positional=["rope", "rope", "rope", "none"] * 2))
LLAMA4_GPU_SPEC = ModelSpec(d_model=5120, n_heads=40, n_kv_heads=8, n_layers=8, seq_len=256, d_mlp=8192,
                            attn_temperature={"floor_scale": 64, "scale": 0.1},
                            **dict(_LLAMA4, positional=["rope", "rope", "rope", "none"] * 2,
                                   qk_norm=[True, True, True, False] * 2))


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
    gpu_spec: ModelSpec | None = None  # the spec on a CUDA device, when it differs (the real shapes)

    def spec_for(self, device_type: str) -> ModelSpec | None:
        """The preset's spec on a device of this type (``"cuda"``: `gpu_spec` when there is one)."""
        return self.gpu_spec if device_type == "cuda" and self.gpu_spec is not None else self.spec


PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", 96, 60, 2, description="a smoke test"),
    "default": Preset("default", 2000, 300, 2, calibration_samples=1000,
                      description="the main job: 3 layers with MLP at width 64, T = 64; ~2-3 min on 2 CPU cores"),
    "depth": Preset("depth", 600, 100, 2, calibration_samples=1000, spec=DEPTH_SPEC,
                    description="6 layers with MLP at width 256, T = 256 (GPT-2 init); a GPU or a long CPU run"),
    "paper": Preset("paper", 4000, 1000, 4, description="tight error bars for figures; meant for a GPU or a long run"),
    "smollm3": Preset("smollm3", 2000, 200, 2, calibration_samples=500, spec=SMOLLM3_SPEC, gpu_spec=SMOLLM3_GPU_SPEC,
                      description="SmolLM3's block (RMSNorm, SwiGLU, GQA, NoPE every 4th layer) at width 64; "
                                  "the real widths on a GPU"),
    "llama4": Preset("llama4", 2000, 200, 2, calibration_samples=500, spec=LLAMA4_SPEC, gpu_spec=LLAMA4_GPU_SPEC,
                     description="Llama 4's iRoPE block (QK-norm on RoPE layers, NoPE temperature) at width 64; "
                                 "the real widths on a GPU"),
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


__all__ = ["DEFAULT_SPEC", "DEPTH_SPEC", "LAYER1_SPEC", "SMOLLM3_SPEC", "LLAMA4_SPEC", "SMOLLM3_GPU_SPEC",
           "LLAMA4_GPU_SPEC", "Preset", "PRESETS", "positions_for"]
