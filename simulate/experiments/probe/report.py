"""Outputs of the probe experiment: results.json, per_position.npz, heat maps, tables, figures, report.md.

The report opens with where the positional information is: heat maps (tap x layer, one
panel per variant) of R^2(log m) and of MAE relative to a constant guess, and findings in
plain words computed from the numbers (`findings`), with the mechanism -- which sublayer
adds position-flat variance, measured against theory's level -- and the quenched theory
against the measurement (`quenched_table`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from theory._outputs import atomic_path, atomic_savefig, atomic_write_text
from theory.figure_style import ONE_COLUMN, TWO_COLUMNS, colour, marker
from theory.figure_style import styled as _styled

from .experiment import PROBE_TAPS
from .probes import PROBES

PROBE_LABELS = {"linear": "linear (ridge)", "mlp": "MLP", "full": "MLP on state + log-norm", "variance_only": "variance-only",
                "theory": "theory (no training)", "cosine": "cross-position cosine"}
TAP_LABELS = {"attn.hook_z": "hook_z", "hook_attn_out": "attn_out", "hook_resid_mid": "resid_mid",
              "hook_mlp_out": "mlp_out", "hook_resid_post": "resid_post"}
HEAT_PROBE = "variance_only"


def _clean(obj):
    """JSON-safe: NaN and inf become null."""
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def chance_mae(T: int) -> float:
    """Mean |c - m| over m = 1..T of the best constant guess c (a median): a probe that knows nothing."""
    m = np.arange(1, T + 1)
    return float(np.mean(np.abs(m - np.median(m))))


def _fmt(entry: dict | None, key: str = "mae", digits: int = 1) -> str:
    if entry is None or entry.get(key) is None:
        return "—"
    v, se = entry[key], entry.get(key + "_se")
    return f"{v:.{digits}f} ± {se:.{digits}f}" if se is not None else f"{v:.{digits}f}"


def _probes_present(results: dict) -> list[str]:
    seen = {p for v in results["variants"].values() for row in v["layers"] for p in PROBES if p in row}
    return [p for p in PROBES if p in seen]


def _kinds(results: dict) -> list[str]:
    seen = {row["tap_kind"] for v in results["variants"].values() for row in v["layers"]}
    return [t for t in PROBE_TAPS if t in seen]


def _grid(rows: list[dict], kinds: list[str], L: int, probe: str, key: str) -> np.ndarray:
    g = np.full((len(kinds), L), np.nan)
    for row in rows:
        e = row.get(probe)
        if e is not None and e.get(key) is not None and row["tap_kind"] in kinds:
            g[kinds.index(row["tap_kind"]), row["layer"]] = e[key]
    return g


def markdown_tables(results: dict) -> str:
    probes = _probes_present(results)
    head = "| variant | layer | tap | " + " | ".join(f"{PROBE_LABELS[p]} MAE" for p in probes) + " | " + \
        " | ".join(f"{PROBE_LABELS[p]} R²(log m)" for p in probes) + " |"
    lines = [head, "|" + " --- |" * 3 + " ---: |" * (2 * len(probes))]
    for variant, v in results["variants"].items():
        for row in v["layers"]:
            cells = [_fmt(row.get(p)) for p in probes] + [_fmt(row.get(p), "r2_log", 2) for p in probes]
            lines.append(f"| {variant} | {row['layer']} | {TAP_LABELS[row['tap_kind']]} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def quenched_table(results: dict) -> str:
    """NoPE: the quenched theory against the measurement, per (layer, tap)."""
    rows = [r for r in results["variants"].get("none", {}).get("layers", []) if "quenched" in r]
    if not rows:
        return ""
    T = results["meta"]["spec"]["seq_len"]
    out = ["| layer | tap | Var(log s) within a network, measured / predicted | predicted at m = 1, T | "
           "measured at m = 1, T | dof 2/Var (predicted) | network-to-network sd of E log s: predicted / measured | "
           "variance-only MAE: measured / predicted | R²(log m): measured / predicted | mean cosine at m = 1, T: measured / predicted |",
           "| --- | --- |" + " ---: |" * 8]
    for r in rows:
        q, meas = r["quenched"], r["measured"]
        vo = r.get("variance_only", {})
        ns = q.get("network_sd_measured")
        cos_p = q.get("cos_predicted_at", {})
        out.append(
            f"| {r['layer']} | {TAP_LABELS[r['tap_kind']]} | {q['var_ratio']:.3f}"
            + (f" ± {q['var_ratio_se']:.3f}" if q.get("var_ratio_se") is not None else "")
            + f" | {q['var_within_predicted_at']['1']:.4f}, {q['var_within_predicted_at'][str(T)]:.4f}"
            f" | {q['var_within_measured_at']['1']:.4f}, {q['var_within_measured_at'][str(T)]:.4f}"
            f" | {q['dof_predicted']:.0f} | {q['network_sd_predicted']:.4f} / " + (f"{ns:.4f}" if ns is not None else "—")
            + f" | {_fmt(vo)} / {q['mae_predicted']:.1f} | {vo.get('r2_log', float('nan')):.2f} / {q['r2_log_predicted']:.2f}"
            + f" | {meas['cos_at']['1']:.2f}, {meas['cos_at'][str(T)]:.2f} / "
            + (f"{cos_p['1']:.2f}, {cos_p[str(T)]:.2f}" if cos_p else "—") + " |")
    return "\n".join(out) + "\n"


def latex_table(results: dict) -> str:
    probes = _probes_present(results)
    T = results["meta"]["spec"]["seq_len"]
    out = ["% generated by python -m simulate probe", "\\begin{table}[t]", "\\centering",
           f"\\begin{{tabular}}{{lll{'r' * len(probes)}}}", "\\toprule",
           "variant & layer & tap & " + " & ".join(PROBE_LABELS[p] for p in probes) + " \\\\", "\\midrule"]
    names = list(results["variants"])
    for variant, v in results["variants"].items():
        for i, row in enumerate(v["layers"]):
            cells = []
            for p in probes:
                e = row.get(p)
                cells.append("--" if e is None else (f"${e['mae']:.1f} \\pm {e['mae_se']:.1f}$" if e.get("mae_se") is not None
                                                      else f"${e['mae']:.1f}$"))
            name = f"\\texttt{{{variant}}}" if i == 0 else ""
            tap = TAP_LABELS[row["tap_kind"]].replace("_", "\\_")
            out.append(f"{name} & {row['layer']} & \\texttt{{{tap}}} & " + " & ".join(cells) + " \\\\")
        out.append("\\midrule" if variant != names[-1] else "\\bottomrule")
    out += ["\\end{tabular}",
            f"\\caption{{Mean absolute error (posterior median) of probes of absolute position (1..{T}) in frozen random "
            f"transformers, per layer and tap, mean $\\pm$ standard error over {results['meta']['networks']} networks; "
            f"a constant guess scores {chance_mae(T):.1f}.}}", "\\label{tab:probe}", "\\end{table}", ""]
    return "\n".join(out)


# ---------------------------------------------------------------- figures
# Renderers: each reads the stored results (``results.json``'s dict) and returns a figure, in the
# shared style (`theory.figure_style`); nothing here computes a statistic.
def _variant_colours(variants: list[str]) -> dict[str, str]:
    """One palette colour per variant, in the results' order (black is kept for references)."""
    return {v: colour(i + 1) for i, v in enumerate(variants)}


