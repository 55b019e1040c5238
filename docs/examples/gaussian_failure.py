"""Where the paper's Gaussian picture is detectably wrong, and how many samples show it.

    python docs/examples/gaussian_failure.py [--confirm-samples 4000]

For the LayerNorm coordinate (eps = 0) and one attention score, the Kolmogorov distance
``D = sup |F_exact - Phi|`` between the exact law (theory.law) and the Gaussian of the
same variance; a one-sample KS test of N independent draws against the Gaussian rejects at
5% with probability about 1/2 once ``sqrt(N) D ~ 1.36``, so ``N_detect = (1.36/D)^2``.
The prediction is then confirmed with raw values from `simulate` (one coordinate per
independent network) at one small width.
"""

import argparse
import math

import numpy as np
from scipy import stats

from theory import ModelSpec, law


def kolmogorov_distance(dist) -> float:
    sd = math.sqrt(dist.var())
    lo, hi = max(dist.support()[0], -8 * sd), min(dist.support()[1], 8 * sd)
    x = np.linspace(lo, hi, 20001)
    return float(np.abs(dist.cdf(x) - stats.norm(scale=sd).cdf(x)).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--confirm-samples", type=int, default=4000)
    args = parser.parse_args()
    print("LayerNorm coordinate, eps = 0 (excess kurtosis -6/(d+1))")
    for d in (4, 8, 16, 32, 64, 256, 768):
        D = kolmogorov_distance(law(ModelSpec(d_model=d, n_heads=1, ln_eps=0.0), "blocks.0.ln1.hook_normalized"))
        print(f"  d={d:4d}  D={D:.2e}  N_detect~{(1.36 / D) ** 2:,.0f}")
    print("one attention score (n != m), eps = 0 (excess kurtosis 6/d_head)")
    for d_head in (1, 2, 4, 16, 64, 128):
        D = kolmogorov_distance(law(ModelSpec(d_model=2 * d_head, n_heads=2, ln_eps=0.0), "blocks.0.attn.hook_attn_scores"))
        print(f"  d_head={d_head:4d}  D={D:.2e}  N_detect~{(1.36 / D) ** 2:,.0f}")

    import simulate

    spec = ModelSpec(d_model=16, n_heads=4, n_layers=1, seq_len=2, ln_eps=0.0, attn_only=True)
    taps = ["blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_attn_scores"]
    n = args.confirm_samples
    result = simulate.run(spec, taps=taps, samples=n, seed=3, device="cpu", progress=False, reservoir=n)
    print(f"confirmation with simulate: d=16, d_head=4, {n} independent networks")
    for tap, position in ((taps[0], 2), (taps[1], None)):
        draws = np.asarray(result[tap].reservoir)[:, 0]  # m = 1: for scores, the only key is n = m = 1
        exact = law(spec, tap, position=1 if position is None else None)
        gauss = stats.norm(scale=math.sqrt(exact.var()))
        print(f"  {tap}: KS p-value vs exact law {stats.kstest(draws, exact.cdf).pvalue:.3f}, "
              f"vs Gaussian {stats.kstest(draws, gauss.cdf).pvalue:.2e}")


if __name__ == "__main__":
    main()
