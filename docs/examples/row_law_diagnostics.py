"""Where the layer-l attention rows of the depth theory miss at larger logits (issue 15, item 1).

For one spec and one layer l >= 1 (0-based, like the tap names: ``blocks.l``; layer 0's
rows are exact) this compares, per query m, ``A_mm = E|sum_k a_mk e_k|^2/d``
(``hook_z = sigma_v^2 d A_mm``) and ``S_2(m) = E[sum_k a_mk^2]`` from:

* ``theory``: `theory.depth.predict` (best level);
* ``mean-kernel Gaussian``: logits Gaussian with the theory's *mean* kernel ``E`` as their
  full covariance (the Gaussian closure at the mean kernel, ``A = (D/d) E[a^T E a] + E[(a.y)^2]/d``);
* ``per-network``: the layer's LayerNorm outputs of ``--networks`` simulated networks
  (`simulate.engine.cache.activations`), with the exact expectation over ``W_q, W_k`` given
  them by ``--draws`` draws per network (this reproduces `simulate.run`);
* ``sphere at D_eff``: theory's row law (`theory.row_law.row_law`, sphere-coordinate keys,
  the same query mixture) with the sphere dimension replaced by the measured
  ``D_eff(m) = v_m^2 / mean_{k != k'} Var_net(R_kk')`` (``R = J G J``, the per-network centred
  Gram matrix of the keys ``k <= m``) in both the key law and the coupling ``Xi/D``;
* ``Cov``: ``E[G:M] - Gbar:E[M]`` (``M = E[a a^T | network]``): how far the weights lean
  toward the keys that are close in that network.

    python docs/examples/row_law_diagnostics.py --spec '{"d_model": 128, "n_heads": 4, "n_layers": 2, "seq_len": 128, "sigma_q": 0.1, "sigma_k": 0.1}'

One thread; numpy apart from the simulated LayerNorm outputs.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os

import numpy as np
import torch

from simulate.engine.cache import activations
from theory import ModelSpec
from theory.kernel_maps import key_spread, uniform_average
from theory.row_law import chi2_mixture, row_law, sphere_key_law
from theory.depth import predict
from theory.quantities import logit_scale_squared


def mean_kernel(spec: ModelSpec, layer: int):
    """The theory's normalised kernel ``E`` at the attention of ``layer`` (0-based), and its prediction."""
    maps = importlib.import_module("theory.depth_maps")
    kept = {}
    original = maps.DEPTH_MAPS["attention"]

    def keep(sub, stream, at):
        if at.layer == layer:
            kept["E"] = stream.E.copy()
        original(sub, stream, at)

    maps.DEPTH_MAPS["attention"] = keep
    try:
        pred = predict(spec)
    finally:
        maps.DEPTH_MAPS["attention"] = original
    return kept["E"], pred


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="a ModelSpec JSON file or inline JSON")
    parser.add_argument("--layer", type=int, default=1,
                        help="0-based layer, as in the tap names (blocks.LAYER); >= 1, as layer 0's rows are exact")
    parser.add_argument("--networks", type=int, default=400)
    parser.add_argument("--draws", type=int, default=8, help="W_q, W_k draws per network")
    parser.add_argument("--gaussian", type=int, default=20000, help="samples of the mean-kernel Gaussian law")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = ModelSpec.load(args.spec) if os.path.exists(args.spec) else ModelSpec.from_dict(json.loads(args.spec))
    layer = args.layer
    if not 1 <= layer < int(spec.n_layers):
        parser.error(f"--layer must be between 1 and n_layers - 1 = {int(spec.n_layers) - 1} (0-based), got {layer}")
    E, pred = mean_kernel(spec, layer)
    T, d, dh = E.shape[0], int(spec.d_model), int(spec.d_head)
    D = d - 1
    s2_theory = pred[f"blocks.{layer}.attn.hook_pattern"].values["sum_sq"]
    a_theory = pred[f"blocks.{layer}.attn.hook_z"].values["var"] / (float(spec.sigma_v) ** 2 * d)
    scale2 = logit_scale_squared(dh, spec.attn_scale)
    qk2 = scale2 * float(spec.sigma_q) ** 2 * float(spec.sigma_k) ** 2 * dh * d**2
    U = uniform_average(E)
    v = key_spread(E, U)

    X = activations(spec, taps=[f"blocks.{layer}.ln1.hook_normalized"], samples=args.networks, seed=args.seed,
                    device="cpu")[f"blocks.{layer}.ln1.hook_normalized"].double().numpy()[:, 0]  # (S, T, d)
    S = X.shape[0]
    G = np.einsum("std,sud->stu", X, X) / d  # per-network Gram of the keys   (S, T, T)
    rows = [m for m in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if m <= T]
    rng = np.random.default_rng(args.seed)
    mask = np.tril(np.ones((T, T), bool))
    A_net, S_net = np.zeros((S, T)), np.zeros((S, T))
    M = {m: np.zeros((S, m, m)) for m in rows}
    s = np.sqrt(scale2)
    for i in range(S):
        for _ in range(args.draws):
            Wq = rng.standard_normal((d, dh)) * float(spec.sigma_q)
            Wk = rng.standard_normal((d, dh)) * float(spec.sigma_k)
            scores = np.where(mask, s * (X[i] @ Wq) @ (X[i] @ Wk).T, -np.inf)
            a = np.exp(scores - scores.max(1, keepdims=True))
            a /= a.sum(1, keepdims=True)
            A_net[i] += ((a @ X[i]) ** 2).sum(1) / d / args.draws
            S_net[i] += (a**2).sum(1) / args.draws
            for m in rows:
                M[m][i] += np.outer(a[m - 1, :m], a[m - 1, :m]) / args.draws
    Gbar = G.mean(0)
    print(f"layer {layer} (blocks.{layer}), {S} networks x {args.draws} draws; A_mm (theory/per-network - 1), S_2")
    print(f"{'m':>5} {'theory':>9} {'mean-kernel Gauss':>18} {'per-network':>16} {'D_eff':>6} {'sphere at D_eff':>16} "
          f"{'Cov':>8} {'S2 theory':>9} {'S2 net':>8} {'S2 D_eff':>8}")
    for m in rows:
        Em = E[:m, :m]
        w, V = np.linalg.eigh(Em)
        y = rng.standard_normal((args.gaussian, m)) @ (V * np.sqrt(np.maximum(w, 0))).T
        g = rng.chisquare(dh, args.gaussian) / dh * rng.chisquare(D, args.gaussian) / D
        logits = np.sqrt(qk2 * E[m - 1, m - 1] * g)[:, None] * y
        a = np.exp(logits - logits.max(1, keepdims=True))
        a /= a.sum(1, keepdims=True)
        a_gauss = ((D / d) * np.einsum("ni,ij,nj->n", a, Em, a) + (a * y).sum(1) ** 2 / d).mean()
        J = np.eye(m) - 1.0 / m
        R = np.einsum("ij,sjk,kl->sil", J, G[:, :m, :m], J)
        off = ~np.eye(m, dtype=bool)
        d_eff = v[m - 1] ** 2 / R.var(0)[off].mean() if m > 1 else float(D)
        law = row_law([m], float(qk2 * E[m - 1, m - 1] * v[m - 1]), sphere_key_law(64, d_eff), mixture=chi2_mixture(dh, D, 8, 6))
        a_eff = U[m - 1, m - 1] + v[m - 1] * (law.sum_sq[0] - 1.0 / m) + v[m - 1] * law.coupling[0] / d_eff
        cov = np.einsum("sij,sij->s", G[:, :m, :m], M[m]).mean() - np.einsum("ij,ij->", Gbar[:m, :m], M[m].mean(0))
        net, se = A_net[:, m - 1].mean(), A_net[:, m - 1].std() / np.sqrt(S)
        print(f"{m:5d} {a_theory[m - 1]:.5f} {a_gauss:.5f} ({a_gauss / net - 1:+.1%}) {net:.5f}+-{se:.5f} {d_eff:6.1f} "
              f"{a_eff:.5f} ({a_eff / net - 1:+.1%}) {cov / net:+.1%} {s2_theory[m - 1]:.5f} {S_net[:, m - 1].mean():.5f} "
              f"{law.sum_sq[0]:.5f}   theory {a_theory[m - 1] / net - 1:+.1%}")


if __name__ == "__main__":
    main()