@_styled
def where_position_figure(results: dict, probe: str = HEAT_PROBE):
    """Heat maps (tap x layer) per variant of R^2(log m) and of MAE / constant guess, for ``probe``
    or, with ``probe="best"``, the best probe per cell."""
    # deferred: matplotlib is optional, imported only when a figure is drawn
    from matplotlib.figure import Figure

    T = results["meta"]["spec"]["seq_len"]
    L = results["meta"]["spec"]["n_layers"]
    kinds, variants = _kinds(results), list(results["variants"])
    chance = chance_mae(T)
    fig = Figure(figsize=(TWO_COLUMNS, 1.5 * len(variants) + 1.0), layout="constrained")
    axes = fig.subplots(len(variants), 2, squeeze=False)
    ims = [None, None]
    for j, variant in enumerate(variants):
        rows = results["variants"][variant]["layers"]
        if probe == "best":
            probes = [p for p in _probes_present(results) if any(p in r for r in rows)]
            r2 = np.nanmax([_grid(rows, kinds, L, p, "r2_log") for p in probes], axis=0)
            mae = np.nanmin([_grid(rows, kinds, L, p, "mae") for p in probes], axis=0)
        else:
            r2, mae = _grid(rows, kinds, L, probe, "r2_log"), _grid(rows, kinds, L, probe, "mae")
        for i, (g, title, cmap) in enumerate(((r2, "R²(log m)", "viridis"), (mae / chance, "MAE / constant guess", "viridis_r"))):
            ax = axes[j][i]
            ims[i] = ax.imshow(np.clip(g, 0, 1), vmin=0, vmax=1, cmap=cmap, aspect="auto")
            ax.set_yticks(range(len(kinds)))
            ax.set_yticklabels([TAP_LABELS[k] for k in kinds] if i == 0 else [])
            ax.set_xticks(range(L))
            ax.set_xticklabels(range(L) if j == len(variants) - 1 else [])
            ax.set_title(f"{variant}: {title}")
            if L * len(kinds) <= 24:  # values printed only where they stay readable (7 pt)
                for (a, b), val in np.ndenumerate(g):
                    if np.isfinite(val):
                        ax.text(b, a, f"{val:.2f}", ha="center", va="center", fontsize=7, color="w")
    for i in range(2):
        axes[-1][i].set_xlabel("layer (0-based, as blocks.0)")
    for i, label in enumerate(("R²(log m)", "MAE / constant guess")):
        fig.colorbar(ims[i], ax=axes[:, i], shrink=0.6, label=label)
    fig.suptitle(f"Where position lives ({PROBE_LABELS.get(probe, 'best probe per cell')})")
    return fig


