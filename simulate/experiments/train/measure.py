"""The measurement of issues #9 and #20: variance against position, trained against init.

For every model of a training run (``DIR/<positional>/init.pt`` and ``checkpoint.pt``, and
the snapshots ``step_NNNNNN.pt`` along training when the run kept them) and every layer
``l``, on ``sequences`` evenly spaced, non-overlapping held-out windows of ``seq_len`` bytes,
each belonging to one held-out document (`Corpus.documents`), `simulate.record_sequences`
gives each window's own numbers, and per position ``m``:

* ``Var`` of one coordinate of ``blocks.l.hook_attn_out``, ``blocks.l.attn.hook_z`` and
  ``blocks.l.hook_resid_post``: ``E[x^2] - E[x]^2`` pooled over coordinates and windows;
* ``Var across inputs``: ``mean_c Var_windows(x_{m,c})`` (coordinate held fixed), at the
  fit positions;
* the attention entropy ``E[-sum_n a_mn ln a_mn]`` (nats, mean over heads; ``ln m`` for
  uniform causal attention), ``entropy / ln m`` averaged over m = 2..T, and the effective
  number of keys ``1 / E[sum_n a_mn^2]`` at m = T.

**Slope.** ``b`` in the least-squares fit ``ln Var(m) = a + b ln m`` at the log-spaced
positions `fit_positions` (24 points from 1 to T, rounded and made unique, so each decade
weighs the same), over all of them and over the tail ``m >= 16``. Uniform attention over
i.i.d. values gives ``b = -1`` (Chi et al. 2023, ``Var(attention output) ~ sigma^2 / m``);
``b = 0`` is no positional trend.

**Errors, clustered by document** (`clustered`): every variance and every slope has the
delete-one-document jackknife error (the statistic recomputed without each held-out
document); every mean over windows (entropy) the CR1 cluster-robust error. The number of
documents is in the results.

**Verdict per layer and tap.** The shrinkage *persists* where the trained slope is below zero
by more than two standard errors.

Writes ``DIR/measure/results.json``, ``report.md`` and PNG figures (``through_training.png``:
slopes and entropy against the training step, per layer).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from theory._outputs import atomic_write_text

from ...record import record_sequences
from .clustered import across_inputs_variance, clustered_mean, jackknife_se, leave_one_out_means, pooled_variance, slope_with_se
from .corpus import PSEUDO_DOCUMENTS, Corpus
from .beyond import FACTOR, overlay, variance_beyond
from .evaluation import baseline_table, heldout_batch
from .figures import measure_figures
from .files import load_model, read_run_json
from .training import POSITIONALS

MEASURED_TAPS = ("hook_attn_out", "attn.hook_z", "hook_resid_post")
TAIL_FROM = 16


def fit_positions(seq_len: int, points: int = 24) -> np.ndarray:
    """Log-spaced 1-based positions from 1 to seq_len (unique)."""
    return np.unique(np.round(np.geomspace(1, seq_len, points)).astype(int))


def slope(positions: np.ndarray, var: np.ndarray, lo: int = 1) -> float:
    """Least-squares slope of ``ln var`` against ``ln m`` over ``positions >= lo``."""
    keep = (positions >= lo) & np.isfinite(var) & (var > 0)
    if keep.sum() < 3:
        return float("nan")
    return float(np.polyfit(np.log(positions[keep]), np.log(var[keep]), 1)[0])


def heldout_windows(corpus: Corpus, seq_len: int, sequences: int, blocks: int = PSEUDO_DOCUMENTS) -> tuple[torch.Tensor, np.ndarray]:
    """``sequences`` evenly spaced, non-overlapping held-out windows (sequences, seq_len) and
    the held-out document of each (`Corpus.documents`; ``blocks`` for a byte-split file)."""
    if corpus.heldout.size // seq_len < 2:
        raise ValueError(f"held-out text ({corpus.heldout.size} bytes) holds fewer than two windows of {seq_len}")
    return heldout_batch(corpus, seq_len, sequences, blocks)


def _taps(n_layers: int, with_pattern: bool) -> list[str]:
    taps = [f"blocks.{l}.{t}" for l in range(n_layers) for t in MEASURED_TAPS]
    return taps + ([f"blocks.{l}.attn.hook_pattern" for l in range(n_layers)] if with_pattern else [])


def measure_model(model, ids: torch.Tensor, docs: np.ndarray, curves: bool = True) -> dict:
    """Per layer and tap: the variance curve and the slopes (all positions, tail), per layer the
    attention entropy; every error clustered by held-out document (``docs``, one id per window):
    jackknife over documents for variances and slopes, CR1 for means (`clustered`).
    ``curves=False`` keeps only the slopes and the entropy summaries (checkpoints along a run)."""
    L, T = model.spec.n_layers, ids.shape[1]
    fit_pos = fit_positions(T)
    idx = fit_pos - 1
    seq = record_sequences(model, ids, taps=_taps(L, True), names="hooked", values_at=fit_pos)
    out = {"layers": [], "documents": int(np.unique(docs).size)}
    for l in range(L):
        layer = {"layer": l, "taps": {}}
        for suffix in MEASURED_TAPS:
            d = seq[f"blocks.{l}.{suffix}"]
            var, var_se, var_out = pooled_variance(d["m1"], d["m2"], docs)  # (T,), (T,), (G, T)
            vin, vin_se, vin_out = across_inputs_variance(d["values"], docs)  # at the fit positions
            entry = {}
            if curves:
                entry.update({"var": var.tolist(), "var_se": var_se.tolist(), "var_across_inputs_at_fit": vin.tolist(),
                              "var_across_inputs_se_at_fit": vin_se.tolist()})
            for key, lo, full, left in (("slope", 1, var[idx], var_out[:, idx]), ("slope_tail", TAIL_FROM, var[idx], var_out[:, idx]),
                                        ("slope_in", 1, vin, vin_out), ("slope_in_tail", TAIL_FROM, vin, vin_out)):
                entry[key], entry[key + "_se"] = slope_with_se(fit_pos, full, left, lo)
            layer["taps"][suffix] = entry
        pat = seq[f"blocks.{l}.attn.hook_pattern"]
        m = np.arange(1, T + 1, dtype=float)
        ent, ent_se = clustered_mean(pat["entropy"], docs)
        rel, rel_se = clustered_mean((pat["entropy"][:, 1:] / np.log(m[1:])).mean(axis=1), docs)
        sq_mean, sq_out = leave_one_out_means(pat["sum_sq"][:, -1], docs)
        layer["entropy_over_ln_m"], layer["entropy_over_ln_m_se"] = float(rel), float(rel_se)  # 1 = uniform
        layer["entropy_at_T"], layer["entropy_at_T_se"] = float(ent[-1]), float(ent_se[-1])
        layer["effective_keys_at_T"] = float(1.0 / sq_mean)
        layer["effective_keys_at_T_se"] = float(jackknife_se(1.0 / sq_out))
        if curves:
            layer["entropy"], layer["entropy_se"] = ent.tolist(), ent_se.tolist()
            layer["sum_sq"] = clustered_mean(pat["sum_sq"], docs)[0].tolist()
        out["layers"].append(layer)
    out["positions"] = list(range(1, T + 1))
    out["sequences"] = int(ids.shape[0])
    return out


def snapshots(model_dir: Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of ``init.pt`` (step 0) and every ``step_NNNNNN.pt`` in ``model_dir``."""
    found = [(0, model_dir / "init.pt")] if (model_dir / "init.pt").exists() else []
    for path in sorted(model_dir.glob("step_*.pt")):
        try:
            found.append((int(path.stem[5:]), path))
        except ValueError:
            continue
    return found


