"""Running a sweep on Dask distributed: one task per grid point, results written as they come.

`sweep` opens (or makes, or extends) the store, records the invalid points, submits every
point that is not finished as one task (`verify.sweep.tasks.run_point`) to a Dask cluster
-- a `distributed.LocalCluster` of ``workers`` single-threaded processes by default, or the
scheduler at ``scheduler`` (``tcp://HOST:8786``) -- and, in this (the client) process,
writes each point to the store the moment it finishes. A failed task records its error
and the sweep goes on; a rerun skips the finished points (and retries failed ones unless
``retry_failed=False``); a killed sweep loses only the points in flight.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from theory.block import block
from theory._outputs import atomic_write_text

from .grid import Grid, Point, point_seed
from .progress import Progress
from .store import LEVELS, QUANTITIES, STATUS, STORE_NAME, Store, open_store
from .tasks import make_task, run_point


@dataclass
class SweepSummary:
    """What a `sweep` call did."""

    store: Path
    total: int
    finished: int = 0  # done, in the store (this run or before)
    ran: int = 0  # finished in this run
    skipped: int = 0  # done before this run
    failed: int = 0
    invalid: int = 0
    wall_s: float = 0.0
    write_s: float = 0.0  # the client's time writing points to the store
    note: str = ""
    errors: list[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"sweep: {self.finished}/{self.total} points finished ({self.ran} in this run, {self.skipped} "
                f"already in the store), {self.failed} failed, {self.invalid} invalid; {self.wall_s:.1f} s; "
                f"store {self.store}")


def labels_of(grid: Grid, points: list[Point]) -> dict[str, list]:
    """The labels of every dimension of the store for ``grid``: the axes' values, then the
    taps, layers, quantities, positions and levels its valid points have."""
    valid = [p.spec for p in points if p.valid]
    taps: dict[str, None] = {}
    for spec in {(s.n_layers, s.attn_only): s for s in valid}.values():
        taps.update(dict.fromkeys(t.suffix for sub in block(spec).sublayers for t in sub.taps))
    if valid:
        taps = {"hook_resid_pre": None, **taps}
    positions = sorted({m for s in valid for m in grid.positions_of(s)})
    layers = list(range(max((int(s.n_layers) for s in valid), default=1)))
    return {**{a: list(v) for a, v in grid.axes.items()}, "tap": list(taps) or ["hook_resid_pre"],
            "layer": layers, "quantity": list(QUANTITIES), "position": positions or [1], "level": list(LEVELS)}


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _client(scheduler: str | None, workers: int):
    """A Dask client: to the scheduler at ``scheduler``, or to a new LocalCluster."""
    from distributed import Client, LocalCluster  # deferred: the optional [sweep] extra

    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except (OSError, TimeoutError) as err:
            raise ValueError(f"--scheduler: cannot reach a Dask scheduler at {scheduler} ({_one_line(err)})") from None
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=logging.ERROR)
    return Client(cluster), cluster


def prepare(grid: Grid, out: Path) -> tuple[Store, list[Point], str]:
    """Open the store for ``grid`` under ``out`` and record its invalid points."""
    points = grid.points()
    out.mkdir(parents=True, exist_ok=True)
    store, note = open_store(out / STORE_NAME, grid.settings(), labels_of(grid, points), list(grid.axes))
    status = store.status()
    for p in points:
        if not p.valid:
            idx = store.index_of(p.coords)
            if int(status[idx]) != STATUS["invalid"]:
                store.write_invalid(idx, p.invalid)
    atomic_write_text(out / "grid.json", json.dumps(grid.to_dict(), indent=2) + "\n")
    return store, points, note


def sweep(grid: Grid, out, *, scheduler: str | None = None, workers: int = 2, client=None,
          retry_failed: bool = True, progress: bool = True, stream=None) -> SweepSummary:
    """Run every unfinished point of ``grid`` and write it to ``out/sweep.zarr``.

    ``client``: an existing `distributed.Client` to use (then ``scheduler`` and
    ``workers`` are ignored and the client is left open).
    """
    t0 = time.perf_counter()
    out = Path(out)
    store, points, note = prepare(grid, out)
    status = store.status()
    summary = SweepSummary(store=out / STORE_NAME, total=len(points), note=note)
    todo = []
    for p in points:
        s = int(status[store.index_of(p.coords)])
        if not p.valid or s == STATUS["invalid"]:
            summary.invalid += 1
        elif s == STATUS["done"]:
            summary.skipped += 1
        elif s == STATUS["failed"] and not retry_failed:
            summary.failed += 1
        else:
            todo.append(p)
    summary.finished = summary.skipped
    own = None
    if todo:
        made = client is None
        if made:
            client, own = _client(scheduler, workers)
        try:
            _run(client, store, grid, todo, summary, progress, stream)
        finally:
            if made:  # our client (and LocalCluster); a client passed in stays open
                client.close()
                if own is not None:
                    own.close()
    summary.wall_s = time.perf_counter() - t0
    return summary


def _run(client, store: Store, grid: Grid, todo: list[Point], summary: SweepSummary, progress: bool, stream) -> None:
    from distributed import as_completed  # deferred: the optional [sweep] extra

    slots = max(1, sum(client.nthreads().values())) if hasattr(client, "nthreads") else 1
    bar = Progress(summary.total, finished=summary.finished, invalid=summary.invalid, slots=slots, stream=stream,
                   enabled=progress)
    bar.failed = summary.failed
    futures = {}
    for p in todo:
        seed = point_seed(grid.seed, p.fields)
        task = make_task(p.spec, grid.positions_of(p.spec), grid.samples, seed, grid.alpha, grid.device)
        # The key names the whole task: two clients of one scheduler asking for the same point share it.
        key = "sweep-point-" + hashlib.sha256(json.dumps(task, sort_keys=True).encode()).hexdigest()[:24]
        future = client.submit(run_point, task, key=key, pure=False, retries=0)
        futures[future] = (p, seed)
    bar.in_flight = len(futures)
    bar.show(force=True)
    try:
        for future in as_completed(list(futures)):
            p, seed = futures.pop(future)
            idx = store.index_of(p.coords)
            if future.status == "finished":
                result = future.result()
                if "invalid" in result:
                    store.write_invalid(idx, result["invalid"], seed)
                    summary.invalid += 1
                    bar.invalid += 1
                else:
                    t = time.perf_counter()
                    store.write_result(idx, result, seed)
                    summary.write_s += time.perf_counter() - t
                    summary.ran += 1
                    summary.finished += 1
                    bar.finished += 1
            else:
                message = _one_line(future.exception()) if future.status == "error" else f"task {future.status}"
                store.write_failure(idx, message, seed)
                summary.failed += 1
                summary.errors.append(f"{p.coords}: {message}")
                bar.failed += 1
            bar.done_here += 1
            bar.in_flight = len(futures)
            future.release()
            bar.show()
    except BaseException:
        for future in futures:
            future.cancel()
        raise
    finally:
        bar.close()


__all__ = ["sweep", "prepare", "labels_of", "SweepSummary"]
