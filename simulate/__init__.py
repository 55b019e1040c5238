"""simulate: Monte Carlo forward passes of random NoPE transformers (torch).

Realises the `theory.ModelSpec` network and records taps by the shared names of
`theory.taps`. Three parts (see docs/simulate.md):

* `simulate.engine`: the batched forward pass, drawing, seeding, statistics, `run`;
* `simulate.record`: the instrument, statistics of any torch model by our tap names;
* `simulate.experiments`: the position probe and the training experiment, which use
  only the engine's public names.

>>> from theory import ModelSpec
>>> import simulate
>>> spec = ModelSpec(d_model=32, n_heads=2, n_layers=1, seq_len=8, attn_only=True)
>>> result = simulate.run(spec, taps=[("hook_z", 0)], samples=64, seed=0, device="cpu")
>>> result["hook_z", 0].var.shape
(8,)
"""

from .engine import (
    ActivationCache,
    NothingUsableWarning,
    Projections,
    SimulationResult,
    TapStats,
    activations,
    attention_scale,
    bench,
    forward,
    layer_norm,
    psd_root,
    resolve_device,
    run,
)
from .experiments.train.model import NoPETransformer
from .record import Site, record

__all__ = [
    "run",
    "SimulationResult",
    "NothingUsableWarning",
    "TapStats",
    "activations",
    "ActivationCache",
    "forward",
    "Projections",
    "layer_norm",
    "attention_scale",
    "psd_root",
    "resolve_device",
    "bench",
    "record",
    "Site",
    "NoPETransformer",
]

from theory import __version__  # noqa: E402  (one version for the three packages)
