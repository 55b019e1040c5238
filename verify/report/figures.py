"""Figures of a report (matplotlib objects, no pyplot state; saved as PNG and PDF).

- `variance_figure`: Var against query position m on log-log axes for hook_z,
  hook_attn_out and the residual after attention: Monte Carlo means with 2-SE error bars,
  the best theory and the paper's leading order;
- `sum_sq_figure`: ``m E[sum_n a_mn^2]`` against m (1 for uniform attention, the paper);
- `zscore_figure`: the z-score of every check against m, one series per tap, with Holm's
  critical band;
- `distribution_figure`: histograms of one coordinate (reservoir draws) against the
  exact law of `theory.law`, per tap, with the KS p-value;
- `depth_error_figure` (specs with more than one layer or an MLP): the relative error
  ``theory/sim - 1`` against the layer for the main taps at a few positions, with 2-SE
  bars, the declared tolerance and the paper's leading order;
- `depth_variance_figure` (same specs): Var of the block's output (``hook_resid_post``)
  against m on log-log axes for every layer, theory lines over simulated points with 2-SE
  bars, and theory / simulation below.

`save_figure` is the one way a report saves a figure (PNG and PDF, each written
atomically); `save_figures` saves a report's.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, MaxNLocator
from scipy.special import ndtr

from theory._outputs import atomic_savefig
from theory.block import block
from theory.figure_style import ONE_COLUMN, ROLE_COLOURS, TWO_COLUMNS, colour, marker, styled
from theory.figure_style import style as figure_style

from ..checks.depth import MAIN_TAPS
from ..checks.mutants import attention_residual
from ..checks.theory import needs_depth
from .text import short

PATTERN = "blocks.0.attn.hook_pattern"

SIM, BEST, LEADING = ROLE_COLOURS["simulation"], ROLE_COLOURS["best"], ROLE_COLOURS["leading"]
SIM_LABEL = "simulation (± 2 SE)"
BEST_LABEL = "theory, best"
LEADING_LABEL = "theory, leading (paper)"


def save_figure(fig, out: str | Path, name: str, formats=("png", "pdf"), dpi: int = 150) -> list[str]:
    """Write ``fig`` as ``out/NAME.EXT`` for each format, each file atomically (a killed
    run leaves the old file or the new one, never half a figure); PNG at ``dpi``, vector
    formats at matplotlib's default. Returns the file names, in ``formats`` order."""
    names = []
    with figure_style():  # savefig reads the style's bbox and font settings
        for ext in formats:
            path = Path(out) / f"{name}.{ext}"
            atomic_savefig(fig, path, dpi=dpi if ext == "png" else None)
            names.append(path.name)
    return names


def variance_taps(report) -> tuple[str, ...]:
    """The first-layer taps of the variance figure: hook_z, W_o z and the residual after attention."""
    return ("blocks.0.attn.hook_z", "blocks.0.hook_attn_out", attention_residual(report.spec))


@styled
def variance_figure(report) -> Figure:
    """Var of one coordinate against m (log-log) for the three attention outputs (top
    row), and each theory divided by the simulation (bottom row: deviations of a few
    percent are invisible on the log-log panels)."""
    taps = [t for t in variance_taps(report) if t in report.simulation]
    cols = max(len(taps), 1)
    fig = Figure(figsize=(TWO_COLUMNS if cols > 1 else ONE_COLUMN, 4.2), layout="constrained")
    grid = fig.subplots(2, cols, squeeze=False, sharex="col", gridspec_kw={"height_ratios": [2.2, 1]})
    for j, tap in enumerate(taps):
        ax, ratio = grid[0][j], grid[1][j]
        stats = report.simulation[tap]
        m = np.asarray(stats.positions, dtype=float)
        ax.errorbar(m, stats.var, yerr=2 * stats.var_se, fmt="o", ms=3.5, color=SIM, capsize=2, label=SIM_LABEL, zorder=3)
        ax.plot(report.best.positions, report.best[tap].values["var"], "-", color=BEST, label=BEST_LABEL)
        ax.plot(report.leading.positions, report.leading[tap].values["var"], "--", color=LEADING, label=LEADING_LABEL)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_ylabel("variance of one coordinate")
        ax.set_title(short(tap))
        if j == 0:
            ax.legend()
        # Ratios at the simulated positions.
        sim_var = np.asarray(stats.var, dtype=float)
        ratio.fill_between(m, 1 - 2 * stats.var_se / sim_var, 1 + 2 * stats.var_se / sim_var, color="0.85",
                           label=SIM_LABEL)
        for table, style, color, label in ((report.best, "-o", BEST, BEST_LABEL),
                                           (report.leading, "--s", LEADING, LEADING_LABEL)):
            values = np.array([table.value(tap, "var", int(p)) for p in stats.positions])
            ratio.plot(m, values / sim_var, style, ms=3, color=color, label=label)
        ratio.axhline(1.0, color="black", lw=0.8)
        ratio.set_xscale("log")
        ratio.set_xlabel("query position m")
        ratio.set_ylabel("theory / simulation")
    fig.suptitle(f"Variance against position ({report.samples} networks, annealed)")
    return fig


