"""Depth theory (`theory.depth`, best level) against independent simulated networks, every layer.

Prints, for each tap and layer, ``theory/simulation - 1`` and its z-score at positions
1, 2, 4, ..., T (``--positions all``: every position; ``verify``: verify's log spacing), then a
Markdown table of the worst case per layer: the largest ``|theory/sim - 1|`` over positions and,
in brackets, the largest ``|z|``; a cell is **bold** where some position is beyond both 2% and
4 standard errors (the tables in docs/theory.md, "Measured through depth", come from this script).

    python docs/examples/compare_depth.py --spec '{"d_model": 256, "n_heads": 4, "n_layers": 6, "seq_len": 256}' --samples 600
    python docs/examples/compare_depth.py --spec my_spec.json --samples 300 --taps z,attn_out,resid_mid,mlp_out,resid_post
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

import simulate
from theory import ModelSpec
from theory.depth import predict
from theory.taps import parse_tap, tap_name

SUMMARY = ("attn.hook_pattern", "hook_resid_mid", "hook_resid_post", "attn.hook_z", "hook_attn_out", "hook_mlp_out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default='{"d_model": 64, "n_heads": 4, "n_layers": 3, "seq_len": 64}',
                        help="a ModelSpec JSON file or inline JSON")
    parser.add_argument("--samples", type=int, default=1000, help="independent networks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--taps", default="z,attn_out,resid_mid,mlp_out,resid_post", help="short tap names")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--positions", choices=("powers", "verify", "all"), default="powers",
                        help="positions compared: 1, 2, 4, ..., T (default); verify's spacing; every position")
    args = parser.parse_args()
    spec = ModelSpec.load(args.spec) if os.path.exists(args.spec) else ModelSpec.from_dict(json.loads(args.spec))
    torch.set_num_threads(args.threads)
    start = time.time()
    pred = predict(spec)
    print(f"theory: {time.time() - start:.1f} s")
    positions = _positions(args.positions, spec.seq_len)
    shorts = [t.strip() for t in args.taps.split(",") if t.strip()]
    shorts = [s for s in shorts if not (spec.attn_only and s in ("mlp_out", "resid_post"))]
    taps = [tap_name(s, layer) for layer in range(spec.n_layers) for s in shorts]
    start = time.time()
    sim = simulate.run(spec, taps=taps, samples=args.samples, seed=args.seed, positions=positions,
                       threads=args.threads, progress="auto")
    print(f"simulation: {args.samples} networks in {time.time() - start:.1f} s")
    at = pred.at(positions)
    worst: dict[int, dict[str, tuple[float, float]]] = {}
    print(f"{'tap':34s} " + " ".join(f"{'m=' + str(p):>15s}" for p in positions))
    for tap in taps:
        quantity = "sum_sq" if tap.endswith("hook_pattern") else "var"
        stats = sim[tap]
        value, se = getattr(stats, quantity), getattr(stats, quantity + "_se")
        theory = at[tap].values[quantity]
        rel, z = theory / value - 1, (theory - value) / np.where(se > 0, se, np.nan)
        print(f"{tap:34s} " + " ".join(f"{r * 100:+7.2f}%({zz:+5.1f})" for r, zz in zip(rel, z)))
        suffix, layer = parse_tap(tap)
        if quantity == "sum_sq":  # at m = 1 the row is one weight 1: no statistic to compare
            rel, z = rel[np.asarray(positions) > 1], z[np.asarray(positions) > 1]
        failing = int(np.sum((np.abs(rel) > 0.02) & (np.abs(z) > 4)))
        worst.setdefault(layer, {})[suffix] = (float(np.max(np.abs(rel))), float(np.nanmax(np.abs(z))), failing)
    shown = [s for s in SUMMARY if any(s in w for w in worst.values())]
    print("\n| layer | " + " | ".join(f"`{s.split('.')[-1]}`" for s in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for layer in sorted(worst):
        cells = [_cell(*worst[layer][s]) if s in worst[layer] else "" for s in shown]
        print(f"| {layer} | " + " | ".join(cells) + " |")  # 0-based, as the tap names
    total = sum(w[2] for layer in worst.values() for w in layer.values())
    print(f"\ncells beyond both 2% and 4 SE: {total} of {sum(len(positions) for _ in taps)}")


def _positions(choice: str, seq_len: int) -> list[int]:
    """The compared positions (1-based m): powers of 2, verify's log spacing, or all."""
    if choice == "all":
        return list(range(1, seq_len + 1))
    if choice == "verify":  # 1, 2, 3, 4, 6, 8, 11, 16, ...: about sqrt(2) apart, as verify spaces them
        grid = {1, seq_len} | {int(round(2 ** (k / 2))) for k in range(2 * seq_len.bit_length() + 1)}
        return sorted(p for p in grid if 1 <= p <= seq_len)
    return [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p <= seq_len]


def _cell(rel: float, z: float, failing: int) -> str:
    text = f"{rel * 100:.2f}% ({z:.1f})"
    return f"**{text}**" if failing else text


if __name__ == "__main__":
    main()
