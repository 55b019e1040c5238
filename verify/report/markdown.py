"""report.md: what was run, the verdicts, distributions, accuracy through depth, the
paper's leading order, the calibration of verify, the figures and every check."""

from __future__ import annotations

import math

from ..checks.depth import MAIN_TAPS
from ..presets import DEFAULT_SPEC, PRESETS
from .figures import depth_variance_tap
from .results import MEASURE
from .text import g, has_depth, label, pct, short

# The caption of each figure under its picture.
CAPTIONS = {
    "variance": "Variance against position (log-log), simulation with 2-SE bars, best and leading theory.",
    "sum_sq": "m E[sum_n a_mn^2] against m: 1 for uniform attention.",
    "zscores": "z-scores of all checks; dotted/dashed: Holm's strictest and loosest critical values.",
    "distributions": "One coordinate's simulated distribution against the exact law (KS p-values).",
    "depth_error": "Relative error theory/sim - 1 against the layer for the main taps (best level at three "
                   "positions with 2-SE bars, its largest |error| over positions, the declared tolerance "
                   "shaded, the paper's leading order hollow).",
    "depth_variance": "Variance of {tap} against position for every layer (log-log): "
                      "simulation with 2-SE bars, best theory (line), leading order (dashed); below, "
                      "theory / simulation with each layer's 2-SE band.",
}


def markdown(report, figures: dict | None = None) -> str:
    """report.md: what was run, verdicts, leading-order deviations, calibration, figures, checks."""
    lines = _summary_lines(report) + _verdict_lines(report) + _distribution_lines(report)
    if has_depth(report):
        lines += ["", "## Accuracy through depth", ""] + _depth_lines(report)
    lines += _leading_lines(report)
    lines += ["", "## Calibration of verify", ""] + _calibration_lines(report)
    lines += _figure_lines(report, figures) + _check_lines(report)
    return "\n".join(lines) + "\n"


def _summary_lines(report) -> list[str]:
    """The verdict in one line, what was run, and the rules."""
    checks = report.checks
    n_exact = sum(1 for c in checks if c.exact)
    verdict = ("PASS" if report.passed else
               "FAIL (an exact check failed)" if not report.exact_passed else "FAIL (approximate)")
    t = report.timings
    return [
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
        "- Theory: `theory.derive` for the attention taps of layer 0"
        + (", `theory.depth.predict` for the MLP and every tap of "
           + ("layer 1" if report.layers == 2 else f"layers 1-{report.layers - 1}") if report.layers > 1 else
           ", `theory.depth.predict` for the MLP" if not report.spec.attn_only else "")
        + "; best level checked, the paper's leading order compared.",
        f"- Wall time: {t.get('total_s', float('nan')):.1f} s (theory {t.get('theory_s', 0):.1f} s, simulation "
        f"{t.get('simulation_s', 0):.1f} s, calibration {t.get('calibration_s', 0):.1f} s).",
        "",
        "Rules: an exact result passes when its z = (theory - sim)/SE survives Holm's procedure over all checks of the "
        "run (SE: across independent networks); an approximate one is first allowed its declared relative error "
        "(`rel_tol`) and only the excess is tested the same way. Statistics fixed per network up to rounding are "
        "compared to 1e-5 relative (`deterministic`).",
    ]


