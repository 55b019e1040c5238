"""Benchmark (not a test): `theory.depth.predict` for GPT-2 small with and without the early
stop of Mehler's series (issue 19, item 4), paired in one run so that machine load cancels.

    python benchmarks/theory_depth_speed.py [--rounds 2] [--seq-len 1024]

``TRUNCATION_TARGET = 0`` runs every one of the ``order`` terms (the code before the early
stop); the results agree to the goldens' 1e-12 (tests/test_golden.py).
"""

from __future__ import annotations

import argparse
import os
import time

from theory import ModelSpec, _activations
from theory.depth import predict


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=1024)
    args = parser.parse_args()
    spec = ModelSpec(seq_len=args.seq_len)
    target = _activations.TRUNCATION_TARGET
    print(f"GPT-2 small, T = {args.seq_len}; load average {os.getloadavg()[0]:.2f}")
    for r in range(args.rounds):
        times = {}
        for label, value in (("all terms", 0.0), ("early stop", target)):
            _activations.TRUNCATION_TARGET = value
            start = time.perf_counter()
            predict(spec)
            times[label] = time.perf_counter() - start
        _activations.TRUNCATION_TARGET = target
        print(f"round {r + 1}: all terms {times['all terms']:.2f} s, early stop {times['early stop']:.2f} s, "
              f"ratio {times['all terms'] / times['early stop']:.2f}x")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
