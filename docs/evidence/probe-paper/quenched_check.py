"""Layer 0 (blocks.0) hook_attn_out: the quenched law of log |h_m|^2/d against many frozen networks.

    python docs/evidence/probe-paper/quenched_check.py D HEADS NETWORKS SEQUENCES T

Per network (seeds 100, 101, ...; GPT-2's init, vocabulary 50257, one layer), the
within-network variance of log s_m over SEQUENCES sequences divided by theory.quenched's
prediction, averaged over buckets of positions (mean ± SE over networks), and the MAE of the
untrained theory probe (the quenched law inverted by Bayes, posterior median) beside
theory.information.predicted_probe's MAE.
"""

import sys

import numpy as np
import torch

from simulate.engine import Sampler
from simulate.experiments.probe.probes import invert_law
from theory import ModelSpec
from theory.information import predicted_probe
from theory.quenched import quenched_law

torch.set_num_threads(1)
d, H, K, N, T = (int(a) for a in sys.argv[1:6])
spec = ModelSpec(d_model=d, n_heads=H, n_layers=1, seq_len=T, vocab_size=50257)
tap = "blocks.0.hook_attn_out"
law = quenched_law(spec).law(tap)
y = np.tile(np.arange(1, T + 1), N)
ratios, maes = [], []
for k in range(K):
    with Sampler(spec, seed=100 + k, measure="quenched", method="explicit", device=torch.device("cpu"),
                 dtype=torch.float32) as sampler:
        ls = np.concatenate([torch.log(sampler.taps(f, 16, [tap])[tap][0].double().pow(2).mean(-1)).numpy()
                             for f in range(0, N, 16)])  # (N, T)
    ratios.append(ls.var(axis=0, ddof=1) / law.var)
    maes.append(np.abs(invert_law(law.mean, law.var, np.exp(ls)).point - y).mean())
ratios = np.array(ratios)
edges = sorted({1, 2, 4, 16, 64, T // 2, T + 1})
for a, b in zip(edges[:-1], edges[1:]):
    per = ratios[:, a - 1:b - 1].mean(axis=1)
    print(f"m in [{a}, {b - 1}]: Var(log s) measured / predicted = {per.mean():.3f} ± {per.std(ddof=1) / np.sqrt(K):.3f}")
per = ratios.mean(axis=1)
print(f"all m: {per.mean():.3f} ± {per.std(ddof=1) / np.sqrt(K):.3f}")
print(f"theory-probe MAE {np.mean(maes):.2f} ± {np.std(maes, ddof=1) / np.sqrt(K):.2f} (per network {np.round(maes, 2).tolist()}); "
      f"predicted {predicted_probe(law.mean, law.var)['mae']:.2f}; constant guess {np.mean(np.abs(np.arange(1, T + 1) - (T + 1) / 2)):.1f}")
