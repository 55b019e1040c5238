"""Position probing in frozen random transformers, with and without positional embeddings.

Reproduces the first experiment of Chi et al. (ACL 2023, arXiv 2305.13571) at every tap: a
randomly initialised, *frozen* causal transformer (the quenched measure: one network, fresh
sequences) is fed token ids drawn uniformly from a vocabulary; at every layer the probed
taps (`PROBE_TAPS`: ``attn.hook_z``, ``hook_attn_out``, ``hook_resid_mid``,
``hook_mlp_out``, ``hook_resid_post``; ``taps`` narrows them) are recorded, and probes
(`simulate.experiments.probe.probes`) are trained to read the absolute position
``m = 1..T`` on some sequences and tested on others. The ``theory`` probe inverts theory's
quenched law of ``log |h_m|^2/d`` (`theory.quenched`, NoPE only) with no training.

Each metric is computed per network; the reported value is the mean over networks and
``*_se`` its standard error (sd / sqrt(K)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from theory import ModelSpec
from theory.block import block

from ...engine import POSITIONAL, Progress, Sampler, check_positional, derive_seed, resolve_device, resolve_dtype
from .budget import check_probe_size
from .probes import (FULL_STATE_PROBES, PROBES, fit_ridge, fit_scalar, fit_variance_only, invert_law, mean_cosines,
                     position_metrics, resolution_length, tune_mlp)
from .theory_side import TheorySide, theory_side

POSITIONALS = tuple(POSITIONAL)  # every positional scheme of the engine: none, learned, sinusoidal, rope, alibi
AS_SPEC = "spec"  # a variant that keeps the spec's own positional field (per-layer schedules of modern blocks)
DEFAULT_VOCAB = 50257  # GPT-2's vocabulary
PROBE_TAPS = ("attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
DEFAULT_FULL_TAPS = ("hook_attn_out", "hook_resid_post")  # where the full-state probes run by default
STREAM_PROBE_NETWORK = 0x9B0E
STREAM_PROBE_MLP = 0x31F7
SIGMA_FIELDS = ("sigma_embed", "sigma_q", "sigma_k", "sigma_v", "sigma_o", "sigma_mlp_in", "sigma_mlp_out")
MARKS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


# The forward's dtypes (float16 exists on CUDA only; the engine refuses it elsewhere).
DTYPES = ("float32", "bfloat16", "float16")


def default_spec() -> ModelSpec:
    """The probe's default network: GPT-2's initialisation at a quarter of its width.

    d_model 128, 4 heads of 32, 4 layers with MLP, context 128, every sigma 0.02,
    LayerNorm eps 1e-5, tanh GELU, GPT-2's vocabulary of 50257 ids (uniform).
    """
    return ModelSpec(d_model=128, n_heads=4, n_layers=4, seq_len=128, vocab_size=DEFAULT_VOCAB)


def paper_spec() -> ModelSpec:
    """The paper's scale (``--preset paper``): GPT-2 small's shape -- d 768, 12 heads, 12 layers,
    sigmas 0.02, vocabulary 50257 -- at context 256 (512 does not fit ten minutes of two CPU cores)."""
    return ModelSpec(d_model=768, n_heads=12, n_layers=12, seq_len=256, vocab_size=DEFAULT_VOCAB)


def with_sigma(spec: ModelSpec, sigma: float) -> ModelSpec:
    """``spec`` with every init std (``sigma_embed`` and the six weight sigmas) set to ``sigma``."""
    return spec.replace(**{f: float(sigma) for f in SIGMA_FIELDS})


def probed_taps(spec: ModelSpec, taps=PROBE_TAPS) -> list[str]:
    """Full names of the probed taps of every layer, in forward order (an attention-only block
    has no ``hook_resid_mid`` or ``hook_mlp_out``)."""
    out = []
    for layer in range(int(spec.n_layers)):
        present = set(block(spec, layer).tap_suffixes)
        out += [f"blocks.{layer}.{t}" for t in PROBE_TAPS if t in taps and t in present]
    return out


def _suffix(name: str) -> str:
    return name.split(".", 2)[2]


# ---------------------------------------------------------------- features of one frozen network
def tap_features(spec: ModelSpec, sequences: int, seed: int, taps: list[str], full_taps: set[str], *,
                 device: torch.device, chunk: int = 8, dtype: torch.dtype = torch.float32) -> dict[str, dict[str, np.ndarray]]:
    """What the probes see, for one frozen network (quenched) and ``sequences`` sequences.

    Per full tap name: ``s`` = ``|h_m|^2 / d`` (sequences, T) float64, ``cos`` = the mean cosine
    with the other tokens of the sequence (sequences, T), and for taps in ``full_taps`` the
    states ``full`` (sequences, T, d) float32 (``attn.hook_z``'s heads concatenated).
    The network is `simulate`'s quenched network of ``seed``; sequence ``i`` draws its ids
    from its own generator ``(seed, i)``, so the numbers do not depend on ``chunk``.
    ``dtype`` is the engine's (`simulate.run`): bfloat16 runs the matrix products on the matrix
    units and keeps norms, softmax and the features in float32/float64 (docs/simulate.md, bf16).
    """
    check_positional(spec)
    T = int(spec.seq_len)
    out = {name: {"s": np.empty((sequences, T)), "cos": np.empty((sequences, T))} for name in taps}
    with Sampler(spec, seed=seed, measure="quenched", method="explicit", device=device, dtype=dtype) as sampler:
        for first in range(0, sequences, chunk):
            count = min(chunk, sequences - first)
            cache = sampler.taps(first, count, taps)  # each (1, count, T, ...): one network, `count` sequences
            for name in taps:
                h = cache[name][0].reshape(count, T, -1)  # (count, T, d): heads concatenated for hook_z
                h64 = h.double()
                out[name]["s"][first:first + count] = h64.pow(2).mean(dim=-1).cpu().numpy()
                out[name]["cos"][first:first + count] = mean_cosines(h64.cpu().numpy())
                if name in full_taps:
                    out[name].setdefault("full", np.empty((sequences, T, h.shape[-1]), dtype=np.float32))
                    out[name]["full"][first:first + count] = h.cpu().numpy()
            del cache
    return out


# ---------------------------------------------------------------- the experiment
@dataclass(frozen=True)
class ProbeConfig:
    """What `probe_experiment` runs; see docs/probe.md."""

    spec: ModelSpec
    positionals: tuple[str, ...] = POSITIONALS
    probes: tuple[str, ...] = PROBES
    taps: tuple[str, ...] = PROBE_TAPS
    full_taps: tuple[str, ...] = DEFAULT_FULL_TAPS  # suffixes or full names where linear/mlp/full run
    sequences: int = 256
    networks: int = 3
    seed: int = 0
    val_fraction: float = 0.125
    test_fraction: float = 0.25
    sigmas: tuple[float, ...] = ()  # NoPE sigma sweep (empty: none)
    sweep_probes: tuple[str, ...] = ("linear", "variance_only", "theory")
    mlp_epochs: int = 60
    mlp_grid: tuple[tuple[int, float], ...] = ((128, 3e-3), (512, 1e-3))
    device: str = "cpu"
    dtype: str = "float32"  # the frozen forward's matrix products: float32 | bfloat16 (| float16 on CUDA)

    def __post_init__(self):
        if not isinstance(self.spec, ModelSpec) or self.spec.is_symbolic:
            raise ValueError("spec must be a numeric theory.ModelSpec")
        for p in self.positionals:
            if p not in POSITIONALS + (AS_SPEC,):
                raise ValueError(f"positional must be among {', '.join(POSITIONALS + (AS_SPEC,))}; got {p!r}")
        if not self.positionals:
            raise ValueError("give at least one positional variant")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(map(repr, DTYPES))}; got {self.dtype!r}")
        for p in tuple(self.probes) + tuple(self.sweep_probes):
            if p not in PROBES:
                raise ValueError(f"probe must be among {', '.join(PROBES)}; got {p!r}")
        for t in self.taps:
            if t not in PROBE_TAPS:
                raise ValueError(f"taps must be among {', '.join(PROBE_TAPS)}; got {t!r}")
        if not self.taps:
            raise ValueError(f"give at least one tap among {', '.join(PROBE_TAPS)}")
        for t in self.full_taps:
            if (t.split(".", 2)[2] if t.startswith("blocks.") else t) not in PROBE_TAPS:
                raise ValueError(f"full_taps must be tap suffixes among {', '.join(PROBE_TAPS)} or full names; got {t!r}")
        for name, lo in (("sequences", 8), ("networks", 1), ("mlp_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        for s in self.sigmas:
            if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
                raise ValueError(f"sigmas must be positive numbers, got {s!r}")
        if not self.mlp_grid or any(int(h) < 1 or not float(lr) > 0 for h, lr in self.mlp_grid):
            raise ValueError("mlp_grid must be (hidden >= 1, lr > 0) pairs")
        n_val, n_test = self.split_sizes()[1:]
        if n_val < 1 or n_test < 1 or self.sequences - n_val - n_test < 4:
            raise ValueError(
                f"sequences = {self.sequences} is too few to split into training, validation "
                f"({self.val_fraction:.0%}) and test ({self.test_fraction:.0%}) sequences; give at least 16"
            )

    # an old keyword, kept so that configurations written before issue 17 still load
    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_grid[0][0])

    def split_sizes(self) -> tuple[int, int, int]:
        n_val = max(1, int(round(self.val_fraction * self.sequences)))
        n_test = max(1, int(round(self.test_fraction * self.sequences)))
        return self.sequences - n_val - n_test, n_val, n_test

    def full_tap_names(self, spec: ModelSpec) -> set[str]:
        names = set(probed_taps(spec, self.taps))
        return {n for n in names if n in self.full_taps or _suffix(n) in self.full_taps}


def network_seed(seed: int, repetition: int) -> int:
    """The seed of repetition ``r``'s frozen network; shared by all variants (paired comparison:
    the same weights and embedding table, with only the positional mechanism changed)."""
    return derive_seed(seed, STREAM_PROBE_NETWORK, repetition)


def _probe_one_network(spec: ModelSpec, cfg: ProbeConfig, rep: int, probes, side: TheorySide,
                       tuned: dict) -> tuple[dict, str]:
    """All probes at all probed taps for one frozen network: ({tap: {probe: (metrics,
    per-position |err|, info)}, "_stats": ...}, a note of the time spent). ``tuned`` carries
    the MLP hyper-parameters chosen on the first network's validation data."""
    T = spec.seq_len
    n_tr, n_va, n_te = cfg.split_sizes()
    taps = probed_taps(spec, cfg.taps)
    full_taps = cfg.full_tap_names(spec) if any(p in probes for p in FULL_STATE_PROBES) else set()
    t0 = time.perf_counter()
    feats = tap_features(spec, cfg.sequences, network_seed(cfg.seed, rep), taps, full_taps,
                         device=resolve_device(cfg.device), dtype=resolve_dtype(cfg.dtype, resolve_device(cfg.device)))
    t_fwd = time.perf_counter() - t0
    tr, va, te = slice(0, n_tr), slice(n_tr, n_tr + n_va), slice(n_tr + n_va, cfg.sequences)
    y = lambda n: np.tile(np.arange(1, T + 1), n)  # noqa: E731  (rows are sequence-major)
    out = {}
    for name in taps:
        f = feats[name]
        ls = np.log(np.clip(f["s"], 1e-300, None))
        stats = {"mean_log": ls.mean(axis=0), "var_log": ls.var(axis=0, ddof=1), "level": f["s"].mean(axis=0),
                 "cos": f["cos"].mean(axis=0)}
        entry = {}
        for probe in probes:
            if probe in FULL_STATE_PROBES and name not in full_taps:
                continue
            if probe == "theory":
                if name not in side.mean_log:
                    continue
                est = invert_law(side.mean_log[name], side.var_log[name], f["s"][te])
            elif probe == "variance_only":
                est = fit_variance_only(f["s"][tr], f["s"][te])
            elif probe == "cosine":
                est = fit_scalar(f["cos"][tr], f["cos"][te])
            else:
                X = f["full"].reshape(cfg.sequences * T, -1).astype(np.float64)
                if probe == "full":
                    X = np.concatenate([X, ls.reshape(-1, 1)], axis=1)
                X = X.reshape(cfg.sequences, T, -1)
                X_tr, X_va, X_te = (X[part].reshape(-1, X.shape[-1]) for part in (tr, va, te))
                if probe == "linear":
                    est = fit_ridge(X_tr, y(n_tr).astype(np.float64), X_va, y(n_va).astype(np.float64), X_te, T)
                else:
                    key = (name, probe)
                    grid = (tuned[key],) if key in tuned else cfg.mlp_grid
                    est, chosen = tune_mlp(X_tr, y(n_tr), X_va, y(n_va), X_te, T, grid=grid, epochs=cfg.mlp_epochs,
                                           seed=derive_seed(cfg.seed, STREAM_PROBE_MLP, rep * 10007 + taps.index(name)))
                    tuned.setdefault(key, chosen)
            true = y(n_te)
            err = np.stack([np.abs(est.point - true).reshape(n_te, T).mean(axis=0),  # (T,): |p - m| per position
                            np.abs(est.cls - true).reshape(n_te, T).mean(axis=0)])  # (T,): |c - m| per position
            entry[probe] = (position_metrics(est.point, est.cls, true), err, est.info)
        out[name] = (entry, stats)
    return out, f"forward and features {t_fwd:.1f}s, probes {time.perf_counter() - t0 - t_fwd:.1f}s"