@styled
def sum_sq_figure(report) -> Figure:
    """``m E[sum_n a_mn^2]`` against m: 1 under uniform attention."""
    fig = Figure(figsize=(ONE_COLUMN, 0.8 * ONE_COLUMN), layout="constrained")
    ax = fig.subplots()
    if PATTERN in report.simulation:
        stats = report.simulation[PATTERN]
        m = np.asarray(stats.positions, dtype=float)
        ax.errorbar(m, m * stats.sum_sq, yerr=2 * m * stats.sum_sq_se, fmt="o", ms=3.5, color="black", capsize=2,
                    label=SIM_LABEL, zorder=3)
        for table, style, color, label in ((report.best, "-", BEST, BEST_LABEL),
                                           (report.leading, "--", LEADING, LEADING_LABEL)):
            mt = np.asarray(table.positions, dtype=float)
            ax.plot(mt, mt * table[PATTERN].values["sum_sq"], style, color=color, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("query position m")
    ax.set_ylabel(r"$m\,\mathbb{E}[\sum_n a_{mn}^2]$")
    ax.set_title(f"Attention spread (logit variance {report.logit_variance:.3g})")
    ax.legend()
    return fig


def _depth_positions(positions) -> list[int]:
    """Three recorded positions for the depth figure: 1, the middle (log scale) and T."""
    pos = sorted(int(p) for p in positions)
    mid = min(pos, key=lambda p: abs(math.log(p) - 0.5 * math.log(pos[-1])))
    return sorted({pos[0], mid, pos[-1]})


@styled
def depth_error_figure(report) -> Figure:
    """Relative error ``theory/sim - 1`` (%) against the layer, one panel per main tap
    (`MAIN_TAPS` the run has): the best theory at three positions (m = 1, the middle, T) with
    2-SE bars, the largest |error| over all positions (gray), the declared tolerance
    (shaded) and the paper's leading order at m = T (hollow)."""
    layers = report.layers
    kinds = [k for k in MAIN_TAPS if any(f"blocks.{l}.{k}" in report.simulation for l in range(layers))]
    fig = Figure(figsize=(TWO_COLUMNS, 3.0), layout="constrained")
    axes = fig.subplots(1, max(len(kinds), 1), squeeze=False, sharey=True)[0]  # one scale: panels are compared
    show = _depth_positions(report.positions)
    by_key = {(c.tap, c.position): c for c in report.checks if c.quantity == "var"}
    leading = {(r.tap, r.position): r for r in report.leading_rows if r.quantity == "var"}
    colors = (BEST, colour(3), colour(4))
    for ax, kind in zip(axes, kinds):
        x_all = np.arange(layers)
        tol = [report.checks.for_tap(f"blocks.{l}.{kind}")[0].rel_tol if report.checks.for_tap(f"blocks.{l}.{kind}")
               else np.nan for l in x_all]
        ax.fill_between(x_all, -100 * np.asarray(tol), 100 * np.asarray(tol), step="mid", color="0.9",
                        label="declared tolerance")
        for j, m in enumerate(show):
            xs, ys, es = [], [], []
            for l in x_all:
                c = by_key.get((f"blocks.{l}.{kind}", m))
                if c is None or not c.sim:
                    continue
                xs.append(l + (j - 1) * 0.08)
                ys.append(100 * (c.theory - c.sim) / c.sim)
                es.append(200 * c.se / abs(c.sim) if np.isfinite(c.se) else 0.0)
            ax.errorbar(np.asarray(xs, float), np.asarray(ys, float), yerr=np.asarray(es, float), fmt="o-", ms=4,
                        capsize=2, color=colors[j % 3], label=f"best, m = {m}")
        worst = []
        for l in x_all:
            rel = [abs(c.theory - c.sim) / abs(c.sim) for (t, _), c in by_key.items() if t == f"blocks.{l}.{kind}" and c.sim]
            worst.append(100 * max(rel) if rel else np.nan)
        ax.plot(x_all, worst, ":", color="0.4", label="best, max |error| over m")
        lx, ly = [], []
        for l in x_all:
            r = leading.get((f"blocks.{l}.{kind}", show[-1]))
            if r is not None and np.isfinite(r.rel_error):
                lx.append(l)
                ly.append(100 * r.rel_error)
        ax.plot(lx, ly, "s--", mfc="none", color=LEADING, ms=5, label=f"leading (paper), m = {show[-1]}")
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(x_all)
        ax.set_xlabel("layer")
        ax.set_title(kind)
        finite = [abs(v) for v in ly if np.isfinite(v)]
        if finite and max(finite) > 15:  # keep the best level readable: clip the leading order, print its value
            ax.set_ylim(-10, 10)
            for x, y in zip(lx, ly):
                if abs(y) > 10:
                    ax.annotate(f"{y:+.0f}%", (x, 9.0 if y > 0 else -9.0), color=LEADING, fontsize=7, ha="center")
    if len(axes):
        axes[0].set_ylabel("theory / simulation - 1 (%)")
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncol=3)
    fig.suptitle(f"Relative error through depth ({report.samples} networks; bars: 2 SE)")
    return fig