@_styled
def probe_error_figure(results: dict):
    """MAE of each probe against layer, one panel per tap kind on one shared y scale, every
    variant (colour) and probe (marker); the quenched theory's predicted MAE (dashed, the
    variant's colour) and a constant guess (dotted). The legend names every variant and probe."""
    # deferred: matplotlib is optional, imported only when a figure is drawn
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    kinds, variants = _kinds(results), list(results["variants"])
    chance = chance_mae(results["meta"]["spec"]["seq_len"])
    colours = _variant_colours(variants)
    probes = [p for p in _probes_present(results)
              if any(p in r for v in variants for r in results["variants"][v]["layers"])]
    width = min(TWO_COLUMNS, max(ONE_COLUMN, 1.9 * len(kinds)))
    fig = Figure(figsize=(width, 2.6 + 0.15 * (len(variants) + len(probes))), layout="constrained")
    axes = fig.subplots(1, max(len(kinds), 1), sharey=True, squeeze=False)[0]  # one scale: panels are compared
    predicted = False
    for ax, kind in zip(axes, kinds):
        for i, variant in enumerate(variants):
            shift = 0.06 * (i - (len(variants) - 1) / 2)  # side by side, so no variant hides another
            sub = [r for r in results["variants"][variant]["layers"] if r["tap_kind"] == kind]
            for k, p in enumerate(probes):
                pts = [(r["layer"], r[p]["mae"], r[p].get("mae_se") or 0.0) for r in sub if p in r]
                if pts:
                    x, y, e = zip(*pts)
                    ax.errorbar(np.asarray(x) + shift, y, yerr=e, marker=marker(k), ls="-", lw=0.8, color=colours[variant])
            pred = [(r["layer"], r["quenched"]["mae_predicted"]) for r in sub if "quenched" in r]
            if pred:
                px, py = zip(*pred)
                ax.plot(np.asarray(px) + shift, py, "--", marker="x", lw=1, color=colours[variant])
                predicted = True
        ax.axhline(chance, color="0.5", lw=0.8, ls=":")
        ax.set_title(TAP_LABELS[kind])
        ax.set_xlabel("layer")
        layers = sorted({r["layer"] for v in variants for r in results["variants"][v]["layers"]})
        ax.set_xticks(layers)
    axes[0].set_ylabel("probe MAE (positions)")
    handles = [Line2D([], [], color=colours[v], marker="none", label=f"variant {v}") for v in variants]
    handles += [Line2D([], [], color="0.3", ls="none", marker=marker(k), label=PROBE_LABELS[p]) for k, p in enumerate(probes)]
    if predicted:
        handles.append(Line2D([], [], color="0.3", ls="--", marker="x", label="predicted (quenched theory)"))
    handles.append(Line2D([], [], color="0.5", ls=":", marker="none", label="constant guess"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)))
    fig.suptitle("Probe error against layer (mean ± SE over networks)")
    return fig


