"""The few lines `python -m verify` prints on the terminal."""

from __future__ import annotations

from pathlib import Path

from .text import g, has_depth, pct, short


def console_summary(report, out: str | Path | None = None) -> str:
    """A few lines for the terminal: the verdict, the first failures, the distributions,
    the paper's leading order, the error per layer, the calibration, the wall time."""
    lines = [_verdict_line(report)] + ["  " + c.describe() for c in report.checks.failed[:5]]
    if report.distributions:
        bad = [d for d in report.distributions if not d.passed]
        lines.append(f"distributions: {len(report.distributions) - len(bad)}/{len(report.distributions)} KS tests "
                     f"passed at m={report.distributions[0].position}"
                     + ("" if not bad else " (failed: " + ", ".join(short(d.tap) for d in bad) + ")"))
    z = next((r for r in report.leading_summary() if r["tap"] == "blocks.0.attn.hook_z"), None)
    if z:
        lines.append(f"leading order (paper): hook_z variance at m={z['position']} off by {pct(z['rel_error'])} "
                     f"(z = {g(z['z'], 3)}); best theory {pct(report.best_rel_error('blocks.0.attn.hook_z', z['position']))}")
    if has_depth(report):
        lines += _depth_lines(report)
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


def _verdict_line(report) -> str:
    checks = report.checks
    n_exact = sum(1 for c in checks if c.exact)
    failed_exact = sum(1 for c in checks.failed if c.exact)
    return (f"verify: {'PASS' if report.passed else 'FAIL'}  {len(checks) - len(checks.failed)}/{len(checks)} checks "
            f"passed ({n_exact} exact, {failed_exact} failed; {len(checks) - n_exact} approximate, "
            f"{len(checks.failed) - failed_exact} failed); Holm alpha = {report.alpha}")


def _depth_lines(report) -> list[str]:
    """The largest error per layer of the block output, the attention residual and hook_z."""
    index = {(r["layer"], r["tap"]): r for r in report.depth_accuracy() if r["quantity"] == "var"}
    lines = []
    for kind in ("hook_resid_post", "hook_resid_mid", "attn.hook_z"):
        per = [index.get((l, kind)) for l in range(report.layers)]
        if any(per):
            lines.append(f"depth: {kind} max |theory/sim - 1| per layer: "
                         + ", ".join("-" if r is None else f"{100 * r['max_abs_rel_error']:.2f}%" for r in per))
    grows = [f["tap"] for f in report.depth_findings() if f["grows"]]
    if grows:
        lines.append("depth: error grows with depth for " + ", ".join(grows) + " (report.md says which assumption)")
    return lines


__all__ = ["console_summary"]
