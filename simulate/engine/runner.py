"""`run`: the Monte Carlo driver -- validate, size the chunks, then draw, forward, accumulate.

The chunk loop is `_execute`: each chunk of units comes from the `Sampler` (draw ->
unpack -> forward), its taps are streamed into the `Accumulator` (`add_chunk`), the
`Progress` bar moves and, every ``checkpoint_every`` seconds, the state is saved
(`simulate.engine.checkpoints`). The result is built from the accumulator once the
samples are done.
"""

from __future__ import annotations

import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from theory import ModelSpec
from theory.positions import check_positions
from theory.taps import TapFilter, select_taps

from .arguments import check_int, check_limits, check_run_arguments, resolve_device, resolve_dtype, stream_dtype
from .budget import check_run_size, default_chunk, run_sizes
from .checkpoints import CHECKPOINT_VERSION, load_checkpoint, save_checkpoint
from .draw import default_workers
from .progress import Progress
from .results import SimulationResult, build_result, versions
from .sampler import Sampler
from .stats import Accumulator, add_chunk, chunk_rows, tap_rows

DEFAULT_MEMORY_BUDGET = 256 << 20  # bytes of working memory a chunk may use (small chunks stay in cache)


class NothingUsableWarning(RuntimeWarning):
    """Every sample of a run gave NaN/inf: each statistic is NaN (null in the JSON)."""


def run(
    spec: ModelSpec,
    taps: TapFilter = None,
    samples: int = 1000,
    seed: int = 0,
    *,
    positions: Any = None,
    measure: str = "annealed",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    chunk_size: int | None = None,
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
    method: str = "auto",
    batch: int = 1,
    reservoir: int = 0,
    checkpoint: str | Path | None = None,
    checkpoint_every: float = 10.0,
    progress: bool | str = "auto",
    workers: int | None = None,
    threads: int | None = None,
    force: bool = False,
    memory_limit: float | None = None,
    time_limit: float | None = None,
) -> SimulationResult:
    """Monte Carlo statistics of the taps of random NoPE networks described by ``spec``.

    Parameters
    ----------
    taps : a full name, ``(name, layer)``, a list of those, a callable filter, or None (all).
    samples : independent units: networks (annealed) or sequences (quenched).
    seed : sample ``i`` draws from a generator seeded by ``(seed, i)``: the same seed gives
        the same numbers for any ``chunk_size`` and after a resume.
    positions : 1-based query positions to record (default all 1..seq_len).
    measure : ``"annealed"`` (fresh weights per sample, the default) or ``"quenched"`` (one
        frozen network drawn from the seed; fresh inputs per sample).
    device, dtype : ``"auto"`` picks CUDA when present; ``"float32"``, ``"float64"``,
        ``"bfloat16"`` or (CUDA) ``"float16"``: with the last two only the matrix products run
        in that dtype (inputs rounded, float32 accumulation); the stream, norms, softmax, Gram
        matrix and root stay float32, the statistics float64 (docs/simulate.md, "bfloat16").
    chunk_size : units per forward pass; default from ``memory_budget`` (bytes).
    method : annealed projections drawn by ``"auto"`` (the Gram path where rows < d_in),
        ``"explicit"`` (always the weight matrices) or ``"gram"`` (always the Gram path).
        Both give the same law; see docs/simulate.md.
    batch : sequences per network under the annealed measure (they share the weights).
    reservoir : keep raw values of the first ``reservoir`` units, one per position.
    checkpoint : a file that holds the run's state, written every ``checkpoint_every``
        seconds and at the end; an existing compatible checkpoint is resumed.
    progress : show a progress bar on stderr (``"auto"``: after 2 s).
    workers : threads that draw random numbers (default: one per torch thread).
    threads : torch's intra-op threads during the run (default: leave as set). On a CPU
        that other processes share, ``threads=1`` avoids OpenMP stalls on small models.
    force, memory_limit, time_limit : the size guard. Before anything is allocated the run's
        memory and time are estimated (`simulate.engine.budget`); a run over the limits is
        refused with a ValueError naming the field, the estimate and the limit. The limits
        are 80% of the memory available now (or ``memory_limit`` bytes) and one day of
        estimated work (or ``time_limit`` seconds); ``force=True`` skips them (a request
        beyond 2^63 bytes is refused all the same).

    A sample whose values hold a NaN or an inf is counted in ``meta["nonfinite_samples"]``
    and left out; when every sample is, each statistic is NaN and a
    `NothingUsableWarning` is issued.

    Returns
    -------
    SimulationResult
        ``result[tap]`` is a `TapStats` of arrays over ``result.positions``.
    """
    job = _job(spec, taps, samples, seed, positions=positions, measure=measure, device=device, dtype=dtype,
               chunk_size=chunk_size, memory_budget=memory_budget, method=method, batch=batch, reservoir=reservoir,
               checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress, workers=workers,
               force=force, memory_limit=memory_limit, time_limit=time_limit)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(check_int("threads", threads, 1))
    try:
        return _execute(job)
    finally:
        torch.set_num_threads(threads_before)