def _mean_se(vals) -> tuple[float, float | None]:
    vals = np.asarray(vals, dtype=float)
    K = len(vals)
    return float(vals.mean()), (float(vals.std(ddof=1) / math.sqrt(K)) if K > 1 else None)


def _at(curve: np.ndarray) -> dict[str, float]:
    T = len(curve)
    return {str(m): float(curve[m - 1]) for m in sorted(set(MARKS) | {T}) if m <= T}


def _quenched_entry(stats: list[dict], name: str, side: TheorySide, n_seq: int) -> dict:
    """Measured against predicted: within-network Var(log s), network-to-network spread, probe MAE, cosine."""
    var_pred = side.var_log[name]
    ratios = [float(np.mean(s["var_log"] / var_pred)) for s in stats]
    ratio, ratio_se = _mean_se(ratios)
    q = {"var_within_predicted_at": _at(var_pred),
         "var_within_measured_at": _at(np.mean([s["var_log"] for s in stats], axis=0)),
         "var_ratio": ratio, "var_ratio_se": ratio_se,
         "dof_predicted": float(np.mean(2.0 / var_pred)),
         "network_sd_predicted": float(np.sqrt(np.mean(side.network_sd[name] ** 2))),
         "mae_predicted": side.predicted[name]["mae"], "r2_log_predicted": side.predicted[name]["r2_log"],
         "r2_predicted": side.predicted[name]["r2"], "level_predicted_at": _at(side.level[name])}
    if len(stats) > 1:  # across networks, the sampling noise of each network's mean removed
        means = np.array([s["mean_log"] for s in stats])  # (K, T)
        noise = np.mean([s["var_log"] for s in stats], axis=0) / n_seq
        q["network_sd_measured"] = float(np.sqrt(max(np.mean(means.var(axis=0, ddof=1) - noise), 0.0)))
    if name in side.cosine:
        q["cos_predicted_at"] = _at(side.cosine[name])
    return q


