"""Figures of a report (matplotlib objects, no pyplot state; saved as PNG and PDF).

- `variance_figure`: Var against query position m on log-log axes for hook_z,
  hook_attn_out and hook_resid_mid: Monte Carlo means with 2-SE error bars, the best
  theory and the paper's leading order;
- `sum_sq_figure`: ``m E[sum_n a_mn^2]`` against m (1 for uniform attention, the paper);
- `zscore_figure`: the z-score of every check against m, one series per tap, with Holm's
  critical band;
- `distribution_figure`: histograms of one coordinate (reservoir draws) against the
  exact law of `theory.law`, per tap, with the KS p-value.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

VARIANCE_TAPS = ("blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid")
PATTERN = "blocks.0.attn.hook_pattern"

SIM_LABEL = "simulation (± 2 SE)"
BEST_LABEL = "theory, best"
LEADING_LABEL = "theory, leading (paper)"


def _short(tap: str) -> str:
    return tap.split(".", 2)[-1]


def variance_figure(report) -> Figure:
    """Var of one coordinate against m (log-log) for the three attention outputs (top
    row), and each theory divided by the simulation (bottom row: deviations of a few
    percent are invisible on the log-log panels)."""
    taps = [t for t in VARIANCE_TAPS if t in report.simulation]
    cols = max(len(taps), 1)
    fig = Figure(figsize=(4.2 * cols, 6.0), layout="constrained")
    grid = fig.subplots(2, cols, squeeze=False, sharex="col", gridspec_kw={"height_ratios": [2.2, 1]})
    for j, tap in enumerate(taps):
        ax, ratio = grid[0][j], grid[1][j]
        stats = report.simulation[tap]
        m = np.asarray(stats.positions, dtype=float)
        ax.errorbar(m, stats.var, yerr=2 * stats.var_se, fmt="o", ms=3.5, color="black", capsize=2, label=SIM_LABEL, zorder=3)
        ax.plot(report.best.positions, report.best.values[tap]["var"], "-", color="tab:blue", label=BEST_LABEL)
        ax.plot(report.leading.positions, report.leading.values[tap]["var"], "--", color="tab:red", label=LEADING_LABEL)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("variance of one coordinate")
        ax.set_title(_short(tap))
        ax.legend(fontsize=8)
        # Ratios at the simulated positions.
        sim_var = np.asarray(stats.var, dtype=float)
        ratio.fill_between(m, 1 - 2 * stats.var_se / sim_var, 1 + 2 * stats.var_se / sim_var, color="0.85",
                           label=SIM_LABEL)
        for table, style, color, label in ((report.best, "-o", "tab:blue", BEST_LABEL),
                                           (report.leading, "--s", "tab:red", LEADING_LABEL)):
            values = np.array([table.value(tap, "var", int(p)) for p in stats.positions])
            ratio.plot(m, values / sim_var, style, ms=3, color=color, label=label)
        ratio.axhline(1.0, color="black", lw=0.8)
        ratio.set_xscale("log")
        ratio.set_xlabel("query position m")
        ratio.set_ylabel("theory / simulation")
    fig.suptitle(f"Variance against position ({report.samples} networks, annealed)", fontsize=10)
    return fig


def sum_sq_figure(report) -> Figure:
    """``m E[sum_n a_mn^2]`` against m: 1 under uniform attention."""
    fig = Figure(figsize=(5.0, 3.8), layout="constrained")
    ax = fig.subplots()
    if PATTERN in report.simulation:
        stats = report.simulation[PATTERN]
        m = np.asarray(stats.positions, dtype=float)
        ax.errorbar(m, m * stats.sum_sq, yerr=2 * m * stats.sum_sq_se, fmt="o", ms=3.5, color="black", capsize=2,
                    label=SIM_LABEL, zorder=3)
        for table, style, color, label in ((report.best, "-", "tab:blue", BEST_LABEL),
                                           (report.leading, "--", "tab:red", LEADING_LABEL)):
            mt = np.asarray(table.positions, dtype=float)
            ax.plot(mt, mt * table.values[PATTERN]["sum_sq"], style, color=color, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("query position m")
    ax.set_ylabel(r"$m\,\mathbb{E}[\sum_n a_{mn}^2]$")
    ax.set_title(f"Effective attention spread (logit variance {report.logit_variance:.3g})")
    ax.legend(fontsize=8)
    return fig


def zscore_figure(report) -> Figure:
    """Every check's z-score against m, one series per tap; the band is Holm's first
    (strictest) and last critical values."""
    fig = Figure(figsize=(7.0, 4.0), layout="constrained")
    ax = fig.subplots()
    checks = [c for c in report.checks if np.isfinite(c.z)]
    taps = list(dict.fromkeys(c.tap for c in checks))
    markers = "osd^v<>pPXh*"
    for i, tap in enumerate(taps):
        mine = [c for c in checks if c.tap == tap]
        ax.scatter([c.position for c in mine], [c.z for c in mine], s=14, marker=markers[i % len(markers)],
                   label=_short(tap))
    failed = [c for c in checks if not c.passed]
    if failed:
        ax.scatter([c.position for c in failed], [c.z for c in failed], s=80, facecolors="none", edgecolors="red",
                   linewidths=1.5, label="failed")
    crit = [c.critical_z for c in checks if np.isfinite(c.critical_z)]
    if crit:
        for value, style in ((max(crit), ":"), (min(crit), "--")):
            ax.axhline(value, color="gray", ls=style, lw=1)
            ax.axhline(-value, color="gray", ls=style, lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("query position m")
    ax.set_ylabel("z = (theory - sim) / SE")
    ax.set_title(f"z-scores of {len(checks)} checks (Holm, alpha = {report.alpha:g})")
    ax.legend(fontsize=7, ncol=2, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return fig


def distribution_figure(report) -> Figure:
    """Per law tap at the last position: a histogram of the reservoir (one coordinate per
    network) with the exact density of `theory.law` and the Gaussian of the same variance,
    and below it a QQ plot of the draws against the law's quantiles."""
    from ._distributions import _grid, law_quantiles

    checks = list(report.distributions)
    cols = max(1, len(checks))
    fig = Figure(figsize=(3.2 * cols, 6.0), layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    for j, check in enumerate(checks):
        ax, qq = axes[0, j], axes[1, j]
        stats = report.simulation[check.tap]
        column = np.asarray(stats.reservoir[:, stats.index(check.position)], dtype=float)
        column = column[np.isfinite(column)]
        law = report.laws[check.tap]
        ax.hist(column, bins=40, density=True, color="0.75", label=f"simulation ({check.n} networks)")
        x = _grid(law, column)
        ax.plot(x, law.pdf(x), "-", color="tab:blue", label="theory (exact law)")
        sd = math.sqrt(float(law.var()))
        ax.plot(x, np.exp(-0.5 * (x / sd) ** 2) / (sd * math.sqrt(2 * math.pi)), "--", color="tab:orange",
                label="Gaussian (paper)")
        ax.set_title(f"{_short(check.tap)}, m = {check.position}", fontsize=9)
        ax.set_xlabel("value of one coordinate")
        ax.set_ylabel("density")
        ax.text(0.02, 0.97, f"KS p = {check.p_value:.3g}" + ("" if check.passed else " FAIL"), transform=ax.transAxes,
                va="top", fontsize=8, color="black" if check.passed else "red")
        ax.legend(fontsize=6, loc="upper right")
        ordered = np.sort(column)
        probabilities = (np.arange(1, ordered.size + 1) - 0.5) / ordered.size
        expected = law_quantiles(law, probabilities, ordered)
        qq.plot(expected, ordered, ".", ms=2, color="tab:blue", label="simulation vs exact law")
        lims = [float(min(expected.min(), ordered.min())), float(max(expected.max(), ordered.max()))]
        qq.plot(lims, lims, "-", color="0.4", lw=0.8, label="y = x")
        qq.set_xlabel("quantile of the exact law")
        qq.set_ylabel("simulated quantile")
        qq.set_title("QQ plot", fontsize=9)
        qq.legend(fontsize=6, loc="upper left")
    fig.suptitle("One-coordinate laws against simulation", fontsize=10)
    return fig


FIGURES = {"variance": variance_figure, "sum_sq": sum_sq_figure, "zscores": zscore_figure,
           "distributions": distribution_figure}


def save_figures(report, out: Path) -> dict[str, list[str]]:
    """Write every figure as ``NAME.png`` and ``NAME.pdf`` under ``out``."""
    written = {}
    for name, make in FIGURES.items():
        if name == "distributions" and not report.distributions:
            continue
        fig = make(report)
        paths = []
        for ext in ("png", "pdf"):
            path = Path(out) / f"{name}.{ext}"
            fig.savefig(path, dpi=150 if ext == "png" else None)
            paths.append(path.name)
        written[name] = paths
    return written