def depth_variance_tap(report) -> str:
    """The block's output tap (``hook_resid_post``), by the block declaration."""
    return block(report.spec).output_tap


@styled
def depth_variance_figure(report) -> Figure:
    """Var of one coordinate of the residual leaving each block against m (log-log):
    simulation (points, 2-SE bars) with the best theory (line) and the leading order
    (dashed) per layer; below, theory / simulation with the 2-SE band of each layer."""
    kind = depth_variance_tap(report)
    fig = Figure(figsize=(TWO_COLUMNS, 4.6), layout="constrained")
    ax, ratio = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1]})
    cmap = matplotlib.colormaps["viridis"]
    layers = report.layers
    for l in range(layers):
        tap = f"blocks.{l}.{kind}"
        if tap not in report.simulation:
            continue
        color = cmap(l / max(layers - 1, 1) * 0.9)
        stats = report.simulation[tap]
        m = np.asarray(stats.positions, dtype=float)
        sim_var = np.asarray(stats.var, dtype=float)
        ax.errorbar(m, sim_var, yerr=2 * stats.var_se, fmt="o", ms=3.5, capsize=2, color=color, zorder=3,
                    label=f"layer {l}: simulation" if l == 0 else f"layer {l}")
        ax.plot(report.best.positions, report.best[tap].values["var"], "-", color=color,
                label=BEST_LABEL if l == 0 else None)
        ax.plot(report.leading.positions, report.leading[tap].values["var"], "--", lw=0.8, color=color,
                label=LEADING_LABEL if l == 0 else None)
        values = np.array([report.best.value(tap, "var", int(p)) for p in stats.positions])
        ratio.fill_between(m, 1 - 2 * stats.var_se / sim_var, 1 + 2 * stats.var_se / sim_var, color=color, alpha=0.15)
        ratio.plot(m, values / sim_var, "-o", ms=3, color=color)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylabel(f"Var of one coordinate of {kind}")
    ax.set_title(f"{kind} against position, every layer ({report.samples} networks, annealed)")
    ax.legend(ncol=2)
    ratio.axhline(1.0, color="black", lw=0.8)
    ratio.set_xscale("log")
    ratio.set_xlabel("query position m")
    ratio.set_ylabel("best theory / simulation")
    return fig


