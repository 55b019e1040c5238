"""Fisher information about position in the norm of the residual stream: theory against simulation.

For every layer, the per-token statistic ``r_m = |x_m|^2/d`` of ``hook_resid_post`` (or
``hook_resid_mid`` for attention-only specs) is simulated for ``--networks`` random
networks with ``--batch`` sequences each. From the draws:

* the mean of ``r_m`` (theory: ``K[m, m]``);
* its variance *within* a network (the noise a probe of one frozen network faces) and
  *across* networks (annealed); theory: ``2 K^2/d``, i.e. d degrees of freedom; the
  measured degrees of freedom ``2 mean^2/var`` are printed;
* the Fisher information ``I(m) = mu'^2/v + v'^2/(2 v^2)``, with the derivative taken as
  a centred difference over a window of +-max(1, m/4) positions for theory and simulation
  alike, the simulation's with a bootstrap standard error over networks;
* the theory's Cramér–Rao resolution ``1/sqrt(I)`` and the last position it stays below
  one position.

    python docs/examples/position_information.py                      # d=64, 3 layers, T=64
    python docs/examples/position_information.py --spec my_spec.json --networks 400
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

import simulate
from theory import ModelSpec
from theory.information import position_information
from theory.taps import tap_name


def windowed_fisher(mean: np.ndarray, var: np.ndarray, positions: list[int]) -> np.ndarray:
    """Fisher information at ``positions`` with centred differences over +-max(1, m/4)."""
    T = mean.size
    out = []
    for m in positions:
        h = max(1, m // 4)
        lo, hi = max(1, m - h), min(T, m + h)
        dmu = (mean[hi - 1] - mean[lo - 1]) / (hi - lo)
        dv = (var[hi - 1] - var[lo - 1]) / (hi - lo)
        v = var[m - 1]
        out.append(dmu**2 / v + dv**2 / (2 * v**2))
    return np.array(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", help="ModelSpec JSON (default: d=64, 4 heads, 3 layers, T=64)")
    parser.add_argument("--networks", type=int, default=200)
    parser.add_argument("--batch", type=int, default=16, help="sequences per network")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bootstrap", type=int, default=200)
    args = parser.parse_args()
    spec = ModelSpec.load(args.spec) if args.spec else ModelSpec(d_model=64, n_heads=4, n_layers=3, seq_len=64)
    tap = "hook_resid_mid" if spec.attn_only else "hook_resid_post"
    taps = [tap_name(tap, layer) for layer in range(spec.n_layers)]
    torch.set_num_threads(1)
    start = time.time()
    r = {t: [] for t in taps}  # per network: (B, T) of |x_m|^2/d
    for first in range(0, args.networks, 50):
        count = min(50, args.networks - first)
        cache = simulate.activations(spec, taps=taps, samples=count, seed=args.seed + first, batch=args.batch, device="cpu")
        for t in taps:
            x = cache[t].double()  # (S, B, T, d)
            r[t].append((x * x).mean(-1).numpy())
    r = {t: np.concatenate(v) for t, v in r.items()}  # (N, B, T)
    info = position_information(spec)
    T = int(spec.seq_len)
    positions = [m for m in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 256, 512, 1024) if m <= T]
    rng = np.random.default_rng(args.seed)
    print(f"spec: d={spec.d_model}, heads={spec.n_heads}, layers={spec.n_layers}, T={T}; "
          f"{args.networks} networks x {args.batch} sequences; simulated in {time.time() - start:.0f} s")
    for layer, t in enumerate(taps):
        draws = r[t]
        mean = draws.mean(axis=(0, 1))
        within = draws.var(axis=1, ddof=1).mean(axis=0)
        across = draws[:, 0, :].var(axis=0, ddof=1)
        theory_mean, theory_var = info.mean[t], info.var[t]
        fisher_theory = windowed_fisher(theory_mean, theory_var, positions)
        fisher_sim = windowed_fisher(mean, within, positions)
        boot = []
        for _ in range(args.bootstrap):
            pick = rng.integers(0, draws.shape[0], draws.shape[0])
            d = draws[pick]
            boot.append(windowed_fisher(d.mean(axis=(0, 1)), d.var(axis=1, ddof=1).mean(axis=0), positions))
        se = np.std(boot, axis=0, ddof=1)
        dof_within = np.median(2 * mean**2 / within)
        dof_across = np.median(2 * mean**2 / across)
        print(f"\nlayer {layer} {t}: mean of r_m theory/sim - 1: max {np.max(np.abs(theory_mean / mean - 1)) * 100:.2f}%; "
              f"degrees of freedom of r_m: theory {spec.d_model}, within a network {dof_within:.1f}, across networks {dof_across:.1f}; "
              f"theory resolves neighbours up to m = {info.resolved_up_to(tap, layer)}")
        print(f"  {'m':>5s} {'I theory':>11s} {'I sim (within)':>15s} {'+-SE':>10s} {'CR bound':>9s}")
        for i, m in enumerate(positions):
            print(f"  {m:5d} {fisher_theory[i]:11.4g} {fisher_sim[i]:15.4g} {se[i]:10.2g} {1 / np.sqrt(fisher_theory[i]):9.3g}")


if __name__ == "__main__":
    main()