@_styled
def quenched_spread_figure(results: dict):
    """Within-network Var(log |h_m|^2/d) against m at layer 0: measured (dots) and the quenched
    theory (lines), per variant (colour) and tap (marker); ``None`` when no row has it."""
    # deferred: matplotlib is optional, imported only when a figure is drawn
    from matplotlib.figure import Figure

    variants = list(results["variants"])
    colours = _variant_colours(variants)
    kinds = _kinds(results)
    rows = [(v, r) for v in variants for r in results["variants"][v]["layers"] if r["layer"] == 0 and "quenched" in r]
    if not rows:
        return None
    fig = Figure(figsize=(ONE_COLUMN, 3.0), layout="constrained")
    ax = fig.subplots()
    for v, r in rows:
        q = r["quenched"]
        ms = [int(k) for k in q["var_within_measured_at"]]
        k = kinds.index(r["tap_kind"]) if r["tap_kind"] in kinds else 0
        ax.plot(ms, list(q["var_within_measured_at"].values()), ls="none", marker=marker(k), color=colours[v],
                label=f"{v}, {TAP_LABELS[r['tap_kind']]}: measured")
        ax.plot(ms, list(q["var_within_predicted_at"].values()), "-", marker="none", color=colours[v], lw=1,
                label=f"{v}, {TAP_LABELS[r['tap_kind']]}: quenched theory")
    ax.set_xscale("log")
    ax.set_xlabel("position m")
    ax.set_ylabel("Var(log |h_m|²/d) within a network")
    ax.set_title("Layer 0: measured and quenched theory")
    ax.legend()
    return fig


def figures(results: dict, curves: dict, out: Path) -> list[str]:
    """Write the probe figures (PNG and PDF) from the stored results; return the file names."""
    written = []
    for probe, fname in ((HEAT_PROBE, "where_position"), ("best", "where_position_best")):
        written += _save(where_position_figure(results, probe), out, fname)
    if any(results["variants"][v]["layers"] for v in results["variants"]):
        written += _save(probe_error_figure(results), out, "probe_error")
    fig = quenched_spread_figure(results)
    if fig is not None:
        written += _save(fig, out, "quenched_spread")
    return written


@_styled
def _save(fig, out: Path, name: str) -> list[str]:
    """Write ``name.png`` and ``name.pdf`` into ``out`` (in the shared style), return the file names."""
    names = []
    for ext in ("png", "pdf"):
        atomic_savefig(fig, out / f"{name}.{ext}", dpi=200)
        names.append(f"{name}.{ext}")
    return names


# ---------------------------------------------------------------- findings
def _best(rows: list[dict], probe: str, kind: str | None = None) -> dict | None:
    rows = [r for r in rows if probe in r and (kind is None or r["tap_kind"] == kind)]
    return min(rows, key=lambda r: r[probe]["mae"]) if rows else None


def _where(r: dict, p: str) -> str:
    return f"`{TAP_LABELS[r['tap_kind']]}` of layer {r['layer']}"


