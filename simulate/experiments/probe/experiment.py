"""Position probing in frozen random transformers, with and without positional embeddings.

Reproduces the first experiment of Chi et al. (ACL 2023, arXiv 2305.13571): a randomly
initialised, *frozen* causal transformer (the quenched measure: one network, fresh
sequences) is fed token ids drawn uniformly from a vocabulary, its hidden states -- the
output of every block, ``blocks.{l}.hook_resid_post`` (an attention-only block ends there
too, as in TransformerLens) -- are recorded at every layer, and probes
(`simulate.experiments.probe.probes`) are trained to read the absolute position
``m = 1..T`` from them on some sequences and tested on others. The ``theory`` probe
inverts the curve ``v(m) = E|x_m|^2 / d`` of ``theory.depth`` (NoPE only).

Each metric is computed per network; the reported value is the mean over networks and
``*_se`` its standard error (sd / sqrt(K)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from theory import depth
from theory import ModelSpec
from theory.block import block

from ...engine import POSITIONAL, Progress, Sampler, check_positional, derive_seed, resolve_device
from .budget import check_probe_size
from .probes import PROBES, fit_mlp, fit_ridge, fit_variance_only, invert_variance_curve, position_metrics, resolution_length

POSITIONALS = tuple(POSITIONAL)  # every positional scheme of the engine: none, learned, sinusoidal, rope, alibi
DEFAULT_VOCAB = 50257  # GPT-2's vocabulary
STREAM_PROBE_NETWORK = 0x9B0E
STREAM_PROBE_MLP = 0x31F7
SIGMA_FIELDS = ("sigma_embed", "sigma_q", "sigma_k", "sigma_v", "sigma_o", "sigma_mlp_in", "sigma_mlp_out")


def default_spec() -> ModelSpec:
    """The probe's default network: GPT-2's initialisation at a quarter of its width.

    d_model 128, 4 heads of 32, 4 layers with MLP, context 128, every sigma 0.02,
    LayerNorm eps 1e-5, tanh GELU, GPT-2's vocabulary of 50257 ids (uniform). Small enough
    that five variants x three networks finish in a few minutes on two CPU cores; pass
    GPT-2 small itself with ``--spec``.
    """
    return ModelSpec(d_model=128, n_heads=4, n_layers=4, seq_len=128, vocab_size=DEFAULT_VOCAB)


def with_sigma(spec: ModelSpec, sigma: float) -> ModelSpec:
    """``spec`` with every init std (``sigma_embed`` and the six weight sigmas) set to ``sigma``."""
    return spec.replace(**{f: float(sigma) for f in SIGMA_FIELDS})


# ---------------------------------------------------------------- hidden states
def block_output(spec: ModelSpec) -> str:
    """The tap a probe reads: the block's output (`theory.block.Block.output_tap`),
    ``hook_resid_post`` -- with or without an MLP, as in TransformerLens."""
    return block(spec).output_tap


def hidden_states(spec: ModelSpec, sequences: int, seed: int, *, device: torch.device,
                  chunk: int = 16, keep_full: bool = True) -> tuple[list[np.ndarray] | None, np.ndarray]:
    """``blocks.{l}.hook_resid_post`` of one frozen network (quenched) for ``sequences`` sequences.

    The network is `simulate`'s quenched network of ``seed`` (weights, embedding table and,
    for ``learned``, position table from the network stream); sequence ``i`` draws its ids
    from its own generator ``(seed, i)``, so the numbers do not depend on ``chunk``.
    Returns the full states per layer, each (sequences, T, d) float32 (None when
    ``keep_full`` is false), and the second moments ``|x|^2 / d``, (L, sequences, T) float64.
    """
    check_positional(spec)
    T, d, L = spec.seq_len, spec.d_model, spec.n_layers
    taps = [f"blocks.{l}.{block_output(spec)}" for l in range(L)]
    full = [np.empty((sequences, T, d), dtype=np.float32) for _ in range(L)] if keep_full else None
    second = np.empty((L, sequences, T), dtype=np.float64)
    with Sampler(spec, seed=seed, measure="quenched", method="explicit", device=device, dtype=torch.float32) as sampler:
        for first in range(0, sequences, chunk):
            count = min(chunk, sequences - first)
            cache = sampler.taps(first, count, taps)  # each (1, count, T, d): one network, `count` sequences
            for l, tap in enumerate(taps):
                h = cache[tap][0]  # (count, T, d)
                second[l, first:first + count] = h.double().pow(2).mean(dim=-1).cpu().numpy()
                if keep_full:
                    full[l][first:first + count] = h.cpu().numpy()
    return full, second


# ---------------------------------------------------------------- theory curve
def theory_curves(spec: ModelSpec) -> tuple[list[np.ndarray] | None, str]:
    """Predicted ``E|x_m|^2 / d`` of each block's output per layer from ``theory.depth``.

    Returns (curves or None, a note). The theory covers Gaussian inputs; a vocabulary of
    i.i.d. Gaussian rows drawn uniformly is that law while ids do not repeat, so when
    ``theory.depth`` refuses a finite vocabulary the curve of ``vocab_size = None`` is used
    (and the note says so).
    """
    note = "theory.depth.predict(spec)"
    try:
        try:
            pred = depth.predict(spec)
        except (ValueError, NotImplementedError):
            pred = depth.predict(spec.replace(vocab_size=None))
            note = "theory.depth.predict(spec with vocab_size=None: Gaussian inputs)"
        curves = [np.asarray(pred.var(block_output(spec), l), dtype=np.float64) for l in range(spec.n_layers)]
    except Exception as err:  # noqa: BLE001 -- a theory failure must not sink the simulated probes
        return None, f"theory.depth failed ({type(err).__name__}: {err}); the theory probe was skipped"
    if any(c.shape != (spec.seq_len,) or not np.all(np.isfinite(c)) or np.any(c <= 0) for c in curves):
        return None, "theory.depth gave a curve that is not positive and finite at every position; the theory probe was skipped"
    return curves, note


# ---------------------------------------------------------------- the experiment
@dataclass(frozen=True)
class ProbeConfig:
    """What `probe_experiment` runs; see docs/probe.md."""

    spec: ModelSpec
    positionals: tuple[str, ...] = POSITIONALS
    probes: tuple[str, ...] = PROBES
    sequences: int = 256
    networks: int = 3
    seed: int = 0
    val_fraction: float = 0.125
    test_fraction: float = 0.25
    sigmas: tuple[float, ...] = ()  # NoPE sigma sweep (empty: none)
    sweep_probes: tuple[str, ...] = ("linear", "variance_only", "theory")
    theory_dof: float | None = None  # None: d_model
    mlp_hidden: int = 128
    mlp_epochs: int = 10
    device: str = "cpu"

    def __post_init__(self):
        if not isinstance(self.spec, ModelSpec) or self.spec.is_symbolic:
            raise ValueError("spec must be a numeric theory.ModelSpec")
        for p in self.positionals:
            if p not in POSITIONALS:
                raise ValueError(f"positional must be among {', '.join(POSITIONALS)}; got {p!r}")
        if not self.positionals:
            raise ValueError("give at least one positional variant")
        for p in tuple(self.probes) + tuple(self.sweep_probes):
            if p not in PROBES:
                raise ValueError(f"probe must be among {', '.join(PROBES)}; got {p!r}")
        for name, lo in (("sequences", 8), ("networks", 1), ("mlp_hidden", 1), ("mlp_epochs", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        for s in self.sigmas:
            if not (isinstance(s, (int, float)) and math.isfinite(s) and s > 0):
                raise ValueError(f"sigmas must be positive numbers, got {s!r}")
        if self.theory_dof is not None and not self.theory_dof > 0:
            raise ValueError(f"theory_dof must be > 0, got {self.theory_dof!r}")
        n_val, n_test = self.split_sizes()[1:]
        if n_val < 1 or n_test < 1 or self.sequences - n_val - n_test < 4:
            raise ValueError(
                f"sequences = {self.sequences} is too few to split into training, validation "
                f"({self.val_fraction:.0%}) and test ({self.test_fraction:.0%}) sequences; give at least 16"
            )

    def split_sizes(self) -> tuple[int, int, int]:
        n_val = max(1, int(round(self.val_fraction * self.sequences)))
        n_test = max(1, int(round(self.test_fraction * self.sequences)))
        return self.sequences - n_val - n_test, n_val, n_test


def network_seed(seed: int, repetition: int) -> int:
    """The seed of repetition ``r``'s frozen network; shared by all variants (paired comparison:
    the same weights and embedding table, with only the positional mechanism changed)."""
    return derive_seed(seed, STREAM_PROBE_NETWORK, repetition)


def _probe_one_network(spec: ModelSpec, cfg: ProbeConfig, rep: int, probes, curves, dof: float) -> tuple[dict, str]:
    """All probes at all layers for one frozen network: ({layer: {probe: (metrics,
    per-position |err|, info)}}, a note of the time spent)."""
    T = spec.seq_len
    n_tr, n_va, n_te = cfg.split_sizes()
    t0 = time.perf_counter()
    need_full = any(p in probes for p in ("linear", "mlp"))
    full, second = hidden_states(spec, cfg.sequences, network_seed(cfg.seed, rep),
                                 device=resolve_device(cfg.device), keep_full=need_full)
    t_fwd = time.perf_counter() - t0
    tr, va, te = slice(0, n_tr), slice(n_tr, n_tr + n_va), slice(n_tr + n_va, cfg.sequences)
    y = lambda n: np.tile(np.arange(1, T + 1), n)  # noqa: E731  (rows are sequence-major)
    out = {}
    for l in range(spec.n_layers):
        layer = {}
        for probe in probes:
            if probe == "theory" and curves is None:
                continue
            if probe == "theory":
                est = invert_variance_curve(curves[l], second[l, te], dof)
            elif probe == "variance_only":
                est = fit_variance_only(second[l, tr], second[l, te])
            else:
                X_tr, X_va, X_te = (full[l][part].reshape(-1, spec.d_model).astype(np.float64) for part in (tr, va, te))
                if probe == "linear":
                    est = fit_ridge(X_tr, y(n_tr).astype(np.float64), X_va, y(n_va).astype(np.float64), X_te, T)
                else:
                    est = fit_mlp(X_tr, y(n_tr), X_va, y(n_va), X_te, T,
                                  seed=derive_seed(cfg.seed, STREAM_PROBE_MLP, rep * 10007 + l),
                                  hidden=cfg.mlp_hidden, epochs=cfg.mlp_epochs)
            true = y(n_te)
            err = np.stack([np.abs(est.point - true).reshape(n_te, T).mean(axis=0),  # (T,): |p - m| per position
                            np.abs(est.cls - true).reshape(n_te, T).mean(axis=0)])  # (T,): |c - m| per position
            layer[probe] = (position_metrics(est.point, est.cls, true), err, est.info)
        out[l] = layer
    return out, f"hidden states {t_fwd:.1f}s, probes {time.perf_counter() - t0 - t_fwd:.1f}s"


def _summarise(per_network: list[dict], spec: ModelSpec, probes) -> tuple[list[dict], dict]:
    """Mean and standard error over networks, per layer and probe; per-position error curves."""
    layers, curves = [], {}
    K = len(per_network)
    for l in range(spec.n_layers):
        row = {"layer": l, "tap": f"blocks.{l}.{block_output(spec)}"}
        for probe in probes:
            if probe not in per_network[0][l]:
                continue
            metrics = [net[l][probe][0] for net in per_network]
            entry = {}
            for key in ("mae", "mad", "r2", "r2_log"):
                vals = np.array([m[key] for m in metrics])
                entry[key] = float(vals.mean())
                entry[key + "_se"] = float(vals.std(ddof=1) / math.sqrt(K)) if K > 1 else None
            err = np.mean([net[l][probe][1] for net in per_network], axis=0)  # (2, T): |p - m|, |c - m|
            curves[(l, probe)] = err
            T = err.shape[1]
            entry["resolution"] = resolution_length(err[1])
            marks = sorted({1, 2, 4, 8, 16, 32, 64, 128, 256, 512, T})
            entry["mae_at"] = {str(m): float(err[0, m - 1]) for m in marks if m <= T}
            entry["mad_at"] = {str(m): float(err[1, m - 1]) for m in marks if m <= T}
            entry["n_networks"] = K
            infos = [net[l][probe][2] for net in per_network]
            for key in infos[0]:
                entry[key] = float(np.mean([i[key] for i in infos]))
            row[probe] = entry
        layers.append(row)
    return layers, curves


def probe_experiment(cfg: ProbeConfig, progress: bool = True, *, force: bool = False,
                     memory_limit: float | None = None, time_limit: float | None = None) -> tuple[dict, dict]:
    """Run the experiment; returns (results dict for results.json, per-position error curves).

    ``results["variants"][VARIANT]["layers"][l][PROBE]`` holds ``mae, mad, r2, r2_log`` and
    their ``*_se`` over ``networks`` frozen networks, ``resolution`` (the first position whose
    class error ``mean |c - m|`` is >= 1, pooled over networks: where the probe stops telling
    neighbouring positions apart; None if never), ``mae_at``/``mad_at`` (errors at selected
    positions) and probe details (``ridge``, ``epochs``, ``dof_effective``). The theory probe
    runs for ``none`` only. ``results["sigma_sweep"]`` repeats NoPE at each sigma of
    ``cfg.sigmas``.

    Before anything is allocated the experiment's memory and time are estimated
    (`simulate.experiments.probe.budget.check_probe_size`): over 80% of the available
    memory (or ``memory_limit`` bytes) or one day of estimated work (or ``time_limit``
    seconds) it is refused with a ValueError naming the field; ``force=True`` skips the limits.
    """
    check_probe_size(cfg, force=force, memory_limit=memory_limit, time_limit=time_limit)
    spec = cfg.spec
    dof = float(cfg.theory_dof or spec.d_model)
    results = {"variants": {}, "sigma_sweep": [], "meta": {
        "spec": spec.to_dict(), "sequences": cfg.sequences, "networks": cfg.networks, "seed": cfg.seed,
        "split": dict(zip(("train", "val", "test"), cfg.split_sizes())), "measure": "quenched",
        "tap": block_output(spec), "theory_dof": dof, "probes": list(cfg.probes),
    }}
    # (label, spec, probes) of every variant: the positional schemes, then the NoPE sigma sweep
    runs = [(positional, spec.replace(positional=positional), [p for p in cfg.probes if p != "theory" or positional == "none"])
            for positional in cfg.positionals]
    runs += [(f"sigma={sigma:g}", with_sigma(spec.replace(positional="none"), sigma), list(cfg.sweep_probes))
             for sigma in cfg.sigmas]
    bar = Progress(len(runs) * cfg.networks, 0, bool(progress), unit="networks", label="probe")
    theory_cache: dict = {}
    all_curves: dict = {}
    try:
        for i, (label, vspec, probes) in enumerate(runs):
            curves, note = None, ""
            if "theory" in probes:
                key = vspec.to_json()
                if key not in theory_cache:
                    theory_cache[key] = theory_curves(vspec)
                curves, note = theory_cache[key]
                if curves is None:
                    bar.log(f"{label}: {note}")
            per_network = []
            for r in range(cfg.networks):
                net, timing = _probe_one_network(vspec, cfg, r, probes, curves, dof)
                per_network.append(net)
                bar.update(i * cfg.networks + r + 1, f"{label} network {r + 1}/{cfg.networks}: {timing}", force=True)
            layers, err_curves = _summarise(per_network, vspec, probes)
            if i < len(cfg.positionals):
                results["variants"][label] = {"layers": layers}
                if "theory" in probes:
                    results["meta"]["theory"] = note
            else:
                results["sigma_sweep"].append({"sigma": float(cfg.sigmas[i - len(cfg.positionals)]), "layers": layers})
            all_curves.update({(label, l, p): c for (l, p), c in err_curves.items()})
    finally:
        bar.close()
    return results, all_curves