@dataclass(frozen=True)
class _Job:
    """A validated run: everything `_execute` needs."""

    spec: ModelSpec
    taps: list[str]
    samples: int
    seed: int
    positions: np.ndarray
    measure: str
    device: torch.device
    dtype: torch.dtype
    chunk_size: int
    method: str
    batch: int
    reservoir: int
    stat_rows: list[tuple[str, str]]
    checkpoint: Path | None
    checkpoint_every: float
    progress: bool | str
    workers: int

    @property
    def quenched(self) -> bool:
        return self.measure == "quenched"

    @property
    def fingerprint(self) -> dict:
        """What a checkpoint must share to be resumed by this run."""
        return {
            "version": CHECKPOINT_VERSION, "spec": self.spec.to_dict(), "seed": self.seed, "measure": self.measure,
            "taps": self.taps, "positions": self.positions.tolist(), "dtype": str(self.dtype).replace("torch.", ""),
            "device_type": self.device.type, "method": self.method, "batch": self.batch, "reservoir": self.reservoir,
        }


def _job(spec, taps, samples, seed, *, positions, measure, device, dtype, chunk_size, memory_budget, method, batch,
         reservoir, checkpoint, checkpoint_every, progress, workers, force, memory_limit, time_limit) -> _Job:
    """Validate `run`'s arguments, guard the size, choose the chunk: the `_Job`."""
    samples, seed, batch = check_run_arguments(spec, samples, seed, batch, measure, method)
    reservoir = check_int("reservoir", reservoir, 0)
    if chunk_size is not None:
        chunk_size = check_int("chunk_size", chunk_size, 1)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    item_bytes = torch.finfo(stream_dtype(dt)).bits // 8  # taps and the stream: float32 in a bfloat16 run
    check_limits(memory_limit, time_limit)
    # before anything is allocated or listed (select_taps, positions and the draw plan are
    # O(n_layers) or O(seq_len)): refuse what cannot fit, with the estimate and the limit
    check_run_size(
        spec, taps=taps, samples=samples, batch=batch, chunk_size=chunk_size, positions=positions,
        reservoir=reservoir, measure=measure, method=method, dtype_bytes=item_bytes,
        memory_budget=memory_budget, device=dev, force=bool(force), memory_limit=memory_limit, time_limit=time_limit,
    )
    tap_list = list(dict.fromkeys(select_taps(taps, spec.n_layers, spec)))  # unique, in order
    if not tap_list:
        raise ValueError("the tap filter selected no taps")
    pos = check_positions(positions, spec.seq_len)
    stat_rows = [(t, r) for t in tap_list for r in tap_rows(t)]
    if chunk_size is None:  # as many units as memory_budget holds (at most 256): the budget's own figures
        chunk_size = int(default_chunk(run_sizes(
            spec, taps=tap_list, samples=samples, batch=batch, chunk_size=None, positions=pos, reservoir=reservoir,
            measure=measure, method=method, dtype_bytes=item_bytes, memory_budget=memory_budget,
        )))
    return _Job(
        spec=spec, taps=tap_list, samples=samples, seed=seed, positions=pos, measure=measure, device=dev, dtype=dt,
        chunk_size=chunk_size, method=method, batch=batch, reservoir=reservoir, stat_rows=stat_rows,
        checkpoint=Path(checkpoint) if checkpoint is not None else None, checkpoint_every=checkpoint_every,
        progress=progress, workers=workers or default_workers(dev),
    )