def findings(results: dict) -> str:
    """Plain statements computed from the numbers (nothing here is typed in for one run)."""
    T = results["meta"]["spec"]["seq_len"]
    chance = chance_mae(T)
    variants = results["variants"]
    lines = []
    main = "none" if "none" in variants else next(iter(variants))
    name = "NoPE" if main == "none" else f"`{main}`"
    nope = variants[main]["layers"]
    p = HEAT_PROBE
    b = _best(nope, p)
    if b is not None:
        post = _best(nope, p, "hook_resid_post")
        lines.append(
            f"- **Where position lives ({name}, one number per token, {PROBE_LABELS[p]} probe).** Best: {_where(b, p)}, "
            f"MAE {b[p]['mae']:.1f} of a constant guess's {chance:.1f} (R²(log m) {b[p]['r2_log']:.2f})"
            + (f"; the block output `resid_post` does best at layer {post['layer']} with MAE {post[p]['mae']:.1f} "
               f"(R²(log m) {post[p]['r2_log']:.2f})." if post else "."))
        by_kind = []
        for kind in _kinds(results):
            r = [x for x in nope if x["tap_kind"] == kind and p in x]
            if r:
                by_kind.append(f"`{TAP_LABELS[kind]}` " + ", ".join(f"{x[p]['r2_log']:.2f}" for x in r))
        lines.append(f"- {name} R²(log m) by layer 0..: " + "; ".join(by_kind) + ".")
    # the mechanism: position-flat variance of the MLP against the attention output
    mlp0 = next((r for r in nope if r["tap_kind"] == "hook_mlp_out" and r["layer"] == 0), None)
    att0 = next((r for r in nope if r["tap_kind"] == "hook_attn_out" and r["layer"] == 0), None)
    if mlp0 and att0:
        lv, la = mlp0["measured"]["level_at"], att0["measured"]["level_at"]
        q = mlp0.get("quenched", {}).get("level_predicted_at")
        lines.append(
            f"- **Mechanism.** Layer 0's MLP writes a mean square |h|²/d of {lv['1']:.3g} at m = 1 and {lv[str(T)]:.3g} "
            f"at m = {T} (theory: {q['1']:.3g}, {q[str(T)]:.3g})" if q else
            f"- **Mechanism.** Layer 0's MLP writes a mean square |h|²/d of {lv['1']:.3g} at m = 1 and {lv[str(T)]:.3g} at m = {T}")
        lines[-1] += (f" -- flat in position -- against the attention output's {la['1']:.3g} at m = 1 falling to "
                      f"{la[str(T)]:.3g} at m = {T} (ratio MLP/attention {lv['1'] / la['1']:.2f} at m = 1, "
                      f"{lv[str(T)] / la[str(T)]:.0f} at m = {T}). Added to the residual, this position-independent "
                      f"variance buries the 1/m signal the attention output carries.")
    # the quenched theory against the measurement at layer 0's attention output
    if att0 and "quenched" in att0:
        q = att0["quenched"]
        vo = att0.get("variance_only", {})
        lines.append(
            f"- **Quenched theory, layer 0 `attn_out`.** Within-network Var(log s) measured / predicted = "
            f"{q['var_ratio']:.3f}" + (f" ± {q['var_ratio_se']:.3f}" if q.get("var_ratio_se") is not None else "")
            + f" (effective degrees of freedom about {q['dof_predicted']:.0f} for d = {results['meta']['spec']['d_model']}: "
            f"d/3 from the Fuss-Catalan second moment of W_o W_v, not d). Variance-only MAE measured {vo.get('mae', float('nan')):.1f}"
            f", predicted with no training {q['mae_predicted']:.1f} (R²(log m) {vo.get('r2_log', float('nan')):.2f} vs "
            f"{q['r2_log_predicted']:.2f}).")
    # fair probes: full-state probes against the scalar
    for kind in ("hook_attn_out", "hook_resid_post"):
        cells = []
        for probe in ("mlp", "full", "linear", "variance_only", "cosine"):
            r = _best(nope, probe, kind)
            if r is not None:
                cells.append(f"{PROBE_LABELS[probe]} {r[probe]['mae']:.1f} (layer {r['layer']})")
        if len(cells) > 1:
            lines.append(f"- {name} `{TAP_LABELS[kind]}`, best-layer MAE per probe: " + ", ".join(cells) + ".")
    # variants
    for variant, body in variants.items():
        if variant == main:
            continue
        rows = body["layers"]
        best_any = [(probe, _best(rows, probe)) for probe in _probes_present(results)]
        best_any = [(pr, r) for pr, r in best_any if r is not None]
        if best_any:
            pr, r = min(best_any, key=lambda x: x[1][x[0]]["mae"])
            vo = _best(rows, p)
            att = next((x for x in rows if x["tap_kind"] == "hook_attn_out" and x["layer"] == 0 and p in x), None)
            lines.append(f"- `{variant}`: best probe {PROBE_LABELS[pr]} at {_where(r, pr)}, MAE {r[pr]['mae']:.1f}"
                         + (f"; {PROBE_LABELS[p]} best {vo[p]['mae']:.1f} at {_where(vo, p)}" if vo else "")
                         + (f"; layer-0 attn_out variance-only MAE {att[p]['mae']:.1f}" if att else "") + ".")
    if results["sigma_sweep"]:
        parts = []
        for entry in results["sigma_sweep"]:
            r = _best(entry["layers"], p)
            if r is not None:
                parts.append(f"sigma {entry['sigma']:g}: {r[p]['mae']:.1f} at {_where(r, p)}")
        if parts:
            lines.append(f"- NoPE, {PROBE_LABELS[p]} probe, best MAE against the init scale: " + "; ".join(parts) + ".")
    return "\n".join(lines) + "\n"