def _verdict_lines(report) -> list[str]:
    lines = [
        "",
        "## Verdict per tap",
        "",
        "| tap | level | checks | failed | max abs z | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for tap, row in report.checks.by_tap().items():
        lines.append(f"| `{tap}` | {row['level']} | {row['checks']} | {row['failed']} | {row['max_abs_z']:.2f} | "
                     f"{'pass' if row['verdict'] == 'pass' else '**FAIL**'} |")
    return lines


def _distribution_lines(report) -> list[str]:
    """The KS checks, and where the Gaussian picture fails (nothing without distribution checks)."""
    if not report.distributions:
        return []
    m = report.distributions[0].position
    lines = [
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
        lines.append(f"| `{short(d.tap)}` | {d.n} | {d.ks_statistic:.4f} | {g(d.p_value, 3)} | {g(d.threshold, 2)} | "
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
        lines.append(f"| `{short(d.tap)}` | {g(d.gaussian_p_value, 3)} | {d.gaussian_distance:.2e} | {n_detect} | "
                     f"{detectable} ({d.n} draws) |")
    return lines


def _leading_lines(report) -> list[str]:
    """Where the paper's leading order deviates: sentences, then layer 0's rows."""
    lines = [
        "",
        "## Where the paper's leading order deviates",
        "",
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
        lines.append(f"| `{short(r['tap'])}` | {r['quantity']} | {r['position']} | {g(r['theory'])} | {g(r['sim'])} | "
                     f"{g(r['se'], 2)} | {pct(r['rel_error'])} | {g(r['z'], 3)} |")
    return lines


def _figure_lines(report, figures: dict | None) -> list[str]:
    if not figures:
        return []
    lines = ["", "## Figures", ""]
    for name, paths in figures.items():
        png = next((p for p in paths if p.endswith(".png")), paths[0])
        caption = CAPTIONS.get(name, name).format(tap=depth_variance_tap(report))
        lines += [f"![{name}]({png})", "", f"*{caption}* ({', '.join(paths)})", ""]
    return lines


def _check_lines(report) -> list[str]:
    lines = [
        "## All checks",
        "",
        "| tap | m | quantity | level | theory | simulation | SE | z | tolerance | passed | assumption (on failure) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.checks:
        lines.append(
            f"| `{label(report, c.tap)}` | {c.position} | {c.quantity} | {c.level}{' (det.)' if c.method == 'deterministic' else ''} | "
            f"{g(c.theory, 6)} | {g(c.sim, 6)} | {g(c.se, 2)} | {g(c.z, 3)} | {g(c.tolerance, 2)} | "
            f"{'yes' if c.passed else '**NO**'} | {'' if c.passed else c.assumption} |"
        )
    return lines


def _spec_lines(report) -> list[str]:
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


def _leading_sentences(report) -> list[str]:
    lines = []
    summary = {r["tap"]: r for r in report.leading_summary()}
    z = summary.get("blocks.0.attn.hook_z")
    if z:
        lines.append(
            f"At m = {z['position']} the paper's `hook_z` variance `sigma_v^2 d / m` = {g(z['leading'])} against "
            f"{g(z['sim'])} ± {g(z['se'], 2)} simulated: **{pct(z['rel_error'])}** (z = {g(z['z'], 3)}); "
            f"the best level is off by {pct(report.best_rel_error('blocks.0.attn.hook_z', z['position']))}."
        )
    for tap in report.summary_taps()[1:]:
        r = summary.get(tap)
        if not r:
            continue
        what = "m E[sum a^2] (uniform attention: 1)" if r["quantity"] == "sum_sq" else "variance"
        where = (f"significant at m in {{{', '.join(map(str, r['significant_positions']))}}}"
                 if r["significant_positions"] else "not significant at any recorded m")
        lines.append(
            f"`{short(tap)}` {what}: {pct(r['rel_error'])} at m = {r['position']}, largest {pct(r['worst_rel_error'])} "
            f"at m = {r['worst_position']}; {where}."
        )
    return lines


def _depth_matrix(report, rows: list[dict]) -> list[str]:
    """Main taps x layers: largest |theory/sim - 1| over positions and largest |z|."""
    layers = report.layers
    head = "| tap | " + " | ".join(f"layer {l}" for l in range(layers)) + " |"
    lines = [head, "|---|" + "---|" * layers]
    index = {(r["layer"], r["tap"], r["quantity"]): r for r in rows}
    for kind in MAIN_TAPS:
        cells = []
        for l in range(layers):
            r = index.get((l, kind, "var"))
            cells.append("" if r is None else f"{100 * r['max_abs_rel_error']:.2f}% (\\|z\\| {g(r['max_abs_z'], 2)})"
                         + ("" if not r["failed"] else " **FAIL**"))
        if any(cells):
            lines.append(f"| `{kind}` | " + " | ".join(cells) + " |")
    return lines


def _leading_pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


def _depth_lines(report) -> list[str]:
    rows = report.depth_accuracy()
    findings = report.depth_findings()
    lines = [
        "Every tap of every layer is checked; the first-layer (layer 0) attention taps against `theory.derive`, the rest against "
        "the depth recursion `theory.depth` (position kernel carried through LayerNorm, causal attention and MLP), "
        "approximate from layer 1 on and held to the relative error it declares. Below: the largest |theory/sim - 1| "
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
            f"| {r['layer']} | `{r['tap']}` | {r['quantity']} | {r['level']} | {100 * r['rel_tol']:.3g}% | "
            f"{100 * r['max_abs_rel_error']:.2f}% | {r['position']} | {pct(r['rel_error'])} ± {100 * r['rel_se']:.2f}% | "
            f"{g(r['z'], 3)} | {g(r['max_abs_z'], 3)} | {r['failed']} | "
            f"{_leading_pct(r['leading_max_abs_rel_error'])} |"
        )
    return lines


def _interval(pair) -> str:
    return "n/a (one run)" if not pair else f"[{g(pair[0], 3)}, {g(pair[1], 3)}]"


def _calibration_lines(report) -> list[str]:
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
        f"rejected = {g(fa['rate'], 3)}; Binomial({fa['runs']}, {fa['alpha_check']}) central 99% range "
        f"[{fa['binomial_range_99'][0]}, {fa['binomial_range_99'][1]}] -> "
        f"**{'within bounds' if fa['within_bounds'] else 'OUTSIDE bounds'}**;",
        f"- all {allk['checks']} such checks: rejection rate {g(allk['rate'], 3)} (99% interval from the spread "
        f"across runs {_interval(allk['interval_99'])}); their z-scores have mean "
        f"{zs['mean']:+.3f} and sd {zs['sd']:.3f} (ideal 0 and 1), |z| > 2.576 in {g(zs['frac_abs_gt_2.576'], 3)} "
        f"(ideal 0.01);",
        f"- family-wise (Holm at alpha = {fw['alpha']} over the known checks of a run): {fw['rejected']} / {fw['runs']} "
        f"runs = {g(fw['rate'], 3)} (must not exceed the 99% upper bound {fw['upper_99']} of "
        f"Binomial({fw['runs']}, {fw['alpha']}): **{'ok' if fw['within_bounds'] else 'EXCEEDED'}**);",
        f"- the correct theory over the full check family of a run: rejected in {tt['rejected']} / {tt['runs']} runs "
        f"({g(tt['rate'], 3)}).",
        "",
        f"**Power against formula mutants** at the default sample size ({cal.samples} networks), same runs:",
        "",
        "| mutant | detected (calibration spec) | rate | 95% CI | this run | largest expected shift (SE) |",
        "|---|---|---|---|---|---|",
    ]
    for name, p in cal.power.items():
        main = report.mutants.get(name, {})
        lines.append(
            f"| {name} | {p['detected']} / {p['runs']} | {g(p['rate'], 3)} | [{g(p['clopper_pearson_95'][0], 3)}, "
            f"{g(p['clopper_pearson_95'][1], 3)}] | {'detected' if main.get('detected') else 'missed'} | "
            f"{g(main.get('max_expected_shift_se'), 3)} |"
        )
    lines += [
        "",
        "\"This run\" applies the mutant to the main run's theory and judges it against the same simulation; the last "
        "column is the largest shift |theory_mutant - theory| / SE over its checks, beyond their declared error (a mutant "
        "is reliably detected "
        "when it clearly exceeds Holm's first critical value, about 4).",
    ]
    return lines


__all__ = ["markdown", "CAPTIONS"]
