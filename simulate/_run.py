"""`run`: the Monte Carlo driver -- chunks, seeds, statistics, checkpoints, progress."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from theory import ModelSpec
from theory.taps import TapFilter, select_taps

from ._budget import check_run_size
from ._draw import Drawer, default_workers, draw_network, sample_plan, unpack
from ._forward import Projections, forward
from ._positional import check_positional
from ._result import SimulationResult, TapStats
from ._stats import Accumulator, extract, reservoir_picks, row_counts, tap_rows, unit_moments

MEASURES = ("annealed", "quenched")
METHODS = ("auto", "explicit", "gram")
DTYPES = {"float32": torch.float32, "float64": torch.float64}
DEFAULT_MEMORY_BUDGET = 256 << 20  # bytes of working memory a chunk may use (small chunks stay in cache)
MAX_CHUNK = 256
CHECKPOINT_VERSION = 1


class NothingUsableWarning(RuntimeWarning):
    """Every sample of a run gave NaN/inf: each statistic is NaN (null in the JSON)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when present, else the CPU."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def resolve_positions(positions: Any, seq_len: int) -> np.ndarray:
    """1-based query positions, sorted and unique; None is every position 1..seq_len."""
    if positions is None:
        return np.arange(1, seq_len + 1)
    try:
        values = sorted({int(p) for p in positions})
    except (TypeError, ValueError):
        raise ValueError(f"positions must be integers 1..{seq_len}, got {positions!r}") from None
    if not values or values[0] < 1 or values[-1] > seq_len:
        raise ValueError(f"positions must lie in 1..seq_len={seq_len} (1 is the first token), got {positions!r}")
    return np.array(values)


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_run_arguments(spec: ModelSpec, samples: Any, seed: Any, batch: Any, measure: str, method: str) -> tuple[int, int, int]:
    """Validate the arguments `run` and `activations` share; returns (samples, seed, batch)."""
    if spec.is_symbolic:
        raise ValueError("spec has symbolic fields; simulate needs numbers (use a numeric ModelSpec)")
    check_positional(spec)
    samples = _check_int("samples", samples, 1)
    seed = _check_int("seed", seed, 0)
    batch = _check_int("batch", batch, 1)
    if measure not in MEASURES:
        raise ValueError(f"measure must be 'annealed' or 'quenched', got {measure!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if measure == "quenched" and batch != 1:
        raise ValueError("batch applies to the annealed measure; quenched samples are sequences (batch=1)")
    return samples, seed, batch


def check_limits(memory_limit: Any, time_limit: Any) -> None:
    """``memory_limit`` (bytes) and ``time_limit`` (seconds): None or a positive number."""
    for name, value in (("memory_limit", memory_limit), ("time_limit", time_limit)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
            raise ValueError(f"{name} must be a positive number or None, got {value!r}")


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        package = version("nope-theory")
    except PackageNotFoundError:
        package = "unknown"
    return {
        "nope-theory": package,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }


def chunk_bytes_per_unit(spec: ModelSpec, plan_total: int, rows: int, need_pattern: bool, n_rows_stats: int, dtype: torch.dtype) -> int:
    """An estimate of the working memory one unit needs in a chunk (bytes)."""
    item = torch.finfo(dtype).bits // 8
    wide = max(3 * spec.d_model, 0 if spec.attn_only else spec.d_mlp)
    act = (4 * rows * wide + 6 * rows * spec.d_model + 2 * rows * rows) * item  # one layer's live tensors
    if need_pattern:
        act += 6 * spec.n_heads * rows * spec.seq_len * item  # scores, pattern and their temporaries
    stats = 3 * rows * max(wide, spec.d_model) * item * max(1, n_rows_stats)
    return plan_total * item + act + stats


class Progress:
    """A one-line progress bar on stderr for long runs."""

    def __init__(self, total: int, done: int, enabled: str | bool, unit: str = "samples"):
        self.total, self.start_done, self.unit = total, done, unit
        self.t0 = time.perf_counter()
        self.last = 0.0
        self.enabled = enabled
        self.shown = False

    def update(self, done: int) -> None:
        now = time.perf_counter() - self.t0
        if self.enabled is False or (self.enabled == "auto" and now < 2.0) or now - self.last < 0.5 and done < self.total:
            return
        self.last = now
        rate = (done - self.start_done) / max(now, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        width = 30
        fill = int(width * done / max(self.total, 1))
        sys.stderr.write(
            f"\r[simulate] |{'#' * fill}{'.' * (width - fill)}| {done}/{self.total} {self.unit}"
            f"  {rate:.1f}/s  eta {eta:.0f}s "
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


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
    device, dtype : ``"auto"`` picks CUDA when present; ``"float32"`` or ``"float64"``.
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
        memory and time are estimated (`simulate._budget`); a run over the limits is refused
        with a ValueError naming the field, the estimate and the limit. The limits are 80% of
        the memory available now (or ``memory_limit`` bytes) and one day of estimated work
        (or ``time_limit`` seconds); ``force=True`` skips them (a request beyond 2^63 bytes
        is refused all the same).

    A sample whose values hold a NaN or an inf is counted in ``meta["nonfinite_samples"]``
    and left out; when every sample is, each statistic is NaN and a
    `NothingUsableWarning` is issued.

    Returns
    -------
    SimulationResult
        ``result[tap]`` is a `TapStats` of arrays over ``result.positions``.
    """
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"spec must be a theory.ModelSpec, got {type(spec).__name__}")
    samples, seed, batch = check_run_arguments(spec, samples, seed, batch, measure, method)
    reservoir = _check_int("reservoir", reservoir, 0)
    if chunk_size is not None:
        chunk_size = _check_int("chunk_size", chunk_size, 1)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype)
    check_limits(memory_limit, time_limit)
    # before anything is allocated or listed (select_taps, positions and the draw plan are
    # O(n_layers) or O(seq_len)): refuse what cannot fit, with the estimate and the limit
    check_run_size(
        spec, taps=taps, samples=samples, batch=batch, chunk_size=chunk_size, positions=positions,
        reservoir=reservoir, measure=measure, method=method, dtype_bytes=torch.finfo(dt).bits // 8,
        memory_budget=memory_budget, device=dev, force=bool(force), memory_limit=memory_limit, time_limit=time_limit,
    )
    tap_list = list(dict.fromkeys(select_taps(taps, spec.n_layers, spec.attn_only)))  # unique, in order
    if not tap_list:
        raise ValueError("the tap filter selected no taps")
    pos = resolve_positions(positions, spec.seq_len)
    quenched = measure == "quenched"
    rows_per_unit = batch * spec.seq_len
    plan = sample_plan(spec, rows_per_unit, with_weights=not quenched, method=method)
    stat_rows = [(t, r) for t in tap_list for r in tap_rows(t)]
    need_pattern = any(t.endswith(("hook_attn_scores", "hook_pattern")) for t in tap_list)
    if chunk_size is None:
        per_unit = chunk_bytes_per_unit(spec, plan.total, rows_per_unit, need_pattern, len(stat_rows), dt)
        chunk_size = int(max(1, min(MAX_CHUNK, memory_budget // max(per_unit, 1), samples)))

    fingerprint = {
        "version": CHECKPOINT_VERSION, "spec": spec.to_dict(), "seed": seed, "measure": measure,
        "taps": tap_list, "positions": pos.tolist(), "dtype": str(dt).replace("torch.", ""),
        "device_type": dev.type, "method": method, "batch": batch, "reservoir": reservoir,
    }
    acc = Accumulator(stat_rows, len(pos), reservoir)
    done, nonfinite, elapsed_before = 0, [], 0.0
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if ckpt_path is not None and ckpt_path.exists():
        done, nonfinite, elapsed_before = _load_checkpoint(ckpt_path, fingerprint, acc, samples)

    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(_check_int("threads", threads, 1))
    try:
        job = _Job(
            spec=spec, taps=tap_list, samples=samples, seed=seed, positions=pos, measure=measure,
            device=dev, dtype=dt, chunk_size=chunk_size, method=method, batch=batch, reservoir=reservoir,
            plan=plan, stat_rows=stat_rows, checkpoint=ckpt_path, checkpoint_every=checkpoint_every,
            progress=progress, workers=workers or default_workers(dev), fingerprint=fingerprint,
        )
        return _execute(job, acc, done, nonfinite, elapsed_before)
    finally:
        torch.set_num_threads(threads_before)


@dataclass(frozen=True)
class _Job:
    """A validated run: everything `_execute` needs besides the streaming state."""

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
    plan: Any
    stat_rows: list[tuple[str, str]]
    checkpoint: Path | None
    checkpoint_every: float
    progress: bool | str
    workers: int
    fingerprint: dict

    @property
    def quenched(self) -> bool:
        return self.measure == "quenched"


def _execute(job: _Job, acc: Accumulator, done: int, nonfinite: list[int], elapsed_before: float) -> SimulationResult:
    """The chunk loop: draw, forward, accumulate, checkpoint; then the result."""
    spec, tap_list, samples, seed, pos = job.spec, job.taps, job.samples, job.seed, job.positions
    dev, dt, plan, quenched, batch, ckpt_path = job.device, job.dtype, job.plan, job.quenched, job.batch, job.checkpoint
    fingerprint = job.fingerprint
    resumed_from = done
    t0 = time.perf_counter()
    network = table = None
    if quenched:
        network, table = draw_network(spec, seed, dev, dt)
    drawer = Drawer(plan, seed, dev, dt, job.workers)
    positions_t = torch.as_tensor(pos - 1, device=dev)
    bar = Progress(samples, done, job.progress)
    last_ckpt = time.perf_counter()
    try:
        while done < samples:
            count = min(job.chunk_size, samples - done)
            buffer, ids = drawer.draw(done, count, spec.vocab_size)
            x, draws = unpack(spec, plan, buffer, ids, table)
            if quenched:
                x = x.reshape(1, count, spec.seq_len, spec.d_model)  # one network, `count` sequences
                project = network
            else:
                x = x.reshape(count, batch, spec.seq_len, spec.d_model)  # `count` networks
                project = Projections(spec, draws)
            with torch.no_grad():
                cache = forward(spec, x, project, record=tap_list)
            _accumulate(acc, cache, tap_list, positions_t, quenched, done, count, seed, nonfinite)
            done += count
            bar.update(done)
            if ckpt_path is not None and time.perf_counter() - last_ckpt >= job.checkpoint_every:
                _save_checkpoint(ckpt_path, fingerprint, acc, done, nonfinite, elapsed_before + time.perf_counter() - t0)
                last_ckpt = time.perf_counter()
    finally:
        bar.close()
        drawer.close()
    wall = time.perf_counter() - t0
    if ckpt_path is not None and done > resumed_from:
        _save_checkpoint(ckpt_path, fingerprint, acc, done, nonfinite, elapsed_before + wall)
    if nonfinite and len(nonfinite) >= samples:
        warnings.warn(
            f"all {samples} sample(s) gave NaN/inf: nothing usable; every statistic is NaN (null in JSON)",
            NothingUsableWarning, stacklevel=3,
        )
    elif nonfinite:
        print(
            f"[simulate] warning: {len(nonfinite)} sample(s) gave NaN/inf and were left out "
            f"(first: {nonfinite[:5]})",
            file=sys.stderr,
        )
    meta = {
        "spec": spec.to_dict(),
        "seed": seed,
        "samples": samples,
        "measure": job.measure,
        "unit": "sequence" if quenched else "network",
        "batch": batch,
        "method": job.method,
        "gram_projections": sorted({f"{e.key[1]}" for e in plan.entries if e.form == "G"}),
        "device": str(dev),
        "dtype": fingerprint["dtype"],
        "taps": tap_list,
        "positions": "all" if len(pos) == spec.seq_len else pos.tolist(),
        "reservoir": job.reservoir,
        "nonfinite_samples": len(nonfinite),
        "nonfinite_indices": nonfinite[:100],
        "chunk_size": job.chunk_size,
        "resumed_from": resumed_from,
        "wall_time_s": round(elapsed_before + wall, 3),
        "versions": versions(),
    }
    return _build_result(spec, pos, acc, job.stat_rows, tap_list, meta)


def _accumulate(acc, cache, tap_list, positions_t, quenched, first, count, seed, nonfinite) -> None:
    rows, counts = [], []
    for tap in tap_list:
        for name, row in extract(tap, cache[tap], positions_t, quenched).items():
            rows.append(row)
            counts.append(row_counts(row))
    moments = np.stack(
        [np.stack([m.cpu().numpy() for m in unit_moments(row)], axis=0) for row in rows], axis=2
    )  # (4, U, R, P)
    # a NaN or inf anywhere in a unit's values makes its mean or its M4 non-finite
    finite = np.isfinite(moments).all(axis=(0, 2, 3))  # (U,)
    units = np.arange(first, first + count)
    if not finite.all():
        nonfinite.extend(int(u) for u in units[~finite])
    acc.add(units[finite], moments[:, finite], np.stack(counts), first + count)
    if acc.reservoir_size and first < acc.reservoir_size:
        take = np.flatnonzero(finite & (units < acc.reservoir_size))
        if len(take):
            sel = torch.as_tensor(take, device=positions_t.device)
            picks = [
                reservoir_picks(type(row)(row.values[sel], row.mask, row.keys), units[take], seed).cpu().numpy()
                for row in rows
            ]
            acc.add_reservoir(units[take], np.stack(picks, axis=1))


def _build_result(spec, pos, acc, stat_rows, tap_list, meta) -> SimulationResult:
    final = acc.finalize()
    res = acc.reservoir_values()  # (R, K, P)
    index = {row: i for i, row in enumerate(stat_rows)}
    stats = {}
    for tap in tap_list:
        i = index[(tap, "value")]
        extra = {}
        if (tap, "sum_sq") in index:
            j = index[(tap, "sum_sq")]
            extra = {
                "sum_sq": final["mean"][j], "sum_sq_se": final["mean_se"][j],
                "sum_sq_reservoir": res[j] if acc.reservoir_size else None,
            }
        if (tap, "entropy") in index:  # rows `simulate.record` adds for the pattern
            k = index[(tap, "entropy")]
            extra.update(entropy=final["mean"][k], entropy_se=final["mean_se"][k])
        stats[tap] = TapStats(
            tap=tap, positions=pos, n=int(final["units"][i][0]), n_values=final["n_values"][i],
            mean=final["mean"][i], mean_se=final["mean_se"][i], var=final["var"][i], var_se=final["var_se"][i],
            skewness=final["skewness"][i], kurtosis=final["kurtosis"][i],
            m2=final["m2"][i], m3=final["m3"][i], m4=final["m4"][i],
            reservoir=res[i] if acc.reservoir_size else None, **extra,
        )
    return SimulationResult(spec=spec, positions=pos, stats=stats, meta=meta)


def _save_checkpoint(path: Path, fingerprint, acc: Accumulator, done: int, nonfinite: list, elapsed: float) -> None:
    """Write atomically: a killed run leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            fingerprint=np.asarray(json.dumps(fingerprint, sort_keys=True)),
            done=np.asarray(done),
            nonfinite=np.asarray(nonfinite, dtype=np.int64),
            elapsed=np.asarray(elapsed),
            **{f"acc_{k}": v for k, v in acc.state_dict().items()},
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _load_checkpoint(path: Path, fingerprint, acc: Accumulator, samples: int) -> tuple[int, list, float]:
    # np.load keeps its default allow_pickle=False: a file that holds a pickle (or an object
    # array) fails here unread, like a truncated or foreign file
    try:
        with np.load(path) as npz:
            data = dict(npz)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same error to a user
        raise ValueError(f"checkpoint {str(path)!r} is not readable ({err}); delete it to start afresh") from None

    def damaged(why: str) -> ValueError:
        return ValueError(f"checkpoint {str(path)!r} is damaged ({why}); delete it to start afresh")

    # the fingerprint first: nothing else in a checkpoint of another run is used
    try:
        theirs = json.loads(str(data["fingerprint"]))
    except KeyError:
        raise damaged("no fingerprint") from None
    except json.JSONDecodeError:
        raise damaged("its fingerprint is not JSON") from None
    if not isinstance(theirs, dict):
        raise damaged("its fingerprint is not a JSON object")
    if theirs != json.loads(json.dumps(fingerprint, sort_keys=True)):
        diff = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        raise ValueError(
            f"checkpoint {str(path)!r} belongs to a different run (differs in: {', '.join(diff)}); "
            "use another checkpoint path or delete it"
        )
    try:
        done, nonfinite, elapsed = int(data["done"]), [int(i) for i in data["nonfinite"]], float(data["elapsed"])
    except KeyError as err:
        raise damaged(f"no {err.args[0]!r}") from None
    except (TypeError, ValueError):
        raise damaged("done, nonfinite or elapsed is not a number") from None
    if done > samples:
        raise ValueError(
            f"checkpoint {str(path)!r} already holds {done} samples, more than the {samples} asked for"
        )
    try:
        acc.load_state_dict({k[4:]: v for k, v in data.items() if k.startswith("acc_")})
    except ValueError as err:
        raise damaged(str(err)) from None
    return done, nonfinite, elapsed