def measure_run(out_dir: str | Path, corpus: Corpus, sequences: int = 256, groups: int = PSEUDO_DOCUMENTS,
                progress: bool = True, with_figures: bool = True, beyond: int = FACTOR) -> dict:
    """Measure every trained model in ``out_dir`` (and its snapshots along training, if any);
    write ``out_dir/measure/``; return a summary. ``groups``: the blocks that stand in for
    documents when the held-out text is one file (byte split)."""
    out_dir = Path(out_dir)
    dest = out_dir / "measure"
    dest.mkdir(exist_ok=True)
    models = [p for p in POSITIONALS if (out_dir / p / "checkpoint.pt").exists() and (out_dir / p / "init.pt").exists()]
    if not models:
        raise ValueError(f"no trained model in {str(out_dir)!r} (expected <positional>/checkpoint.pt and init.pt)")
    results = {"models": {}, "sequences": None, "documents": None, "fit_positions": None, "tail_from": TAIL_FROM,
               "errors": "clustered by held-out document: delete-one-document jackknife (variances, slopes), CR1 (means)"}
    t0 = time.perf_counter()
    for positional in models:
        entry = {}
        # both files are read (safely, see `read_checkpoint`) before either is measured: a pair
        # that is not the same model is refused at once, not after minutes of measuring
        pair = {"init": load_model(out_dir / positional / "init.pt"),
                "trained": load_model(out_dir / positional / "checkpoint.pt")}
        if pair["init"].spec != pair["trained"].spec or pair["init"].spec.positional != positional:
            raise ValueError(
                f"{str(out_dir / positional)!r}: init.pt and checkpoint.pt are not the same {positional!r} model; "
                "rerun the train command with another --out"
            )
        ids, docs = heldout_windows(corpus, pair["init"].spec.seq_len, sequences, groups)
        for which, model in pair.items():
            if progress:
                print(f"[measure] {positional} {which}: {ids.shape[0]} held-out windows of {ids.shape[1]} bytes "
                      f"from {np.unique(docs).size} documents", file=sys.stderr)
            entry[which] = measure_model(model, ids, docs)
            entry["spec"] = model.spec.to_dict()
        if beyond > 1 and positional in ("none", "rope"):  # past the training length (`beyond`): no table ends at T
            if progress:
                print(f"[measure] {positional}: attention output to {beyond}x the training length", file=sys.stderr)
            far = {which: variance_beyond(model, corpus, beyond, blocks=groups) for which, model in pair.items()}
            if all(far.values()):
                entry["beyond"] = overlay(far, pair["init"])  # + the theory at init and the i.i.d.-byte control
        steps = snapshots(out_dir / positional)
        if len(steps) > 1:
            entry["through_training"] = []
            for step, path in steps:
                if progress:
                    print(f"[measure] {positional} step {step}", file=sys.stderr)
                snap = measure_model(load_model(path), ids, docs, curves=False)
                snap["step"] = step
                entry["through_training"].append(snap)
        results["sequences"], results["documents"] = int(ids.shape[0]), int(np.unique(docs).size)
        results["fit_positions"] = fit_positions(pair["init"].spec.seq_len).tolist()
        results["models"][positional] = entry
    results["wall_time_s"] = round(time.perf_counter() - t0, 1)
    results["verdict"] = verdicts(results)
    atomic_write_text(dest / "results.json", json.dumps(results, indent=1) + "\n")
    if with_figures:
        measure_figures(results, dest)
    atomic_write_text(dest / "report.md", report(results, out_dir))
    return summary(results)


