"""The figures of a sweep (matplotlib `Figure` objects, no pyplot state).

- `heat_map`: the relative error ``|theory/sim - 1|`` of one tap over two axes, one panel
  per level (best, leading), on a log colour scale from 0.01% to 100%, with contours at
  1%, 5% and 20%, the cells where the difference is within statistical noise hatched
  (every |z| at the cell's positions below the Bonferroni critical value at 5%), points
  that are invalid, failed or not yet run in grey, and the paper's configuration (GPT-2
  init: `verify.sweep.grid.PAPER_SPEC`) marked with a star -- or, when it lies off the
  map, named in the corner;
- `boundary_figure`: the validity boundary of the paper's 1/m picture along one axis: the
  largest query position m up to which the leading order stays within 1%, 5% and 20% of
  the best theory (lines) and of the simulation (markers; hollow where the crossing is
  within noise), with the paper's value of the axis marked.

Both take plain arrays (`verify.sweep.regimes` reads them from the store).
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

CONTOURS = (0.01, 0.05, 0.20)
COLOR_RANGE = (1e-4, 1.0)  # |relative error| 0.01% .. 100%
LEVEL_TITLES = {"best": "best level", "leading": "leading order (the paper)"}


def _numeric(values) -> bool:
    return all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
               for v in values)


def is_log(values) -> bool:
    """Whether an axis reads best on a log scale: positive numbers spanning a factor >= 8."""
    if not _numeric(values) or len(values) < 2:
        return False
    v = np.asarray(values, float)
    return bool(np.all(v > 0) and v.max() / v.min() >= 8)


def axis_coords(values) -> tuple[np.ndarray, np.ndarray, str]:
    """(centres, edges, scale) of an axis: numeric axes at their values (edges halfway, in
    log for a log axis), other axes at 0, 1, 2, ... with the values as tick labels."""
    if not _numeric(values):
        c = np.arange(len(values), dtype=float)
        return c, np.arange(len(values) + 1, dtype=float) - 0.5, "index"
    c = np.asarray(values, float)
    if len(c) == 1:
        return c, np.array([c[0] * 0.8, c[0] * 1.25]) if c[0] > 0 else np.array([c[0] - 0.5, c[0] + 0.5]), "linear"
    if is_log(values):
        lc = np.log(c)
        mid = (lc[1:] + lc[:-1]) / 2
        edges = np.exp(np.concatenate([[lc[0] - (mid[0] - lc[0])], mid, [lc[-1] + (lc[-1] - mid[-1])]]))
        return c, edges, "log"
    mid = (c[1:] + c[:-1]) / 2
    return c, np.concatenate([[c[0] - (mid[0] - c[0])], mid, [c[-1] + (c[-1] - mid[-1])]]), "linear"


def _paper_position(value, values, centres, edges, scale):
    """Where the paper's value sits on an axis (None when off the map)."""
    if value is None:
        return None
    if scale == "index":
        hits = [i for i, v in enumerate(values) if v == value]
        return float(hits[0]) if hits else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if edges[0] <= value <= edges[-1] else None


def _set_axis(ax, which: str, name: str, values, centres, edges, scale) -> None:
    set_scale, set_lim, set_ticks, set_label = (
        (ax.set_xscale, ax.set_xlim, ax.set_xticks, ax.set_xlabel) if which == "x"
        else (ax.set_yscale, ax.set_ylim, ax.set_yticks, ax.set_ylabel))
    if scale == "log":
        set_scale("log")
    set_lim(edges[0], edges[-1])
    if scale == "index" or len(values) <= 8:
        set_ticks(centres, [f"{v:.3g}" if _numeric([v]) else str(v) for v in values])
    set_label(name)


