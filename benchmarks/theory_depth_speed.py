"""Benchmark (not a test): `theory.depth.predict` for GPT-2 small with the numerical kernels of issue
19 item 4 against the same functions as they were at commit d87bab5, paired in one run.

    python benchmarks/theory_depth_speed.py [--rounds 2] [--seq-len 1024] [--layers 12] [--base d87bab5]

The "old" path is the current tree with the rewritten functions swapped for their source at
``--base`` (read with ``git show``; every module that imported them by name is patched too), so
the rest of the recursion -- whatever other work changed since -- is the same code in both
columns. Rounds alternate old/new, so a drift in the machine's load hits both. Reported: the
wall time of each ``predict``, the time inside the rewritten functions (top-level calls), their
ratio, the largest relative difference between the two predictions (every tap and position),
and the load average. One thread (set before numpy loads).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import functools  # noqa: E402
import importlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# module -> the functions item 4 rewrote (or whose callees it rewrote)
REWRITTEN = {
    "theory._activations": ["activation_function", "hermite_coefficients", "activation_moments", "mehler_kernel"],
    "theory._kernel_maps": ["correlation", "gaussian_cosine_mean", "layernorm_kernel", "uniform_average"],
    "theory._quadrature": ["gamma_rule"],
    "theory._row_law": ["_row_integrals"],
}
TIMED = ["mehler_kernel", "layernorm_kernel", "uniform_average", "correlation", "_row_integrals", "gamma_rule"]


def _old_module(name: str, base: str) -> types.ModuleType:
    path = name.replace(".", "/") + ".py"
    done = subprocess.run(["git", "show", f"{base}:{path}"], capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise SystemExit(f"theory_depth_speed: cannot read {path} at {base} with git: {done.stderr.strip()[:200]}")
    module = types.ModuleType(f"{name}@{base}")
    module.__package__ = "theory"  # its relative imports resolve to today's package
    exec(compile(done.stdout, f"{base}:{path}", "exec"), module.__dict__)
    return module


@contextlib.contextmanager
def _patched(replacements: dict[str, dict[str, object]]):
    """Set ``module.name = value`` on every loaded theory module holding today's function."""
    saved = []
    loaded = [m for n, m in list(sys.modules.items()) if n.startswith("theory") and m is not None]
    for name, funcs in replacements.items():
        today = importlib.import_module(name)
        for f, value in funcs.items():
            current = getattr(today, f)
            for m in loaded:
                if getattr(m, f, None) is current:
                    saved.append((m, f, current))
                    setattr(m, f, value)
    try:
        yield
    finally:
        for m, f, value in reversed(saved):
            setattr(m, f, value)


def _timer(fn, name: str, clock: dict):
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        if clock["depth"]:
            return fn(*args, **kwargs)
        clock["depth"] += 1
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            clock["depth"] -= 1
            clock[name] = clock.get(name, 0.0) + time.perf_counter() - start
    return timed


def _run(spec, layers, funcs: dict[str, dict[str, object]]) -> tuple[float, dict, object]:
    from theory.depth import predict

    clock = {"depth": 0}
    timed = {mod: {f: (_timer(v, f, clock) if f in TIMED else v) for f, v in fs.items()} for mod, fs in funcs.items()}
    with _patched(timed):
        start = time.perf_counter()
        pred = predict(spec, layers=layers, force=True)
        wall = time.perf_counter() - start
    clock.pop("depth")
    return wall, clock, pred


def _largest_difference(a, b) -> float:
    worst = 0.0
    for rec in a.records:
        for q, v in rec.values.items():
            w = b[rec.tap].values[q]
            if not np.array_equal(v, w):
                worst = max(worst, float(np.max(np.abs(w - v) / np.maximum(np.abs(v), 1e-300))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=None, help="blocks to run (default all 12)")
    parser.add_argument("--base", default="d87bab5", help="the commit of the old functions")
    args = parser.parse_args()
    from theory import ModelSpec

    spec = ModelSpec(seq_len=args.seq_len)
    new = {name: {f: getattr(importlib.import_module(name), f) for f in fs} for name, fs in REWRITTEN.items()}
    old = {name: {f: getattr(_old_module(name, args.base), f) for f in fs} for name, fs in REWRITTEN.items()}
    print(f"GPT-2 small, T = {args.seq_len}, {args.layers or spec.n_layers} layers, one thread; old = functions at "
          f"{args.base}; load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores (shared machine)", flush=True)
    for r in range(args.rounds):
        runs = {}
        for label in (("old", "new") if r % 2 == 0 else ("new", "old")):
            runs[label] = _run(spec, args.layers, old if label == "old" else new)
        (t_old, c_old, p_old), (t_new, c_new, p_new) = runs["old"], runs["new"]
        inside_old, inside_new = sum(c_old.values()), sum(c_new.values())
        parts = ", ".join(f"{f} {c_old.get(f, 0):.2f} -> {c_new.get(f, 0):.2f} s" for f in TIMED)
        print(f"round {r + 1}: predict {t_old:.2f} s -> {t_new:.2f} s ({t_old / t_new:.2f}x); inside the rewritten "
              f"functions {inside_old:.2f} s -> {inside_new:.2f} s ({inside_old / max(inside_new, 1e-9):.2f}x): {parts}; "
              f"the rest {t_old - inside_old:.2f} / {t_new - inside_new:.2f} s; largest relative difference "
              f"{_largest_difference(p_old, p_new):.1e}; load {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
