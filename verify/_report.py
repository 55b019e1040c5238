"""Writing a `Report`: report.md, results.json, summary.tex, figures; the console summary."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from theory._outputs import atomic_write_text

from ._depth import MAIN_TAPS
from ._figures import depth_variance_tap, save_figures
from ._job import DEFAULT_SPEC, PRESETS, Report

MEASURE = "annealed"


def _clean(value):
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return _clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _short(tap: str) -> str:
    return tap.split(".", 2)[-1]


def _label(report: Report, tap: str) -> str:
    """A tap as tables show it: without ``blocks.0.`` for one layer, in full otherwise."""
    return _short(tap) if report.layers <= 1 else tap


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.2f}%"


def _g(x, digits: int = 4) -> str:
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def results_dict(report: Report, figures: dict | None = None) -> dict:
    """The machine-readable results (what results.json holds)."""
    sim_meta = report.simulation.meta
    return _clean({
        "spec": report.spec.to_dict(),
        "run": {
            "command": report.command,
            "preset": report.preset,
            "samples": report.samples,
            "seed": report.seed,
            "alpha": report.alpha,
            "measure": MEASURE,
            "positions": report.positions,
            "logit_variance": report.logit_variance,
            "device": sim_meta.get("device"),
            "timings_s": report.timings,
            "versions": sim_meta.get("versions"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "verdict": {
            "passed": report.passed,
            "exact_passed": report.exact_passed,
            "checks": len(report.checks),
            "failed": len(report.checks.failed),
            "by_tap": report.checks.by_tap(),
            "distributions_passed": all(d.passed for d in report.distributions),
        },
        "checks": report.checks.to_list(),
        "distributions": [d.to_dict() for d in report.distributions],
        "leading": {"summary": report.leading_summary(), "rows": report.leading_deviations()},
        "depth": {"layers": report.layers, "accuracy": report.depth_accuracy(), "findings": report.depth_findings()},
        "mutants": report.mutants,
        "calibration": report.calibration.to_dict() if report.calibration else None,
        "figures": figures or {},
    })


# ------------------------------------------------------------------------------ markdown
def _spec_lines(report: Report) -> list[str]:
    spec = report.spec.to_dict()
    preset = PRESETS.get(report.preset)
    base = preset.spec if preset is not None and preset.spec is not None else DEFAULT_SPEC
    name = "the default spec" if base == DEFAULT_SPEC else f"the `{report.preset}` preset's spec"
    default = base.to_dict()
    changed = {k: v for k, v in spec.items() if v != default.get(k)}
    what = (f"{base.n_layers} pre-LN blocks{'' if base.attn_only else ' with MLP'}, d = {base.d_model}, "
            f"T = {base.seq_len}, GPT-2 init" + ("" if base.sigma_q == 0.02 and base.sigma_k == 0.02 else
                                                 f" with sigma_q = {base.sigma_q}, sigma_k = {base.sigma_k}"))
    head = (f"{name} ({what})" if not changed
            else f"{name} ({what}) with " + ", ".join(f"`{k}={v}`" for k, v in changed.items()))
    return [
        f"- Spec: {head}.",
        f"- Key numbers: n_layers = {spec['n_layers']}, MLP = {'no' if spec['attn_only'] else spec['activation']}, "
        f"d_model = {spec['d_model']}, n_heads = {spec['n_heads']}, seq_len = {spec['seq_len']}, "
        f"sigma_embed = {spec['sigma_embed']}, sigma_q = {spec['sigma_q']}, sigma_k = {spec['sigma_k']}, "
        f"sigma_v = {spec['sigma_v']}, sigma_o = {spec['sigma_o']}, ln_eps = {spec['ln_eps']}, "
        f"attn_scale = {spec['attn_scale']}; mean logit variance tau_bar^2 = {report.logit_variance:.4g}.",
    ]


def _leading_sentences(report: Report) -> list[str]:
    lines = []
    summary = {r["tap"]: r for r in report.leading_summary()}
    z = summary.get("blocks.0.attn.hook_z")
    if z:
        lines.append(
            f"At m = {z['position']} the paper's `hook_z` variance `sigma_v^2 d / m` = {_g(z['leading'])} against "
            f"{_g(z['sim'])} ± {_g(z['se'], 2)} simulated: **{_pct(z['rel_error'])}** (z = {_g(z['z'], 3)}); "
            f"the best level is off by {_pct(report.best_rel_error('blocks.0.attn.hook_z', z['position']))}."
        )
    for tap in ("blocks.0.hook_attn_out", "blocks.0.hook_resid_mid", "blocks.0.attn.hook_pattern",
                "blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q", "blocks.0.attn.hook_attn_scores"):
        r = summary.get(tap)
        if not r:
            continue
        what = "m E[sum a^2] (uniform attention: 1)" if r["quantity"] == "sum_sq" else "variance"
        where = (f"significant at m in {{{', '.join(map(str, r['significant_positions']))}}}"
                 if r["significant_positions"] else "not significant at any recorded m")
        lines.append(
            f"`{_short(tap)}` {what}: {_pct(r['rel_error'])} at m = {r['position']}, largest {_pct(r['worst_rel_error'])} "
            f"at m = {r['worst_position']}; {where}."
        )
    return lines


def _depth_matrix(report: Report, rows: list[dict]) -> list[str]:
    """Main taps x layers: largest |theory/sim - 1| over positions and largest |z|."""
    layers = report.layers
    head = "| tap | " + " | ".join(f"layer {l + 1}" for l in range(layers)) + " |"
    lines = [head, "|---|" + "---|" * layers]
    index = {(r["layer"], r["tap"], r["quantity"]): r for r in rows}
    for kind in MAIN_TAPS:
        cells = []
        for l in range(layers):
            r = index.get((l, kind, "var"))
            cells.append("" if r is None else f"{100 * r['max_abs_rel_error']:.2f}% (\\|z\\| {_g(r['max_abs_z'], 2)})"
                         + ("" if not r["failed"] else " **FAIL**"))
        if any(cells):
            lines.append(f"| `{kind}` | " + " | ".join(cells) + " |")
    return lines


def _leading_pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _depth_lines(report: Report) -> list[str]:
    rows = report.depth_accuracy()
    findings = report.depth_findings()
    lines = [
        "Every tap of every layer is checked; the layer-1 attention taps against `theory.derive`, the rest against "
        "the depth recursion `theory.depth` (position kernel carried through LayerNorm, causal attention and MLP), "
        "approximate from layer 2 on and held to the relative error it declares. Below: the largest |theory/sim - 1| "
        "over the recorded positions (variance of one coordinate) and the largest |z| (z = (theory - sim)/SE, "
        "before the declared error is allowed).",
        "",
    ]
    lines += _depth_matrix(report, rows)
    lines += ["", "**Where the error grows with depth.**", ""]
    lines += [f"- {f['sentence']}" for f in findings] or ["- (one layer: nothing to compare)"]
    lines += [
        "",
        "Per layer and tap: level, declared relative error, largest |theory/sim - 1| with its position, sign, SE and z, "
        "largest |z|, failed checks, and the paper's picture carried through depth (`theory.depth`, level "
        "`leading`: LayerNorm output of variance 1, uniform attention) at its largest |error|.",
        "",
        "| layer | tap | quantity | level | declared | max \\|rel. error\\| | at m | rel. error ± SE | z | max \\|z\\| | failed | leading max \\|rel. error\\| |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['layer'] + 1} | `{r['tap']}` | {r['quantity']} | {r['level']} | {100 * r['rel_tol']:.3g}% | "
            f"{100 * r['max_abs_rel_error']:.2f}% | {r['position']} | {_pct(r['rel_error'])} ± {100 * r['rel_se']:.2f}% | "
            f"{_g(r['z'], 3)} | {_g(r['max_abs_z'], 3)} | {r['failed']} | "
            f"{_leading_pct(r['leading_max_abs_rel_error'])} |"
        )
    return lines


def _interval(pair) -> str:
    return "n/a (one run)" if not pair else f"[{_g(pair[0], 3)}, {_g(pair[1], 3)}]"


def _calibration_lines(report: Report) -> list[str]:
    cal = report.calibration
    if cal is None:
        return ["Calibration was skipped (`--no-calibration`)."]
    fa, allk, zs, fw, tt = cal.false_alarm, cal.all_known, cal.zscores, cal.family_wise, cal.true_theory
    spec = cal.spec
    lines = [
        f"{cal.runs} runs of {cal.samples} networks each (seeds {cal.seeds[0]}..{cal.seeds[1]}) on a small spec: "
        f"d_model = {spec.d_model}, n_heads = {spec.n_heads}, T = {spec.seq_len}, GPT-2 init otherwise with "
        f"sigma_q = sigma_k = {spec.sigma_q}, positions {', '.join(map(str, cal.positions))}; {cal.wall_time_s:.1f} s.",
        "",
        "**False alarms of exact checks on exactly known quantities** (embedding, LayerNorm, q/k/v, logits):",
        "",
        f"- one designated check per run, unadjusted at alpha = {fa['alpha_check']}: {fa['rejected']} / {fa['runs']} "
        f"rejected = {_g(fa['rate'], 3)}; Binomial({fa['runs']}, {fa['alpha_check']}) central 99% range "
        f"[{fa['binomial_range_99'][0]}, {fa['binomial_range_99'][1]}] -> "
        f"**{'within bounds' if fa['within_bounds'] else 'OUTSIDE bounds'}**;",
        f"- all {allk['checks']} such checks: rejection rate {_g(allk['rate'], 3)} (99% interval from the spread "
        f"across runs {_interval(allk['interval_99'])}); their z-scores have mean "
        f"{zs['mean']:+.3f} and sd {zs['sd']:.3f} (ideal 0 and 1), |z| > 2.576 in {_g(zs['frac_abs_gt_2.576'], 3)} "
        f"(ideal 0.01);",
        f"- family-wise (Holm at alpha = {fw['alpha']} over the known checks of a run): {fw['rejected']} / {fw['runs']} "
        f"runs = {_g(fw['rate'], 3)} (must not exceed the 99% upper bound {fw['upper_99']} of "
        f"Binomial({fw['runs']}, {fw['alpha']}): **{'ok' if fw['within_bounds'] else 'EXCEEDED'}**);",
        f"- the correct theory over the full check family of a run: rejected in {tt['rejected']} / {tt['runs']} runs "
        f"({_g(tt['rate'], 3)}).",
        "",
        f"**Power against formula mutants** at the default sample size ({cal.samples} networks), same runs:",
        "",
        "| mutant | detected (calibration spec) | rate | 95% CI | this run | largest expected shift (SE) |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in cal.power.items():
        main = report.mutants.get(name, {})
        lines.append(
            f"| {name} | {p['detected']} / {p['runs']} | {_g(p['rate'], 3)} | [{_g(p['clopper_pearson_95'][0], 3)}, "
            f"{_g(p['clopper_pearson_95'][1], 3)}] | {'detected' if main.get('detected') else 'missed'} | "
            f"{_g(main.get('max_expected_shift_se'), 3)} |"
        )
    lines += [
        "",
        "\"This run\" applies the mutant to the main run's theory and judges it against the same simulation; the last "
        "column is the largest shift |theory_mutant - theory| / SE over its checks, beyond their declared error (a mutant "
        "is reliably detected "
        "when it clearly exceeds Holm's first critical value, about 4).",
    ]
    return lines


def markdown(report: Report, figures: dict | None = None) -> str:
    """report.md: what was run, verdicts, leading-order deviations, calibration, figures, checks."""
    checks = report.checks
    by_tap = checks.by_tap()
    n_exact = sum(1 for c in checks if c.exact)
    verdict = ("PASS" if report.passed else
               "FAIL (an exact check failed)" if not report.exact_passed else "FAIL (approximate)")
    t = report.timings
    lines = [
        "# verify: theory against simulation",
        "",
        f"**Verdict: {verdict}** — {len(checks) - len(checks.failed)} of {len(checks)} checks passed "
        f"({n_exact} exact, {len(checks) - n_exact} approximate); family-wise alpha = {report.alpha} (Holm).",
        "",
        "## What was run",
        "",
        f"- Command: `{report.command or 'python -m verify'}` (preset `{report.preset}`).",
        *_spec_lines(report),
        f"- Measure: {MEASURE} (a fresh network and fresh Gaussian inputs per sample); {report.samples} networks, "
        f"seed {report.seed}; query positions {', '.join(map(str, report.positions))}.",
        f"- Theory: `theory.derive` for the attention taps of layer 1"
        + (f", `theory.depth.predict` for the MLP and every tap of layers 2-{report.layers}" if report.layers > 1 else
           ", `theory.depth.predict` for the MLP" if not report.spec.attn_only else "")
        + "; best level checked, the paper's leading order compared.",
        f"- Wall time: {t.get('total_s', float('nan')):.1f} s (theory {t.get('theory_s', 0):.1f} s, simulation "
        f"{t.get('simulation_s', 0):.1f} s, calibration {t.get('calibration_s', 0):.1f} s).",
        "",
        "Rules: an exact result passes when its z = (theory - sim)/SE survives Holm's procedure over all checks of the "
        "run (SE: across independent networks); an approximate one is first allowed its declared relative error "
        "(`rel_tol`) and only the excess is tested the same way. Statistics fixed per network up to rounding are "
        "compared to 1e-5 relative (`deterministic`).",
        "",
        "## Verdict per tap",
        "",
        "| tap | level | checks | failed | max abs z | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for tap, row in by_tap.items():
        lines.append(f"| `{tap}` | {row['level']} | {row['checks']} | {row['failed']} | {row['max_abs_z']:.2f} | "
                     f"{'pass' if row['verdict'] == 'pass' else '**FAIL**'} |")
    if report.distributions:
        m = report.distributions[0].position
        lines += [
            "",
            f"## Distributions (m = {m})",
            "",
            "Where `theory.law` gives the exact law of one coordinate, the simulation kept one value per network "
            "at a random coordinate (independent draws of that law); a Kolmogorov-Smirnov test compares them, "
            "Holm over these tests; the run's alpha is split between these and the moment checks in proportion to "
            "their numbers, so the family-wise error of all checks together is at most alpha.",
            "",
            "| tap | networks | KS statistic | p-value | Holm level | passed | law |",
            "|---|---|---|---|---|---|---|",
        ]
        for d in report.distributions:
            lines.append(f"| `{_short(d.tap)}` | {d.n} | {d.ks_statistic:.4f} | {_g(d.p_value, 3)} | {_g(d.threshold, 2)} | "
                         f"{'yes' if d.passed else '**NO**'} | {d.law} |")
        lines += [
            "",
            "### Where the Gaussian picture fails",
            "",
            "The paper treats every step as Gaussian. For the same draws: the KS p-value against the Gaussian of "
            "the same variance, the Kolmogorov distance D = sup |F_law - Phi| between the exact law and that "
            "Gaussian, and n_detect = (1.36/D)^2, the number of independent draws at which a 5% KS test "
            "rejects the Gaussian about half the time.",
            "",
            "| tap | KS p vs Gaussian | D | n_detect | detectable with this run? |",
            "|---|---|---|---|---|",
        ]
        for d in report.distributions:
            detectable = "yes" if d.n >= d.n_detect else "no"
            n_detect = "never (Gaussian)" if not math.isfinite(d.n_detect) else f"{d.n_detect:,.0f}"
            lines.append(f"| `{_short(d.tap)}` | {_g(d.gaussian_p_value, 3)} | {d.gaussian_distance:.2e} | {n_detect} | "
                         f"{detectable} ({d.n} draws) |")
    if report.layers > 1 or not report.spec.attn_only:
        lines += ["", "## Accuracy through depth", ""] + _depth_lines(report)
    lines += ["", "## Where the paper's leading order deviates", ""]
    lines += [
        "The leading order (Chi et al. 2023) takes the LayerNorm output as N(0, 1), attention as uniform "
        "(a_mn = 1/m) and the weights as independent of the values they average. Relative error "
        "theory/sim - 1, z = (theory - sim)/SE; significant = |z| above the Bonferroni critical value over these "
        "comparisons.",
        "",
    ]
    lines += [f"- {s}" for s in _leading_sentences(report)]
    lines += [
        "",
        "| tap | quantity | m | leading | simulation | SE | rel. error | z |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report.leading_deviations():
        if r["quantity"] == "mean" or not r["tap"].startswith("blocks.0."):
            continue
        lines.append(f"| `{_short(r['tap'])}` | {r['quantity']} | {r['position']} | {_g(r['theory'])} | {_g(r['sim'])} | "
                     f"{_g(r['se'], 2)} | {_pct(r['rel_error'])} | {_g(r['z'], 3)} |")
    lines += ["", "## Calibration of verify", ""] + _calibration_lines(report)
    if figures:
        lines += ["", "## Figures", ""]
        captions = {
            "variance": "Variance against position (log-log), simulation with 2-SE bars, best and leading theory.",
            "sum_sq": "m E[sum_n a_mn^2] against m: 1 for uniform attention.",
            "zscores": "z-scores of all checks; dotted/dashed: Holm's strictest and loosest critical values.",
            "distributions": "One coordinate's simulated distribution against the exact law (KS p-values).",
            "depth_error": "Relative error theory/sim - 1 against the layer for the main taps (best level at three "
                           "positions with 2-SE bars, its largest |error| over positions, the declared tolerance "
                           "shaded, the paper's leading order hollow).",
            "depth_variance": f"Variance of {depth_variance_tap(report)} against position for every layer (log-log): "
                              "simulation with 2-SE bars, best theory (line), leading order (dashed); below, "
                              "theory / simulation with each layer's 2-SE band.",
        }
        for name, paths in figures.items():
            png = next((p for p in paths if p.endswith(".png")), paths[0])
            lines += [f"![{name}]({png})", "", f"*{captions.get(name, name)}* ({', '.join(paths)})", ""]
    lines += [
        "## All checks",
        "",
        "| tap | m | quantity | level | theory | simulation | SE | z | tolerance | passed | assumption (on failure) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in checks:
        lines.append(
            f"| `{_label(report, c.tap)}` | {c.position} | {c.quantity} | {c.level}{' (det.)' if c.method == 'deterministic' else ''} | "
            f"{_g(c.theory, 6)} | {_g(c.sim, 6)} | {_g(c.se, 2)} | {_g(c.z, 3)} | {_g(c.tolerance, 2)} | "
            f"{'yes' if c.passed else '**NO**'} | {'' if c.passed else c.assumption} |"
        )
    return "\n".join(lines) + "\n"


def latex_summary(report: Report) -> str:
    """summary.tex: the per-tap verdicts and the leading-order deviations as LaTeX tables."""
    esc = lambda s: s.replace("_", r"\_")  # noqa: E731
    rows = [
        r"\begin{tabular}{llrrr}", r"\toprule",
        r"tap & level & checks & failed & $\max|z|$ \\", r"\midrule",
    ]
    for tap, row in report.checks.by_tap().items():
        rows.append(rf"\texttt{{{esc(_short(tap))}}} & {row['level']} & {row['checks']} & {row['failed']} & {row['max_abs_z']:.2f} \\")
    rows += [r"\bottomrule", r"\end{tabular}", ""]
    rows += [
        r"\begin{tabular}{lrrrr}", r"\toprule",
        r"tap & $m$ & leading & simulation & rel.\ error \\", r"\midrule",
    ]
    for r in report.leading_summary():
        rows.append(rf"\texttt{{{esc(_short(r['tap']))}}} & {r['position']} & {r['leading']:.4g} & {r['sim']:.4g} & "
                    rf"{100 * r['rel_error']:+.1f}\% \\")
    rows += [r"\bottomrule", r"\end{tabular}"]
    if report.layers > 1 or not report.spec.attn_only:
        rows += ["", depth_table_tex(report)]
    return "\n".join(rows) + "\n"


def depth_table_tex(report: Report) -> str:
    """Main taps x layers: largest |theory/sim - 1| over positions (best level; in
    parentheses the largest |z|), as a booktabs tabular."""
    layers = report.layers
    index = {(r["layer"], r["tap"], r["quantity"]): r for r in report.depth_accuracy()}
    esc = lambda s: s.replace("_", r"\_")  # noqa: E731
    out = [rf"\begin{{tabular}}{{l{'r' * layers}}}", r"\toprule",
           "tap & " + " & ".join(f"layer {l + 1}" for l in range(layers)) + r" \\", r"\midrule"]
    for kind in MAIN_TAPS:
        cells = []
        for l in range(layers):
            r = index.get((l, kind, "var"))
            cells.append("" if r is None else rf"{100 * r['max_abs_rel_error']:.2f}\% ({_g(r['max_abs_z'], 2)})")
        if any(cells):
            out.append(rf"\texttt{{{esc(kind)}}} & " + " & ".join(cells) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(out)


def write_report(report: Report, out: str | Path = "report") -> dict[str, str]:
    """Write report.md, results.json, summary.tex, report.tex (with the derivation) and the figures into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = save_figures(report, out)
    # each file replaced atomically: a killed run leaves the old report or the new one
    atomic_write_text(out / "results.json", json.dumps(results_dict(report, figures), indent=1, allow_nan=False) + "\n")
    atomic_write_text(out / "report.md", markdown(report, figures))
    atomic_write_text(out / "summary.tex", latex_summary(report))
    # The whole report as LaTeX: check table, PDF figures and the derivation as an appendix
    # (`pdflatex report.tex` in `out`). Written last, so that a LaTeX problem never costs
    # the Markdown and JSON results above.
    from ._report_tex import write_report_tex

    sections = []
    if report.layers > 1 or not report.spec.attn_only:
        from theory._latex import escape

        findings = "\n".join(r"\item " + escape(f["sentence"].replace("`", "")).replace("|", "$|$") for f in report.depth_findings())
        sections.append((
            "Accuracy through depth",
            "Largest relative error $|\\text{theory}/\\text{sim} - 1|$ over the recorded positions of the variance of "
            "one coordinate, per layer (best level; in parentheses the largest $|z|$).\n\n\\begin{center}\n"
            + depth_table_tex(report) + "\n\\end{center}\n\n"
            + ("\\begin{itemize}\n" + findings + "\n\\end{itemize}\n" if findings else ""),
        ))
    report_tex = write_report_tex(out, report.spec, report.checks, figures, None, sections=sections)
    written = {"report": str(out / "report.md"), "results": str(out / "results.json"), "latex": str(out / "summary.tex"),
               "report_tex": str(report_tex)}
    for name, paths in figures.items():
        for p in paths:
            written[p] = str(out / p)
    return written


