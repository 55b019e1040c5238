"""The engine: batched Monte Carlo forward passes of random NoPE networks, and their statistics.

Its parts, each one module with one job (imported downward only; the engine imports no
experiment and no `simulate.record` module):

=================  =====================================================================
module             job
=================  =====================================================================
``sublayers``      one forward function per kind of `theory.block.KINDS` (`FORWARD`)
``positional``     the positional schemes (`POSITIONAL`; ``none`` is the identity)
``forward_pass``   `forward`: the declared block (`theory.block`), sublayer by sublayer
``projections``    how weights enter: explicit matrices or the Gram law (`Projections`)
``seeding``        one generator per sample, from (seed, stream, index)
``draw``           the per-sample draw plan and its buffers; the quenched network
``sampler``        `Sampler`: draw -> unpack -> forward of a chunk of units
``stats``          streaming per-position moments (`Accumulator`, `add_chunk`)
``results``        `SimulationResult`, `TapStats`, JSON/.npz; `build_result`, `versions`
``arguments``      validation of the shared arguments (device, dtype, measure, ...)
``budget``         size guards: memory and time estimated before anything is allocated
``checkpoints``    a run's state on disk, resumed only by the same run
``progress``       `Progress`, the one progress bar
``runner``         `run`: the chunk loop
``cache``          `activations`: raw tap tensors, TransformerLens-style cache
``benchmark``      `bench`: the engine against a per-network loop and the matmul ceiling
=================  =====================================================================

Experiments (`simulate.experiments`) and the instrument (`simulate.record`) use only the
names of `__all__`. (No module is named like a function it exports -- ``runner`` holds
`run`, ``forward_pass`` holds `forward` -- so ``import simulate.engine.runner`` finds the
module, not the function.)
"""

from .arguments import resolve_device, resolve_dtype
from .benchmark import bench, format_table
from .budget import RunSizes, layer_projections, nan_to_inf, refuse_sizes, size_value
from .cache import ActivationCache, activations
from .forward_pass import forward
from .positional import POSITIONAL, Positional, check_positional
from .progress import Progress
from .projections import Projections, output_scale, projection_kinds, psd_root
from .results import SimulationResult, TapStats, build_result, versions
from .runner import NothingUsableWarning, run
from .sampler import Sampler
from .seeding import derive_seed
from .stats import MASKED_TAPS, Accumulator, RowValues, add_chunk, chunk_rows, extract, tap_rows
from .sublayers import ACTIVATIONS, FORWARD, attention_scale, layer_norm, rms_norm

__all__ = [
    # running
    "run", "activations", "ActivationCache", "bench", "format_table", "Sampler", "forward",
    "NothingUsableWarning", "Progress",
    # results and statistics
    "SimulationResult", "TapStats", "build_result", "versions", "Accumulator", "RowValues", "extract",
    "chunk_rows", "add_chunk", "tap_rows", "MASKED_TAPS",
    # the network
    "FORWARD", "POSITIONAL", "Positional", "ACTIVATIONS", "Projections", "layer_norm", "rms_norm", "attention_scale",
    "output_scale", "projection_kinds", "psd_root",
    # arguments, seeds, sizes
    "resolve_device", "resolve_dtype", "check_positional", "derive_seed",
    "RunSizes", "refuse_sizes", "size_value", "nan_to_inf", "layer_projections",
]
