"""Depth theory (`theory.depth`, best level) against independent simulated networks, every layer.

Prints, for each tap and layer, ``theory/simulation - 1`` and its z-score at positions
1, 2, 4, ..., T, then a Markdown table of the worst case per layer (the tables in
docs/theory.md, "Measured through depth", come from this script).

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

SUMMARY = ("hook_resid_mid", "hook_resid_post", "attn.hook_z", "hook_attn_out", "hook_mlp_out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", default='{"d_model": 64, "n_heads": 4, "n_layers": 3, "seq_len": 64}',
                        help="a ModelSpec JSON file or inline JSON")
    parser.add_argument("--samples", type=int, default=1000, help="independent networks")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--taps", default="z,attn_out,resid_mid,mlp_out,resid_post", help="short tap names")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    spec = ModelSpec.load(args.spec) if os.path.exists(args.spec) else ModelSpec.from_dict(json.loads(args.spec))
    torch.set_num_threads(args.threads)
    start = time.time()
    pred = predict(spec)
    print(f"theory: {time.time() - start:.1f} s")
    positions = [p for p in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if p <= spec.seq_len]
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
        worst.setdefault(layer, {})[suffix] = (float(np.max(np.abs(rel))), float(np.nanmax(np.abs(z))))
    shown = [s for s in SUMMARY if any(s in w for w in worst.values())]
    print("\n| layer | " + " | ".join(f"`{s.split('.')[-1]}`" for s in shown) + " |")
    print("|---|" + "---|" * len(shown))
    for layer in sorted(worst):
        cells = [f"{worst[layer][s][0] * 100:.2f}% ({worst[layer][s][1]:.1f})" if s in worst[layer] else "" for s in shown]
        print(f"| {layer} | " + " | ".join(cells) + " |")  # 0-based, as the tap names


if __name__ == "__main__":
    main()