def console_summary(report: Report, out: str | Path | None = None) -> str:
    """A few lines for the terminal."""
    checks = report.checks
    n_exact = sum(1 for c in checks if c.exact)
    failed_exact = sum(1 for c in checks.failed if c.exact)
    lines = [
        f"verify: {'PASS' if report.passed else 'FAIL'}  {len(checks) - len(checks.failed)}/{len(checks)} checks passed "
        f"({n_exact} exact, {failed_exact} failed; {len(checks) - n_exact} approximate, "
        f"{len(checks.failed) - failed_exact} failed); Holm alpha = {report.alpha}",
    ]
    for c in checks.failed[:5]:
        lines.append("  " + c.describe())
    if report.distributions:
        bad = [d for d in report.distributions if not d.passed]
        lines.append(f"distributions: {len(report.distributions) - len(bad)}/{len(report.distributions)} KS tests "
                     f"passed at m={report.distributions[0].position}"
                     + ("" if not bad else " (failed: " + ", ".join(_short(d.tap) for d in bad) + ")"))
    z = next((r for r in report.leading_summary() if r["tap"] == "blocks.0.attn.hook_z"), None)
    if z:
        lines.append(f"leading order (paper): hook_z variance at m={z['position']} off by {_pct(z['rel_error'])} "
                     f"(z = {_g(z['z'], 3)}); best theory {_pct(report.best_rel_error('blocks.0.attn.hook_z', z['position']))}")
    if report.layers > 1 or not report.spec.attn_only:
        index = {(r["layer"], r["tap"]): r for r in report.depth_accuracy() if r["quantity"] == "var"}
        for kind in ("hook_resid_post", "hook_resid_mid", "attn.hook_z"):
            per = [index.get((l, kind)) for l in range(report.layers)]
            if any(per):
                lines.append(f"depth: {kind} max |theory/sim - 1| per layer: "
                             + ", ".join("-" if r is None else f"{100 * r['max_abs_rel_error']:.2f}%" for r in per))
        grows = [f["tap"] for f in report.depth_findings() if f["grows"]]
        if grows:
            lines.append("depth: error grows with depth for " + ", ".join(grows) + " (report.md says which assumption)")
    cal = report.calibration
    if cal is not None:
        fa = cal.false_alarm
        lines.append(
            f"calibration: false alarms {fa['rejected']}/{fa['runs']} at alpha {fa['alpha_check']} (99% range "
            f"{fa['binomial_range_99'][0]}-{fa['binomial_range_99'][1]}: {'ok' if fa['within_bounds'] else 'OUTSIDE'}); "
            + "; ".join(f"{k} detected {v['detected']}/{v['runs']}" for k, v in cal.power.items())
        )
    t = report.timings
    lines.append(f"wall time {t.get('total_s', float('nan')):.1f} s" + (f"; report in {out}/" if out else ""))
    return "\n".join(lines)