def _execute(job: _Job) -> SimulationResult:
    """The chunk loop: draw and forward, accumulate, checkpoint; then the result."""
    acc = Accumulator(job.stat_rows, len(job.positions), job.reservoir)
    done, nonfinite, elapsed_before = 0, [], 0.0
    if job.checkpoint is not None and job.checkpoint.exists():
        done, nonfinite, elapsed_before = load_checkpoint(job.checkpoint, job.fingerprint, acc, job.samples)
    resumed_from = done
    t0 = time.perf_counter()
    positions_t = torch.as_tensor(job.positions - 1, device=job.device)
    bar = Progress(job.samples, done, job.progress)
    sampler = Sampler(job.spec, seed=job.seed, measure=job.measure, method=job.method, batch=job.batch,
                      device=job.device, dtype=job.dtype, workers=job.workers)
    last_ckpt = time.perf_counter()
    try:
        while done < job.samples:
            count = min(job.chunk_size, job.samples - done)
            cache = sampler.taps(done, count, job.taps)
            add_chunk(acc, chunk_rows(job.taps, cache, positions_t, job.quenched), done, count, nonfinite, job.seed)
            done += count
            bar.update(done)
            if job.checkpoint is not None and time.perf_counter() - last_ckpt >= job.checkpoint_every:
                save_checkpoint(job.checkpoint, job.fingerprint, acc, done, nonfinite, elapsed_before + time.perf_counter() - t0)
                last_ckpt = time.perf_counter()
    finally:
        bar.close()
        sampler.close()
    wall = time.perf_counter() - t0
    if job.checkpoint is not None and done > resumed_from:
        save_checkpoint(job.checkpoint, job.fingerprint, acc, done, nonfinite, elapsed_before + wall)
    _report_nonfinite(nonfinite, job.samples)
    meta = _meta(job, sampler, nonfinite, resumed_from, elapsed_before + wall)
    return build_result(job.spec, job.positions, acc, job.stat_rows, job.taps, meta)


def _report_nonfinite(nonfinite: list[int], samples: int) -> None:
    if nonfinite and len(nonfinite) >= samples:
        warnings.warn(
            f"all {samples} sample(s) gave NaN/inf: nothing usable; every statistic is NaN (null in JSON)",
            NothingUsableWarning, stacklevel=4,
        )
    elif nonfinite:
        print(
            f"[simulate] warning: {len(nonfinite)} sample(s) gave NaN/inf and were left out "
            f"(first: {nonfinite[:5]})",
            file=sys.stderr,
        )


def _meta(job: _Job, sampler: Sampler, nonfinite: list[int], resumed_from: int, wall: float) -> dict:
    """The result's ``meta``: the run's settings, what happened, the versions."""
    spec, pos = job.spec, job.positions
    return {
        "spec": spec.to_dict(),
        "seed": job.seed,
        "samples": job.samples,
        "measure": job.measure,
        "unit": "sequence" if job.quenched else "network",
        "batch": job.batch,
        "method": job.method,
        "gram_projections": sampler.gram_projections,
        "device": str(job.device),
        "dtype": job.fingerprint["dtype"],
        "taps": job.taps,
        "positions": "all" if len(pos) == spec.seq_len else pos.tolist(),
        "reservoir": job.reservoir,
        "nonfinite_samples": len(nonfinite),
        "nonfinite_indices": nonfinite[:100],
        "chunk_size": job.chunk_size,
        "resumed_from": resumed_from,
        "wall_time_s": round(wall, 3),
        "versions": versions(),
    }