def verdicts(results: dict) -> dict:
    """Per model, layer and tap: does the shrinkage persist after training (slope + 2 se < 0)?"""
    out = {}
    for positional, entry in results["models"].items():
        rows = []
        for li, layer in enumerate(entry["trained"]["layers"]):
            for suffix, t in layer["taps"].items():
                t0 = entry["init"]["layers"][li]["taps"][suffix]
                rows.append({
                    "layer": li, "tap": suffix, "init_slope": t0["slope"], "init_slope_se": t0["slope_se"],
                    "trained_slope": t["slope"], "trained_slope_se": t["slope_se"],
                    "persists": bool(t["slope"] + 2 * t["slope_se"] < 0),
                    "init_slope_in": t0["slope_in"], "trained_slope_in": t["slope_in"], "trained_slope_in_se": t["slope_in_se"],
                    "persists_across_inputs": bool(t["slope_in"] + 2 * t["slope_in_se"] < 0),
                    "fraction_of_init": t["slope"] / t0["slope"] if t0["slope"] else float("nan"),
                })
        out[positional] = rows
    return out


def summary(results: dict) -> dict:
    out = {}
    for positional, entry in results["models"].items():
        out[positional] = {
            "slopes": {f"{r['layer']}:{r['tap']}": {"init": r["init_slope"], "trained": r["trained_slope"],
                                                    "trained_se": r["trained_slope_se"]} for r in results["verdict"][positional]},
            "entropy_over_ln_m": {which: [l["entropy_over_ln_m"] for l in entry[which]["layers"]] for which in ("init", "trained")},
        }
    return out


# ---------------------------------------------------------------------- report
def _fmt(x: float, se: float | None = None) -> str:
    return f"{x:+.3f}" + (f" ± {se:.3f}" if se is not None else "")