def heat_map(title: str, x: tuple[str, list], y: tuple[str, list], errors: dict, noise: dict, missing: np.ndarray,
             paper: dict, note: str = "") -> Figure:
    """One tap's map: ``errors[level]`` and ``noise[level]`` are (len(y), len(x)) arrays of
    |relative error| and of "within noise" flags; ``missing`` flags cells without a result;
    ``paper`` the paper's value of each axis."""
    (xn, xv), (yn, yv) = x, y
    xc, xe, xs = axis_coords(xv)
    yc, ye, ys = axis_coords(yv)
    levels = list(errors)
    fig = Figure(figsize=(5.2 * len(levels) + 0.8, 4.4), layout="constrained")
    axes = fig.subplots(1, len(levels), squeeze=False)[0]
    norm = LogNorm(*COLOR_RANGE)
    mesh = None
    for ax, level in zip(axes, levels):
        e = np.asarray(errors[level], float)
        shown = np.clip(np.where(np.isfinite(e), e, np.nan), COLOR_RANGE[0], COLOR_RANGE[1])
        mesh = ax.pcolormesh(xe, ye, np.ma.masked_invalid(shown), norm=norm, cmap="viridis", shading="flat")
        for i in range(len(yv)):
            for j in range(len(xv)):
                if missing[i, j]:
                    ax.add_patch(Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], facecolor="0.85",
                                           edgecolor="0.6", hatch="xx", linewidth=0.0))
                elif noise[level][i, j]:  # white lines on the dark end of viridis, black on the bright end
                    ink = "white" if not np.isfinite(e[i, j]) or e[i, j] < 0.03 else "black"
                    ax.add_patch(Rectangle((xe[j], ye[i]), xe[j + 1] - xe[j], ye[i + 1] - ye[i], fill=False,
                                           edgecolor=ink, hatch="///", linewidth=0.0))
        finite = np.isfinite(e)
        if len(xv) >= 2 and len(yv) >= 2 and finite.sum() >= 4 and np.nanmax(e) > min(CONTOURS) * 0.999 \
                and np.nanmin(e) < max(CONTOURS):
            cs = ax.contour(xc, yc, np.where(finite, e, np.nanmax(e[finite]) if finite.any() else 1.0),
                            levels=list(CONTOURS), colors=["white", "orange", "red"], linewidths=1.4)
            ax.clabel(cs, fmt={c: f"{100 * c:g}%" for c in CONTOURS}, fontsize=8)
        _set_axis(ax, "x", xn, xv, xc, xe, xs)
        _set_axis(ax, "y", yn, yv, yc, ye, ys)
        px = _paper_position(paper.get(xn), xv, xc, xe, xs)
        py = _paper_position(paper.get(yn), yv, yc, ye, ys)
        if px is not None and py is not None:
            ax.plot([px], [py], marker="*", markersize=15, color="red", markeredgecolor="white", linestyle="none",
                    label="paper (GPT-2 init)")
            ax.legend(loc="upper right", fontsize=7, framealpha=0.8)
        else:
            ax.text(0.02, 0.02, f"paper (GPT-2 init): {xn} = {paper.get(xn)}, {yn} = {paper.get(yn)}: off this map",
                    transform=ax.transAxes, fontsize=7, color="black",
                    bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0})
        ax.set_title(LEVEL_TITLES.get(level, level), fontsize=10)
    cbar = fig.colorbar(mesh, ax=list(axes), shrink=0.9)
    cbar.set_label("|theory / sim - 1|")
    cbar.set_ticks([1e-4, 1e-3, 1e-2, 5e-2, 0.2, 1.0], labels=["0.01%", "0.1%", "1%", "5%", "20%", "100%"])
    fig.suptitle(title + (f"\n{note}" if note else ""), fontsize=10)
    return fig


def crossing(positions: np.ndarray, ratio: np.ndarray, tol: float) -> tuple[float, str]:
    """The largest m up to which ``|ratio| <= tol``, interpolated in log m between the
    positions around the first crossing; ``(m, "")``, ``(max position, ">=")`` when it never
    crosses, ``(1, "<=")`` when it is beyond at the first position, NaN without numbers."""
    ok = np.isfinite(ratio)
    m, r = np.asarray(positions, float)[ok], np.abs(np.asarray(ratio, float)[ok])
    if m.size == 0:
        return math.nan, ""
    above = np.flatnonzero(r > tol)
    if above.size == 0:
        return float(m[-1]), ">="
    k = int(above[0])
    if k == 0:
        return float(m[0]), "<="
    lo, hi = math.log(m[k - 1]), math.log(m[k])
    f = (tol - r[k - 1]) / (r[k] - r[k - 1]) if r[k] != r[k - 1] else 0.0
    return float(math.exp(lo + f * (hi - lo))), ""


def boundary_figure(title: str, axis: tuple[str, list], theory: dict, sim: dict, paper_value, note: str = "") -> Figure:
    """``theory[tol]`` / ``sim[tol]``: lists over the axis of ``(m, flag)`` from `crossing`
    (``sim`` entries may carry a third item, True where the crossing is within noise)."""
    name, values = axis
    xc, xe, xs = axis_coords(values)
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.subplots()
    colors = dict(zip(CONTOURS, ("tab:green", "tab:orange", "tab:red")))
    for tol in CONTOURS:
        mt = np.array([m for m, _ in theory[tol]], float)
        ax.plot(xc, mt, color=colors[tol], linestyle="-", label=f"within {100 * tol:g}%: theory (best level)")
        for j, item in enumerate(sim[tol]):
            m, flag, noisy = item if len(item) == 3 else (*item, False)
            if not math.isfinite(m):
                continue
            marker = {">=": "^", "<=": "v"}.get(flag, "o")
            ax.plot([xc[j]], [m], marker=marker, color=colors[tol], linestyle="none", markersize=7,
                    markerfacecolor="none" if noisy else colors[tol],
                    label=f"within {100 * tol:g}%: simulation" if j == 0 else None)
    if paper_value is not None and not isinstance(paper_value, bool) and _numeric([paper_value]) \
            and xe[0] <= paper_value <= xe[-1]:
        ax.axvline(paper_value, color="black", linestyle=":", linewidth=1, label="paper (GPT-2 init)")
    elif paper_value is not None:
        ax.text(0.02, 0.02, f"paper (GPT-2 init): {name} = {paper_value}: off this axis", transform=ax.transAxes,
                fontsize=7)
    _set_axis(ax, "x", name, values, xc, xe, xs)
    ax.set_yscale("log")
    found = [m for tol in CONTOURS for m, *_ in list(theory[tol]) + list(sim[tol]) if math.isfinite(m)]
    ax.set_ylim(0.8, 1.25 * max(found, default=10.0))
    ax.set_ylabel("m up to which the leading order holds")
    ax.legend(fontsize=7, loc="best")
    ax.set_title(title + (f"\n{note}" if note else ""), fontsize=9)
    return fig


__all__ = ["heat_map", "boundary_figure", "crossing", "axis_coords", "is_log", "CONTOURS"]
