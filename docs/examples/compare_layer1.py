"""Theory (best and leading) against `simulate` for one layer at GPT-2-small width.

    python docs/examples/compare_layer1.py --samples 1500 --eps 1e-5

Prints, for each tap and query position, the simulated value with its per-network
standard error, the best-level prediction and the paper's leading order, with relative
errors and z-scores. `python -m verify` is the calibrated, reported version of this.
"""

import argparse
import time

import simulate
from theory import ModelSpec, predict
from theory.taps import ATTENTION_TAPS

TAPS = [
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1500)
    parser.add_argument("--eps", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--positions", default="1,2,8,64,256")
    args = parser.parse_args()
    positions = [int(p) for p in args.positions.split(",")]
    spec = ModelSpec(n_layers=1, seq_len=max(positions), attn_only=True, ln_eps=args.eps)
    start = time.time()
    result = simulate.run(spec, taps=TAPS, samples=args.samples, seed=args.seed, device="cpu", progress=False)
    print(f"spec: GPT-2 small width/init, 1 layer, eps={args.eps}; {args.samples} networks in {time.time() - start:.0f} s")
    best = predict(spec, positions, "best", taps=ATTENTION_TAPS).to_dict()["predictions"]
    lead = predict(spec, positions, "leading", taps=ATTENTION_TAPS).to_dict()["predictions"]
    for tap in TAPS:
        quantity = "sum_sq" if tap.endswith("pattern") else "var"
        for m in positions:
            stats = result[tap].at(m)
            sim, se = stats[quantity], stats[quantity + "_se"]
            b, l = best[tap][str(m)][quantity], lead[tap][str(m)][quantity]
            zb = (b - sim) / se if se > 0 else 0.0
            zl = (l - sim) / se if se > 0 else 0.0
            print(f"  {tap:32s} m={m:4d} sim={sim:.5g}±{se:.2g}  best={b:.5g} ({(b / sim - 1) * 100:+.2f}%, z={zb:+.1f})"
                  f"  leading={l:.5g} ({(l / sim - 1) * 100:+.1f}%, z={zl:+.1f})")


if __name__ == "__main__":
    main()