def _summarise(per_network: list[dict], spec: ModelSpec, probes, side: TheorySide, n_seq: int) -> tuple[list[dict], dict]:
    """Mean and standard error over networks, per (layer, tap) and probe; per-position error curves."""
    rows, curves = [], {}
    K = len(per_network)
    for name in per_network[0]:
        layer = int(name.split(".")[1])
        row = {"layer": layer, "tap": name, "tap_kind": _suffix(name)}
        stats = [net[name][1] for net in per_network]
        row["measured"] = {"level_at": _at(np.mean([s["level"] for s in stats], axis=0)),
                           "cos_at": _at(np.mean([s["cos"] for s in stats], axis=0)),
                           "var_log_at": _at(np.mean([s["var_log"] for s in stats], axis=0))}
        for probe in probes:
            if probe not in per_network[0][name][0]:
                continue
            metrics = [net[name][0][probe][0] for net in per_network]
            entry = {}
            for key in ("mae", "mad", "r2", "r2_log"):
                entry[key], entry[key + "_se"] = _mean_se([m[key] for m in metrics])
            err = np.mean([net[name][0][probe][1] for net in per_network], axis=0)  # (2, T)
            curves[(name, probe)] = err
            entry["resolution"] = resolution_length(err[1])
            entry["mae_at"], entry["mad_at"] = _at(err[0]), _at(err[1])
            entry["n_networks"] = K
            infos = [net[name][0][probe][2] for net in per_network]
            for key in infos[0]:
                entry[key] = float(np.mean([i[key] for i in infos]))
            row[probe] = entry
        if name in side.var_log:
            row["quenched"] = _quenched_entry(stats, name, side, n_seq)
        rows.append(row)
    return rows, curves