def report(results: dict, out_dir: Path) -> str:
    lines = ["# Variance against position: trained against initialisation", ""]
    run_path = out_dir / "run.json"
    if run_path.exists():
        run = read_run_json(run_path)
        lines += ["Commands that made this directory (from `run.json`):", "", "```"]
        lines += [c["command"] for c in run.get("commands", [])] + ["```", ""]
        base = run.get("baselines", {})
        if run.get("models"):
            lines += ["| model | steps | bytes seen | held-out bits/byte (trained) | at init | unigram | bigram |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
            for name, mod in run["models"].items():
                lines.append(f"| {name} | {mod.get('steps', '?')} | {mod.get('tokens_seen', '?')} | {mod.get('trained_bits_per_byte', float('nan')):.3f} | "
                             f"{mod.get('init_bits_per_byte', float('nan')):.3f} | {base.get('unigram_bits_per_byte', float('nan')):.3f} | "
                             f"{base.get('bigram_bits_per_byte', float('nan')):.3f} |")
            lines.append("")
            scored = [m for m in run["models"].values() if "context_bands" in m]
            if "kneser_ney" in base and scored:
                lines += [f"The same {scored[0].get('windows', '?')} held-out windows ({scored[0].get('documents', '?')} documents), "
                          "bits/byte with errors clustered by document, overall and by context position j (bytes of context):", ""]
                lines += baseline_table(base, {f"{name} (trained)": {"bits_per_byte": m["trained_bits_per_byte"],
                                                                      "bits_per_byte_se": m["trained_bits_per_byte_se"],
                                                                      "context_bands": m["context_bands"]}
                                               for name, m in run["models"].items() if "context_bands" in m})
                lines.append("")
    lines += [
        f"{results['sequences']} held-out windows from {results['documents']} held-out documents; every standard error "
        f"is clustered by document ({results['errors']}); slopes of ln Var against ln m "
        f"fitted by least squares at the positions {results['fit_positions']} (log-spaced, each decade weighted alike). "
        f"'tail' fits m >= {results['tail_from']} only. Uniform attention over i.i.d. values gives slope -1. "
        "'Var' pools the coordinates of a position (the paper's measure); 'across inputs' is the mean over coordinates of "
        "the variance across windows with the coordinate held fixed (Var minus the spread of the per-coordinate means). "
        "'persists': trained slope + 2 se < 0.",
        "",
    ]
    for positional, entry in results["models"].items():
        lines += [f"## positional = {positional}", "",
                  "| layer | tap | slope init | slope trained | tail init | tail trained | across inputs: init | trained | persists (Var / across inputs) |",
                  "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
        for li, layer in enumerate(entry["trained"]["layers"]):
            for suffix, t in layer["taps"].items():
                t0 = entry["init"]["layers"][li]["taps"][suffix]
                persists = t["slope"] + 2 * t["slope_se"] < 0
                persists_in = t["slope_in"] + 2 * t["slope_in_se"] < 0
                lines.append(f"| {li} | {suffix} | {_fmt(t0['slope'], t0['slope_se'])} | {_fmt(t['slope'], t['slope_se'])} | "
                             f"{_fmt(t0['slope_tail'], t0['slope_tail_se'])} | {_fmt(t['slope_tail'], t['slope_tail_se'])} | "
                             f"{_fmt(t0['slope_in'], t0['slope_in_se'])} | {_fmt(t['slope_in'], t['slope_in_se'])} | "
                             f"{'yes' if persists else 'no'} / {'yes' if persists_in else 'no'} |")
        lines += ["", "| layer | entropy / ln m (init) | (trained) | entropy at m=T, nats (init) | (trained) | effective keys 1/E[sum a^2] at T (init) | (trained) |",
                  "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for li in range(len(entry["trained"]["layers"])):
            a, b = entry["init"]["layers"][li], entry["trained"]["layers"][li]
            lines.append(f"| {li} | {a['entropy_over_ln_m']:.3f} | {b['entropy_over_ln_m']:.3f} | "
                         f"{a['entropy_at_T']:.3f} ± {a['entropy_at_T_se']:.3f} | {b['entropy_at_T']:.3f} ± {b['entropy_at_T_se']:.3f} | "
                         f"{a['effective_keys_at_T']:.1f} | {b['effective_keys_at_T']:.1f} |")
        lines += ["", _findings(positional, results["verdict"][positional], entry), ""]
        if entry.get("through_training"):
            lines += _training_table(entry["through_training"], results["tail_from"])
        if entry.get("beyond"):
            lines += _beyond_table(entry["beyond"])
    lines += ["Figures: `variance_attn_out.png`, `variance_z.png`, `variance_resid_post.png` (log-log, ±1 se), "
              "`slopes.png`, `entropy.png`, and when measured `through_training.png` (slopes and entropy per checkpoint) "
              "and `beyond_training_length.png`.", ""]
    return "\n".join(lines)


def _beyond_table(far: dict) -> list[str]:
    """Slopes of ln Var(`hook_attn_out`) inside and past the training length, init and trained."""
    b = far["trained"]
    lines = [f"Past the training length ({b['sequences']} windows of {b['factor']} x {b['seq_len']} bytes, {b['documents']} documents): "
             f"slope of ln Var(`hook_attn_out`) vs ln m for m <= {b['seq_len']} | {b['seq_len']} <= m <= {b['factor'] * b['seq_len']}; "
             "Var pooled / across inputs, ± se over documents:", "",
             "| layer | init, pooled | trained, pooled | init, across inputs | trained, across inputs |",
             "| ---: | --- | --- | --- | --- |"]
    for l, (a, t) in enumerate(zip(far["init"]["layers"], far["trained"]["layers"])):
        cell = lambda x, k: f"{x['slope_inside' + k]:+.3f} ± {x['slope_inside' + k + '_se']:.3f} \\| {x['slope_beyond' + k]:+.3f} ± {x['slope_beyond' + k + '_se']:.3f}"  # noqa: E731
        lines.append(f"| {l} | {cell(a, '')} | {cell(t, '')} | {cell(a, '_in')} | {cell(t, '_in')} |")
    return lines + [""]


def _training_table(snaps: list[dict], tail_from: int) -> list[str]:
    """Slopes of ``hook_attn_out`` (all positions | m >= tail_from) and entropy / ln m per checkpoint."""
    L = len(snaps[0]["layers"])
    lines = [f"Through training: slope of ln Var(`hook_attn_out`) vs ln m (all positions | m >= {tail_from}), ± se over documents, "
             "and attention entropy / ln m, per layer:", "",
             "| step | " + " | ".join(f"layer {l}" for l in range(L)) + " |", "| ---: |" + " --- |" * L]
    for s in snaps:
        cells = []
        for lay in s["layers"]:
            t = lay["taps"]["hook_attn_out"]
            cells.append(f"{t['slope']:+.3f} ± {t['slope_se']:.3f} \\| {t['slope_tail']:+.3f} ± {t['slope_tail_se']:.3f}; "
                         f"H/ln m {lay['entropy_over_ln_m']:.3f}")
        lines.append(f"| {s['step']} | " + " | ".join(cells) + " |")
    return lines + [""]


def _findings(positional: str, rows: list[dict], entry: dict) -> str:
    """Plain statements computed from the numbers."""
    out = []
    for suffix in MEASURED_TAPS:
        sel = [r for r in rows if r["tap"] == suffix]
        for key, label in (("persists", "Var"), ("persists_across_inputs", "Var across inputs")):
            yes = [r["layer"] for r in sel if r[key]]
            no = [r["layer"] for r in sel if not r[key]]
            s_key = "trained_slope" if key == "persists" else "trained_slope_in"
            i_key = "init_slope" if key == "persists" else "init_slope_in"
            fr = ", ".join(f"layer {r['layer']}: {r[s_key]:+.2f} vs {r[i_key]:+.2f}" for r in sel)
            where = f"persists after training in layers {yes}" if yes else "does not persist after training in any layer"
            if yes and no:
                where += f", not in layers {no}"
            out.append(f"- `{suffix}` ({label}): the shrinkage with position {where} (slope trained vs init: {fr}).")
    for key, label in (("trained_slope", "Var"), ("trained_slope_in", "Var across inputs")):
        sel = [r for r in rows if r["tap"] == "hook_attn_out"]
        order = sorted(sel, key=lambda r: r[key])
        out.append(f"- `hook_attn_out` ({label}): the trained slope is steepest in layer {order[0]['layer']} "
                   f"({order[0][key]:+.2f}) and shallowest in layer {order[-1]['layer']} ({order[-1][key]:+.2f}); "
                   "per layer: " + ", ".join(f"{r[key]:+.2f}" for r in sel) + ".")
    ent = [(l["entropy_over_ln_m"], t["entropy_over_ln_m"]) for l, t in zip(entry["init"]["layers"], entry["trained"]["layers"])]
    out.append("- attention entropy / ln m, init -> trained, per layer: "
               + ", ".join(f"{a:.2f} -> {b:.2f}" for a, b in ent)
               + " (1 = uniform over the m keys, as at init; lower = sharper attention).")
    return f"Findings for `{positional}`:\n\n" + "\n".join(out)