# The files write_outputs always writes (figures beside them).
PROBE_OUTPUTS = ("results.json", "per_position.npz", "table.md", "table.tex", "report.md")


def write_outputs(results: dict, curves: dict, out: Path, *, command: str, wall_s: float) -> list[str]:
    out.mkdir(parents=True, exist_ok=True)
    results = _clean(results)
    # every file replaced atomically (temporary file and rename): never half a result
    atomic_write_text(out / "results.json", json.dumps(results, indent=1) + "\n")
    with atomic_path(out / "per_position.npz") as tmp:
        np.savez_compressed(tmp, **{f"{v}/{name}/{p}/{kind}": c[i] for (v, name, p), c in curves.items()
                                    for i, kind in enumerate(("mae", "mad"))})
    tables = markdown_tables(results)
    qt = quenched_table(results)
    atomic_write_text(out / "table.md", tables + ("\n" + qt if qt else ""))
    atomic_write_text(out / "table.tex", latex_table(results))
    written = ["results.json", "per_position.npz", "table.md", "table.tex"] + figures(results, curves, out)
    meta, spec = results["meta"], results["meta"]["spec"]
    T = spec["seq_len"]
    report = [
        "# Position probing in frozen random transformers", "",
        f"Command: `{command}`  ", f"Wall time: {wall_s:.0f} s.", "",
        "## Where position lives", "",
        "![R²(log m) and MAE / constant guess, tap x layer, per variant](where_position.png)", "",
        findings(results),
        f"Network: d_model {spec['d_model']}, {spec['n_heads']} heads, {spec['n_layers']} layers, context {T}, vocabulary "
        f"{spec['vocab_size']} (ids uniform), sigmas {', '.join(sorted({str(spec[k]) for k in spec if k.startswith('sigma_')}))}, "
        f"{'attention only' if spec['attn_only'] else 'MLP ' + (spec['activation'] if spec.get('mlp', 'standard') == 'standard' else spec['mlp'])}, "
        f"{spec.get('normalization', 'layernorm')} eps {spec['ln_eps']}, positional {spec['positional']}"
        f"{', QK-norm ' + str(spec['qk_norm']) if spec.get('qk_norm') else ''}"
        f"{', ' + str(spec['n_kv_heads']) + ' key/value heads' if spec.get('n_kv_heads') else ''}. "
        f"Quenched: {meta['networks']} frozen networks per variant (the same weights across variants), {meta['sequences']} "
        f"sequences each, split {meta['split']['train']}/{meta['split']['val']}/{meta['split']['test']} (train/validation/test); "
        f"seed {meta['seed']}. Taps: {', '.join(meta['taps'])} of every layer; full-state probes at "
        f"{', '.join(meta['full_taps']) or 'none'}. Theory: {meta.get('theory', 'not asked for')}.", "",
        f"MAE = mean |estimate - m| with the {meta['decoder']}; MAD = mean |class - m| (mode, Haviv et al.); ± one standard "
        f"error over networks. A constant guess scores MAE {chance_mae(T):.1f}. MLP probes: width and learning rate chosen on "
        f"validation MAE among {meta['mlp_grid']} on the first network (the others reuse it), up to {meta['mlp_epochs']} epochs, "
        "early stopping on validation MAE. The cosine probe sees the mean cosine of the token with the other tokens of its "
        "sequence (Zuo et al., COLING 2025), never an index.", "",
    ]
    if qt:
        report += ["## The quenched theory against the measurement (NoPE)", "", qt, "![quenched spread](quenched_spread.png)", ""]
    report += ["## Tables", "", tables, "## Figures", "", "![probe error against layer](probe_error.png)", "",
               "![best probe per cell](where_position_best.png)", ""]
    atomic_write_text(out / "report.md", "\n".join(report))
    return written + ["report.md"]
