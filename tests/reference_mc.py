"""An independent, deliberately plain Monte Carlo of layer 1 (numpy, float64).

Used by the theory tests only: explicit weight matrices per network, the textbook
forward pass, no shared code with ``simulate``. Returns, per tap and query position,
the pooled mean and variance of one coordinate with standard errors across networks.
"""

from __future__ import annotations

import numpy as np


def layer_one_mc(spec, positions, networks: int, seed: int, batch: int = 50, sequences: int = 1):
    """Per-network moments of the layer-1 taps; annealed measure (fresh weights each net).

    Returns ``{tap: {m: (mean, mean_se, var, var_se)}}`` where the variance is
    ``E[x^2] - E[x]^2`` pooled over coordinates and the standard errors come from the
    spread of the per-network averages (networks are independent).
    """
    rng = np.random.default_rng(seed)
    d, H, T = spec.d_model, spec.n_heads, max(positions)
    dh = d // H
    scale = dh ** -0.5 if spec.attn_scale == "sqrt" else 1.0 / dh
    pos = np.asarray(positions) - 1
    names = ["hook_resid_pre", "ln1.hook_normalized", "attn.hook_q", "attn.hook_k", "attn.hook_v",
             "attn.hook_attn_scores", "attn.hook_pattern_sum_sq", "attn.hook_z", "hook_attn_out", "hook_resid_mid"]
    first = {n: [] for n in names}  # per-network mean of x      (networks, P)
    second = {n: [] for n in names}  # per-network mean of x^2   (networks, P)
    mask = np.tril(np.ones((T, T), dtype=bool))
    key_count = mask.sum(1)[pos]  # m keys at row m
    done = 0
    while done < networks:
        S = min(batch, networks - done)
        done += S
        x = rng.standard_normal((S, sequences, T, d)) * spec.sigma_embed
        wq = rng.standard_normal((S, H, d, dh)) * spec.sigma_q
        wk = rng.standard_normal((S, H, d, dh)) * spec.sigma_k
        wv = rng.standard_normal((S, H, d, dh)) * spec.sigma_v
        wo = rng.standard_normal((S, H * dh, d)) * spec.sigma_o
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        e = (x - mu) / np.sqrt(var + spec.ln_eps)
        q = np.einsum("sbtd,shdk->sbhtk", e, wq)
        k = np.einsum("sbtd,shdk->sbhtk", e, wk)
        v = np.einsum("sbtd,shdk->sbhtk", e, wv)
        logits = np.einsum("sbhmk,sbhnk->sbhmn", q, k) * scale
        masked = np.where(mask, logits, -np.inf)
        a = np.exp(masked - masked.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        zz = np.einsum("sbhmn,sbhnk->sbhmk", a, v)  # (S, B, H, T, dh)
        zcat = np.moveaxis(zz, 2, 3).reshape(S, sequences, T, H * dh)
        out = np.einsum("sbtk,skd->sbtd", zcat, wo)
        mid = x + out

        def add(name, arr, axes):
            first[name].append(arr.mean(axis=axes))
            second[name].append((arr**2).mean(axis=axes))

        for name, arr in (("hook_resid_pre", x), ("ln1.hook_normalized", e), ("hook_attn_out", out), ("hook_resid_mid", mid)):
            add(name, arr[:, :, pos, :], (1, 3))
        for name, arr in (("attn.hook_q", q), ("attn.hook_k", k), ("attn.hook_v", v), ("attn.hook_z", zz)):
            add(name, arr[:, :, :, pos, :], (1, 2, 4))
        rows = np.where(mask, logits, 0.0)[:, :, :, pos, :]  # (S, B, H, P, T)
        first["attn.hook_attn_scores"].append(rows.sum(-1).mean((1, 2)) / key_count)
        second["attn.hook_attn_scores"].append((rows**2).sum(-1).mean((1, 2)) / key_count)
        sq = (a[:, :, :, pos, :] ** 2).sum(-1)
        first["attn.hook_pattern_sum_sq"].append(sq.mean((1, 2)))
        second["attn.hook_pattern_sum_sq"].append((sq**2).mean((1, 2)))
    out = {}
    for name in names:
        f1 = np.concatenate(first[name])  # (N, P)
        f2 = np.concatenate(second[name])
        n = f1.shape[0]
        mean, mean_se = f1.mean(0), f1.std(0, ddof=1) / np.sqrt(n)
        if name.endswith("sum_sq"):
            out[name] = {int(m): (mean[i], mean_se[i], None, None) for i, m in enumerate(positions)}
            continue
        # Var = E[x^2] - E[x]^2, with the delta-method SE of the per-network pairs.
        var = f2.mean(0) - mean**2
        g = f2 - 2 * mean * f1
        var_se = g.std(0, ddof=1) / np.sqrt(n)
        out[name] = {int(m): (mean[i], mean_se[i], var[i], var_se[i]) for i, m in enumerate(positions)}
    return out


SPECS = {
    # the two specs quoted in docs/theory.md
    "A": dict(d_model=64, n_heads=4, n_layers=1, seq_len=256, sigma_q=0.05, sigma_k=0.2, sigma_v=0.5, sigma_o=0.1, ln_eps=1e-5),
    "B": dict(d_model=128, n_heads=2, n_layers=1, seq_len=256, sigma_q=0.1, sigma_k=0.342, sigma_v=0.3, sigma_o=0.05,
              ln_eps=0.0, attn_scale="linear"),
}


def main() -> None:
    """Print theory (best and leading) against this Monte Carlo for the specs above."""
    import argparse

    from theory import ModelSpec, predict
    from theory.taps import ATTENTION_TAPS

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--networks", type=int, default=2000)
    parser.add_argument("--positions", default="1,2,8,64,256")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    positions = [int(p) for p in args.positions.split(",")]
    for name, fields in SPECS.items():
        spec = ModelSpec(**fields)
        mc = layer_one_mc(spec, positions, networks=args.networks, seed=args.seed, sequences=2)
        best = predict(spec, positions, "best", taps=ATTENTION_TAPS).to_dict()["predictions"]
        lead = predict(spec, positions, "leading", taps=ATTENTION_TAPS).to_dict()["predictions"]
        print(f"spec {name}: {fields}")
        for tap, per_m in mc.items():
            full = "blocks.0." + tap.replace("_sum_sq", "")
            q = "sum_sq" if tap.endswith("sum_sq") else "var"
            for m in positions:
                mean, mse, var, vse = per_m[m]
                sim, se = (mean, mse) if q == "sum_sq" else (var, vse)
                b, l = best[full][str(m)][q], lead[full][str(m)][q]
                z = (b - sim) / se if se > 0 else 0.0
                print(f"  {tap:26s} m={m:4d} sim={sim:.5g}±{se:.2g}  best={b:.5g} ({(b / sim - 1) * 100:+.2f}%, z={z:+.1f})"
                      f"  leading={l:.5g} ({(l / sim - 1) * 100:+.1f}%)")


if __name__ == "__main__":
    main()