@styled
def zscore_figure(report) -> Figure:
    """The statistic each check was judged by, against m, one series per tap kind: for exact
    results the z-score, for approximate ones the excess over the declared tolerance in
    standard errors (`Check.judged_z`: 0 inside the tolerance), so a passing point is never
    drawn beyond the critical lines. The lines are Holm's strictest and loosest critical
    values; failed checks are circled."""
    fig = Figure(figsize=(TWO_COLUMNS, 3.2), layout="constrained")
    ax = fig.subplots()
    checks = [c for c in report.checks if np.isfinite(c.judged_z)]
    # One series per tap kind; with several layers the layers of a kind share a series.
    kinds = list(dict.fromkeys(short(c.tap) for c in checks))
    for i, kind in enumerate(kinds):
        mine = [c for c in checks if short(c.tap) == kind]
        ax.scatter([c.position for c in mine], [c.judged_z for c in mine], s=12, marker=marker(i),
                   color=colour(1 + i % 7), label=kind, linewidths=0.5)
    failed = [c for c in checks if not c.passed]
    if failed:
        ax.scatter([c.position for c in failed], [c.judged_z for c in failed], s=70, facecolors="none",
                   edgecolors=LEADING, linewidths=1.2, label=f"failed ({len(failed)})")
    crit = [c.critical_z for c in checks if np.isfinite(c.critical_z)]
    if crit:
        for value, ls, name in ((max(crit), "--", "Holm critical |z|, strictest"),
                                (min(crit), ":", "Holm critical |z|, loosest")):
            ax.axhline(value, color="0.4", ls=ls, lw=0.9, label=f"{name} ({value:.2f})")
            ax.axhline(-value, color="0.4", ls=ls, lw=0.9)
    ax.axhline(0.0, color="0.7", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("query position m")
    ax.set_ylabel("judged z (excess over tolerance / SE)")
    layers = getattr(report, "layers", 1)
    ax.set_title(f"{len(checks)} checks, Holm alpha = {report.alpha:g}"
                 + ("; layers pooled per tap" if layers > 1 else ""))
    ax.legend(ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


@styled
def distribution_figure(report) -> Figure:
    """Per law tap at the last position: a histogram of the reservoir (one coordinate per
    network) with the exact density of `theory.law` and the Gaussian of the same variance;
    below it the CDF differences from the exact law, where the paper's Gaussian and the
    exact law can be told apart: the simulation's empirical CDF minus the law's (with the
    KS 95% band ``1.36/sqrt(n)``) and the Gaussian's minus the law's."""
    checks = list(report.distributions)
    cols = min(3, max(1, len(checks)))          # at most three panels across: readable at print size
    blocks = -(-max(1, len(checks)) // cols)     # each block: a density row above a CDF-difference row
    fig = Figure(figsize=(TWO_COLUMNS if cols > 1 else ONE_COLUMN, 3.0 * blocks + 0.6), layout="constrained")
    grid = fig.subplots(2 * blocks, cols, squeeze=False)
    for k in range(len(checks), blocks * cols):  # unused panels of the last block
        grid[2 * (k // cols), k % cols].set_visible(False)
        grid[2 * (k // cols) + 1, k % cols].set_visible(False)
    for j, check in enumerate(checks):
        ax, diff = grid[2 * (j // cols), j % cols], grid[2 * (j // cols) + 1, j % cols]
        stats = report.simulation[check.tap]
        column = np.asarray(stats.reservoir[:, stats.index(check.position)], dtype=float)
        column = column[np.isfinite(column)]
        law = report.laws[check.tap]
        ax.hist(column, bins=40, density=True, color="0.8", label=f"simulation ({check.n} networks)")
        x = density_grid(law, column)
        ax.plot(x, law.pdf(x), "-", color=BEST, label="theory (exact law)")
        sd = math.sqrt(float(law.var()))
        ax.plot(x, np.exp(-0.5 * (x / sd) ** 2) / (sd * math.sqrt(2 * math.pi)), "--", color=LEADING,
                label="Gaussian (paper)")
        ax.set_title(short(check.tap))
        ax.set_ylabel("density")
        ax.text(0.02, 0.97, f"KS p = {check.p_value:.3g}" + ("" if check.passed else " FAIL"), transform=ax.transAxes,
                va="top", color=SIM if check.passed else LEADING)
        ordered = np.sort(column)
        exact_cdf = np.asarray(law.cdf(ordered), dtype=float)
        empirical = (np.arange(1, ordered.size + 1) - 0.5) / max(ordered.size, 1)
        band = 1.36 / math.sqrt(max(ordered.size, 1))
        diff.fill_between(ordered, -band, band, color=ROLE_COLOURS["tolerance"], label="KS 95% band")
        diff.plot(ordered, empirical - exact_cdf, "-", color=SIM, lw=0.8, label="simulation - exact")
        diff.plot(ordered, ndtr(ordered / sd) - exact_cdf, "--", color=LEADING, label="Gaussian - exact")
        diff.axhline(0.0, color=BEST, lw=0.8)
        diff.set_ylabel("CDF difference")
        diff.set_xlim(ax.get_xlim())
        # a power of ten in the label, not as an offset text that collides with it (1e-2 under 0.02-scale values)
        span = max(abs(v) for v in ax.get_xlim())
        power = math.floor(math.log10(span)) if span > 0 and math.isfinite(span) else 0
        scaled = not -2 <= power <= 3
        diff.set_xlabel("value of one coordinate" + (f" ($\\times 10^{{{power}}}$)" if scaled else ""))
        for axis in (ax, diff):
            axis.xaxis.set_major_locator(MaxNLocator(3))   # no overlapping tick labels in narrow panels
            axis.yaxis.set_major_locator(MaxNLocator(4))
            if scaled:
                axis.xaxis.set_major_formatter(FuncFormatter(lambda v, _, k=power: f"{v / 10**k:g}"))
            else:
                axis.ticklabel_format(axis="x", style="plain", useOffset=False)
    if checks:
        handles, labels = [], []
        for axis in (grid[0, 0], grid[1, 0]):
            h, lab = axis.get_legend_handles_labels()
            handles += h
            labels += lab
        fig.legend(handles, labels, loc="outside lower center", ncol=3)
        fig.suptitle(f"One-coordinate laws against simulation, m = {checks[0].position}")
    return fig


FIGURES = {"variance": variance_figure, "sum_sq": sum_sq_figure, "zscores": zscore_figure,
           "distributions": distribution_figure, "depth_error": depth_error_figure,
           "depth_variance": depth_variance_figure}
DEPTH_FIGURES = ("depth_error", "depth_variance")


def save_figures(report, out: Path, names=None) -> dict[str, list[str]]:
    """Write every figure of ``report`` (or those in ``names``) as ``NAME.png`` and
    ``NAME.pdf`` under ``out`` (`save_figure`); the files written, by figure name."""
    written = {}
    for name, make in FIGURES.items():
        if names is not None and name not in names:
            continue
        if name == "distributions" and not report.distributions:
            continue
        if name in DEPTH_FIGURES and not needs_depth(report.spec):
            continue
        written[name] = save_figure(make(report), out, name)
    return written


# ------------------------------------------------------------------------------ plotting helpers
def density_grid(law, column: np.ndarray, points: int = 400) -> np.ndarray:
    """Where to draw the density: the central 99.8% of the draws, inside the law's support."""
    lo, hi = np.quantile(column, [0.001, 0.999])
    lo_s, hi_s = law.support()
    lo, hi = max(lo, lo_s), min(hi, hi_s)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        sd = float(np.std(column)) or 1.0
        lo, hi = -4 * sd, 4 * sd
    return np.linspace(lo, hi, points)


__all__ = ["save_figure", "save_figures", "FIGURES", "DEPTH_FIGURES", "variance_figure", "sum_sq_figure",
           "zscore_figure", "distribution_figure", "depth_error_figure", "depth_variance_figure", "variance_taps",
           "depth_variance_tap", "SIM_LABEL", "BEST_LABEL", "LEADING_LABEL"]
