"""One grid point as a task: theory at both levels, simulation, comparison, judgement.

`run_point` is what a Dask worker runs. It takes a plain dict (the spec as JSON fields,
positions, samples, seed, alpha, device) and returns plain columns (lists and numpy
arrays), one row per (tap, quantity, position): the theory at the best and the leading
level, the simulated statistic with its standard error across independent networks
(simulate's delta-method errors: each network one unit), the declared relative tolerance
and level of each tap at each level, and whether the best level is within its declared
tolerance (`verify.compare`: exact results by z-test, approximate ones after their
declared relative error, Holm over the point's checks at the grid's ``alpha``). The
client turns rows into the store's labelled arrays; relative errors
``theory/sim - 1`` and z-scores ``(theory - sim)/se`` are computed there from these
columns.

Theory depends on the spec and the positions only, not on the seed or the sample size:
`theory_tables` caches it per distinct (spec, positions) in each worker process (a point
retried after a failure or a lost worker, a repeated spec, a rerun in the same worker).
"""

from __future__ import annotations

import functools
import json
import math
import os
import socket
import time

import numpy as np

from theory import ModelSpec
from theory._domain import check_domain

from ..checks.comparison import comparisons
from ..checks.judge import compare
from ..checks.theory import TheoryTable, relative_tolerance, suffix_of, layer_of, theory_table
from ..checks.theory import logit_variance

LEVELS = ("best", "leading")
LEVEL_CODES = {"exact": 0, "asymptotic": 1, "approximate": 2}
THEORY_CACHE_SIZE = 64


@functools.lru_cache(maxsize=THEORY_CACHE_SIZE)
def _tables(spec_json: str, positions: tuple[int, ...]) -> tuple[TheoryTable, TheoryTable]:
    spec = ModelSpec.from_json(spec_json)
    return theory_table(spec, list(positions), "best"), theory_table(spec, list(positions), "leading")


def theory_tables(spec: ModelSpec, positions) -> tuple[TheoryTable, TheoryTable]:
    """The best and the leading level's `TheoryTable` of ``spec`` at ``positions``,
    cached per distinct (spec, positions) in this process."""
    return _tables(json.dumps(spec.to_dict(), sort_keys=True), tuple(int(m) for m in positions))


def make_task(spec: ModelSpec, positions, samples: int, seed: int, alpha: float, device: str) -> dict:
    """The plain payload of one point (what travels to a worker)."""
    return {"spec": spec.to_dict(), "positions": [int(m) for m in positions], "samples": int(samples),
            "seed": int(seed), "alpha": float(alpha), "device": device}


def simulate_point(spec: ModelSpec, taps, samples: int, seed: int, positions, device: str):
    """The simulation of one point: `simulate.run`, one torch thread, no progress."""
    import simulate  # deferred: torch is imported in the worker, when a point is run

    return simulate.run(spec, taps=taps, samples=samples, seed=seed, positions=positions, device=device,
                        progress=False, threads=1)


def run_point(task: dict) -> dict:
    """Run one point (see the module docstring); returns the columns and timings, or
    ``{"invalid": reason}`` for a spec outside theory's numeric domain (`check_domain`)."""
    t0, cpu0 = time.perf_counter(), time.process_time()
    spec = ModelSpec.from_dict(task["spec"])
    try:
        check_domain(spec, evaluate=True, level="best")
    except ValueError as err:
        return {"invalid": " ".join(str(err).split())[:400]}
    positions = task["positions"]
    best, leading = theory_tables(spec, positions)
    t_theory = time.perf_counter() - t0
    t1 = time.perf_counter()
    sim = simulate_point(spec, best.taps, task["samples"], task["seed"], positions, task["device"])
    t_sim = time.perf_counter() - t1
    checks = compare(best, sim, alpha=task["alpha"])
    passed = {(c.tap, c.quantity, c.position): c.passed for c in checks}
    rows = {(r.tap, r.quantity, r.position): r for r in comparisons(best, sim)}
    lead = {(r.tap, r.quantity, r.position): r.theory for r in comparisons(leading, sim)}
    keys = list(rows)
    cols = {
        "tap": [suffix_of(k[0]) for k in keys],
        "layer": np.array([layer_of(k[0]) for k in keys], dtype=np.int64),
        "quantity": [k[1] for k in keys],
        "position": np.array([k[2] for k in keys], dtype=np.int64),
        "theory_best": np.array([rows[k].theory for k in keys], dtype=float),
        "theory_leading": np.array([lead.get(k, math.nan) for k in keys], dtype=float),
        "sim": np.array([rows[k].sim for k in keys], dtype=float),
        "se": np.array([rows[k].se for k in keys], dtype=float),
        "within_tolerance": np.array([float(passed[k]) if k in passed else math.nan for k in keys]),
    }
    tap_rows = {"tap": [suffix_of(t) for t in best.taps], "layer": np.array([layer_of(t) for t in best.taps], np.int64)}
    for level, table in (("best", best), ("leading", leading)):
        tap_rows[f"tolerance_{level}"] = np.array([relative_tolerance(table, t) if t in table else math.nan
                                                   for t in best.taps])
        tap_rows[f"level_{level}"] = np.array([LEVEL_CODES.get(table[t].level.value, -1) if t in table else -1
                                               for t in best.taps], np.int64)
    return {
        "rows": cols,
        "taps": tap_rows,
        "passed": bool(checks.passed),
        "logit_variance": float(logit_variance(spec)),
        "theory_s": t_theory,
        "simulation_s": t_sim,
        "wall_s": time.perf_counter() - t0,
        "cpu_s": time.process_time() - cpu0,  # this worker process's CPU time for the point
        "worker": f"{socket.gethostname()}:{os.getpid()}",
    }


__all__ = ["run_point", "make_task", "theory_tables", "simulate_point", "LEVELS", "LEVEL_CODES"]
