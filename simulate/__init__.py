"""simulate: Monte Carlo forward passes of random NoPE transformers (torch).

Realises the `theory.ModelSpec` network and records taps by the shared names of
`theory.taps`. See docs/simulate.md.

>>> from theory import ModelSpec
>>> import simulate
>>> spec = ModelSpec(d_model=32, n_heads=2, n_layers=1, seq_len=8, attn_only=True)
>>> result = simulate.run(spec, taps=[("hook_z", 0)], samples=64, seed=0, device="cpu")
>>> result["hook_z", 0].var.shape
(8,)
"""

from ._bench import bench
from ._cache import ActivationCache, activations
from ._forward import Projections, attention_scale, forward, layer_norm, psd_root
from ._model import NoPETransformer
from ._record import Site, record
from ._result import SimulationResult, TapStats
from ._run import NothingUsableWarning, resolve_device, run

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