def probe_experiment(cfg: ProbeConfig, progress: bool = True, *, force: bool = False,
                     memory_limit: float | None = None, time_limit: float | None = None) -> tuple[dict, dict]:
    """Run the experiment; returns (results dict for results.json, per-position error curves).

    ``results["variants"][VARIANT]["layers"]`` has one row per (layer, tap) -- ``layer``,
    ``tap`` (full name), ``tap_kind`` -- holding per probe ``mae, mad, r2, r2_log`` and their
    ``*_se`` over ``networks`` frozen networks, ``resolution`` (the first position whose
    class error is >= 1, pooled over networks; None if never), ``mae_at``/``mad_at`` and probe
    details; ``measured`` (mean ``|h|^2/d``, mean cosine, within-network Var(log s) at
    selected positions) and, for NoPE, ``quenched`` (theory's within-network variance,
    network-to-network spread, predicted probe MAE / R^2 and mean cosine beside the
    measured ones). ``results["sigma_sweep"]`` repeats NoPE at each sigma of ``cfg.sigmas``.

    The experiment's memory and time are estimated first (`check_probe_size`); over the
    limits it is refused with a ValueError naming the field; ``force=True`` skips them.
    """
    check_probe_size(cfg, force=force, memory_limit=memory_limit, time_limit=time_limit)
    spec = cfg.spec
    results = {"variants": {}, "sigma_sweep": [], "meta": {
        "spec": spec.to_dict(), "sequences": cfg.sequences, "networks": cfg.networks, "seed": cfg.seed,
        "split": dict(zip(("train", "val", "test"), cfg.split_sizes())), "measure": "quenched",
        "taps": list(cfg.taps), "full_taps": sorted(cfg.full_tap_names(spec)), "probes": list(cfg.probes),
        "decoder": "posterior median (minimises absolute error) for the Bayes and MLP probes; ridge regression for linear",
        "mlp_grid": [list(g) for g in cfg.mlp_grid], "mlp_epochs": cfg.mlp_epochs, "dtype": cfg.dtype,
    }}
    runs = [(positional, spec if positional == AS_SPEC else spec.replace(positional=positional), list(cfg.probes))
            for positional in cfg.positionals]
    runs = [(label, vspec, [p for p in probes if p != "theory" or vspec.positional == "none"]) for label, vspec, probes in runs]
    runs += [(f"sigma={sigma:g}", with_sigma(spec.replace(positional="none"), sigma), list(cfg.sweep_probes))
             for sigma in cfg.sigmas]
    bar = Progress(len(runs) * cfg.networks, 0, bool(progress), unit="networks", label="probe")
    all_curves: dict = {}
    try:
        for i, (label, vspec, probes) in enumerate(runs):
            nope = vspec.positional == "none"
            side = theory_side(vspec, probed_taps(vspec, cfg.taps)) if nope else TheorySide(note="")
            if nope and not side.ok:
                bar.log(f"{label}: {side.note}")
            per_network, tuned = [], {}
            for r in range(cfg.networks):
                net, timing = _probe_one_network(vspec, cfg, r, probes, side, tuned)
                per_network.append(net)
                bar.update(i * cfg.networks + r + 1, f"{label} network {r + 1}/{cfg.networks}: {timing}", force=True)
            layers, err_curves = _summarise(per_network, vspec, probes, side, cfg.sequences)
            if i < len(cfg.positionals):
                results["variants"][label] = {"layers": layers}
                if nope:
                    results["meta"]["theory"] = side.note
            else:
                results["sigma_sweep"].append({"sigma": float(cfg.sigmas[i - len(cfg.positionals)]), "layers": layers})
            all_curves.update({(label, name, p): c for (name, p), c in err_curves.items()})
    finally:
        bar.close()
    return results, all_curves
