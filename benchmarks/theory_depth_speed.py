"""Benchmark (not a test): `theory.depth.predict` for GPT-2 small against an older tree, paired in one run.

    python benchmarks/theory_depth_speed.py --whole [--baseline 1f4ddfb] [--rounds 3] [--seq-len 1024] [--layers 12]
    python benchmarks/theory_depth_speed.py [--rounds 2] [--seq-len 1024] [--layers 12] [--base d87bab5]

``--whole``: the whole ``predict`` of today's tree against the whole ``theory`` package at
``--baseline`` (``git archive`` into a temporary directory), each run in its own single-thread
subprocess (one warm-up ``predict`` of one layer first: imports, caches), the two trees
alternating round by round (base first in odd rounds, today first in even ones) so that a drift of
the machine's load hits both. Reported per round: both wall times and their ratio; then the median
ratio, the largest relative difference between the two predictions (every tap, quantity and
position) and the load average before and after.

Without ``--whole`` (the kernels of the first pass of issue 19 item 4):

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


# One timed `predict` in a fresh single-thread process on the `theory` package under argv[1]:
# prints its wall time (JSON) and writes every tap's values to argv[2] (npz).
_CHILD = """
import os, sys
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[v] = "1"
sys.path.insert(0, sys.argv[1])
import json, time
import numpy as np
import theory
from theory import ModelSpec
from theory.depth import predict
assert os.path.dirname(os.path.dirname(os.path.abspath(theory.__file__))) == os.path.abspath(sys.argv[1]), theory.__file__
spec = ModelSpec(seq_len=int(sys.argv[3]))
layers = int(sys.argv[4]) or None
predict(spec, layers=1, force=True)  # warm-up: imports, quadrature caches
start = time.perf_counter()
pred = predict(spec, layers=layers, force=True)
wall = time.perf_counter() - start
np.savez(sys.argv[2], **{rec.tap + "|" + q: np.asarray(v, dtype=float) for rec in pred.records for q, v in rec.values.items()})
print(json.dumps({"wall": wall}))
"""


def _tree_at(commit: str, into: Path) -> Path:
    """The ``theory`` package at ``commit`` (``git archive``), unpacked under ``into``."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "theory"], capture_output=True, cwd=ROOT)
    if archive.returncode != 0:
        raise SystemExit(f"theory_depth_speed: cannot read theory/ at {commit} with git: "
                         f"{archive.stderr.decode(errors='replace').strip()[:200]}")
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    return into


def _timed_child(tree: Path, out: Path, seq_len: int, layers: int | None) -> float:
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tree), str(out), str(seq_len), str(layers or 0)],
                          capture_output=True, text=True, cwd=tree)
    if done.returncode != 0:
        raise SystemExit(f"theory_depth_speed: the run in {tree} failed: {done.stderr.strip()[-400:]}")
    import json
    return float(json.loads(done.stdout.strip().splitlines()[-1])["wall"])


def _largest_file_difference(a: Path, b: Path) -> float:
    x, y = np.load(a), np.load(b)
    if sorted(x.files) != sorted(y.files):
        raise SystemExit("theory_depth_speed: the two trees predict different taps or quantities")
    worst = 0.0
    for k in x.files:
        if not np.array_equal(x[k], y[k]):
            worst = max(worst, float(np.max(np.abs(y[k] - x[k]) / np.maximum(np.abs(x[k]), 1e-300))))
    return worst


def whole(args) -> None:
    """``--whole``: today's ``predict`` against the tree at ``--baseline`` (module docstring)."""
    import statistics
    import tempfile

    with tempfile.TemporaryDirectory(prefix="theory-speed-") as tmp:
        tmp = Path(tmp)
        (tmp / "base").mkdir()
        trees = {"base": _tree_at(args.baseline, tmp / "base"), "today": ROOT}
        load = os.getloadavg()
        print(f"GPT-2 small, T = {args.seq_len}, {args.layers or 12} layers, whole predict, one thread per process; "
              f"base = theory/ at {args.baseline}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on "
              f"{os.cpu_count()} cores (shared machine)", flush=True)
        ratios = []
        for r in range(args.rounds):
            walls = {}
            for label in (("base", "today") if r % 2 == 0 else ("today", "base")):
                walls[label] = _timed_child(trees[label], tmp / f"{label}.npz", args.seq_len, args.layers)
            ratios.append(walls["base"] / walls["today"])
            print(f"round {r + 1}: {args.baseline} {walls['base']:.2f} s, today {walls['today']:.2f} s: "
                  f"{ratios[-1]:.2f}x (load {os.getloadavg()[0]:.2f})", flush=True)
        worst = _largest_file_difference(tmp / "base.npz", tmp / "today.npz")
        load = os.getloadavg()
        print(f"median speed-up {statistics.median(ratios):.2f}x over {args.rounds} rounds "
              f"(range {min(ratios):.2f}-{max(ratios):.2f}x); largest relative difference of the predictions "
              f"{worst:.1e}; load average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--whole", action="store_true", help="time the whole predict against --baseline's tree")
    parser.add_argument("--baseline", default="1f4ddfb", help="--whole: the commit of the tree compared with")
    parser.add_argument("--rounds", type=int, default=None, help="paired rounds (default 3 with --whole, else 2)")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=None, help="blocks to run (default all 12)")
    parser.add_argument("--base", default="d87bab5", help="without --whole: the commit of the old functions")
    args = parser.parse_args()
    if args.rounds is None:
        args.rounds = 3 if args.whole else 2
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.whole:
        return whole(args)
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
