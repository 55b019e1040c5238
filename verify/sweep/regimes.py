"""The maps and regime tables of a sweep store (``python -m verify sweep --report DIR``).

A tap's error at a grid point is the largest ``|theory/sim - 1|`` over its query
positions (or at one ``position``) of its main quantity (``var``; ``sum_sq`` for the
attention pattern), at each level. A point is *within noise* when every ``|z|`` of those
positions is below the two-sided Bonferroni critical value at 5% over them: theory and
simulation are not told apart at this sample size. Maps show two axes; every other axis is
held at the value ``at`` gives, else at the value nearest the paper's configuration
(`PAPER_SPEC`, GPT-2 init), else its first.

`write_maps` writes, into ``DIR/maps`` (or ``maps``): ``map_<tap>_L<layer>.png|pdf``
(`verify.sweep.maps.heat_map`), ``boundary.png|pdf`` (the validity of the paper's 1/m
picture along the x axis, for ``attn.hook_z`` of layer 0), ``regimes.md`` and
``regimes.tex`` (per tap and level over every finished point: the share within 1%, 5%
and 20%, within the declared tolerance, and the worst point).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from theory._outputs import atomic_write_text, shown

from ..checks.statistics import critical_z
from ..report.figures import save_figure
from .grid import spec_fields
from .maps import CONTOURS, boundary_figure, crossing, heat_map
from .store import STATUS, StoreError, open_dataset

NOISE_ALPHA = 0.05
MAP_TAPS_FIRST = ("attn.hook_z", "hook_attn_out", "attn.hook_pattern", "hook_resid_post")
MAP_TAPS_LAST = ("attn.hook_z", "hook_resid_post")
BOUNDARY_TAP = ("attn.hook_z", 0)


def quantity_of(tap: str) -> str:
    return "sum_sq" if tap.endswith("hook_pattern") else "var"


def _paper() -> dict:
    return spec_fields()


def _value(text: str, values: list, name: str):
    """The coordinate of an axis that ``--at NAME=text`` names."""
    for v in values:
        if isinstance(v, bool) and text.lower() in ("true", "false") and v == (text.lower() == "true"):
            return v
        if isinstance(v, str) and v == text:
            return v
    try:
        number = float(text)
    except ValueError:
        number = None
    numeric = [v for v in values if not isinstance(v, (bool, str))]
    if number is not None and numeric:
        return min(numeric, key=lambda v: abs(float(v) - number))
    raise ValueError(f"--at {name}={text}: allowed values are {', '.join(map(str, values[:12]))}")


def _nearest_paper(name: str, values: list):
    target = _paper().get(name)
    if target in values:
        return target
    numeric = [v for v in values if not isinstance(v, (bool, str))]
    if isinstance(target, (int, float)) and not isinstance(target, bool) and numeric:
        if target > 0 and all(float(v) > 0 for v in numeric):
            return min(numeric, key=lambda v: abs(math.log(float(v) / target)))
        return min(numeric, key=lambda v: abs(float(v) - target))
    return values[0]


def choose_axes(ds, x: str | None, y: str | None) -> tuple[str, str | None]:
    axes = list(ds.attrs["axes"])
    for name, given in (("--x", x), ("--y", y)):
        if given is not None and given not in axes:
            raise ValueError(f"{name} {given}: not an axis of this sweep; its axes are {', '.join(axes)}")
    wide = [a for a in axes if ds.sizes[a] > 1]
    numeric = [a for a in wide if ds[a].dtype.kind in "if"]
    order = numeric + [a for a in wide if a not in numeric] + [a for a in axes if a not in wide]
    if x is not None and x == y:
        raise ValueError(f"--x and --y are both {x}; give two different axes")
    x = x or order[0]
    rest = [a for a in order if a != x]
    y = y if y is not None else (rest[0] if rest and ds.sizes[rest[0]] > 1 else None)
    return x, y


def slice_of(ds, keep: tuple[str, ...], at: dict) -> dict:
    """The value every axis outside ``keep`` is held at."""
    axes = list(ds.attrs["axes"])
    for name in at:
        if name not in axes:
            raise ValueError(f"--at {name}: not an axis of this sweep; its axes are {', '.join(axes)}")
        if name in keep:
            raise ValueError(f"--at {name}: {name} is an axis of the maps (--x/--y); hold another axis")
    out = {}
    for a in axes:
        if a in keep:
            continue
        values = [v.item() if hasattr(v, "item") else v for v in ds[a].values]
        out[a] = _value(at[a], values, a) if a in at else _nearest_paper(a, values)
    return out


def _tap_arrays(ds, tap: str, layer: int, position: int | None):
    """(error, noise) per level over the grid for one tap: DataArrays over the axes."""
    q = quantity_of(tap)
    sel = dict(tap=tap, layer=layer, quantity=q)
    rel, z = ds["rel_error"].sel(sel), ds["z"].sel(sel)
    if position is not None:
        m = int(ds["position"].sel(position=position, method="nearest"))
        return abs(rel.sel(position=m)), abs(z.sel(position=m)) <= critical_z(NOISE_ALPHA, 1)
    count = rel.notnull().sum("position")
    err = abs(rel).max("position", skipna=True)
    zmax = abs(z).max("position", skipna=True)
    limit = np.vectorize(lambda n: critical_z(NOISE_ALPHA, int(n)) if n > 0 else np.inf)(count.values)
    return err, (zmax <= limit) & (count > 0)


def available_taps(ds) -> list[tuple[str, int]]:
    have = ds["sim"].notnull().any([d for d in ds["sim"].dims if d not in ("tap", "layer")]).compute()
    return [(str(t), int(l)) for t in ds["tap"].values for l in ds["layer"].values
            if bool(have.sel(tap=t, layer=l))]


def default_taps(ds) -> list[tuple[str, int]]:
    have = available_taps(ds)
    last = max((l for _, l in have), default=0)
    wanted = [(t, 0) for t in MAP_TAPS_FIRST] + ([(t, last) for t in MAP_TAPS_LAST] if last > 0 else [])
    return [t for t in dict.fromkeys(wanted) if t in have]


def parse_taps(items: list[str], ds) -> list[tuple[str, int]]:
    have = available_taps(ds)
    out = []
    for item in items:
        tap, _, layer = item.partition("@")
        try:
            key = (tap, int(layer or 0))
        except ValueError:
            raise ValueError(f"--taps {item}: write TAP@LAYER, e.g. attn.hook_z@0") from None
        if key not in have:
            raise ValueError(f"--taps {item}: not in the store; it has "
                             + ", ".join(f"{t}@{l}" for t, l in have[:12]))
        out.append(key)
    return out


def _slice_note(fixed: dict) -> str:
    return ("held at " + ", ".join(f"{k} = {v}" for k, v in fixed.items())) if fixed else ""


def _file_name(tap: str, layer: int) -> str:
    return f"map_{tap.replace('.', '_')}_L{layer}"


def regime_rows(ds, taps: list[tuple[str, int]]) -> list[dict]:
    """Per tap and level, over every finished point: counts within 1%, 5%, 20%, within the
    declared tolerance (best level) and the worst point."""
    done = (ds["status"] == STATUS["done"]).compute()
    n_done = int(done.sum())
    axes = list(ds.attrs["axes"])
    rows = []
    for tap, layer in taps:
        err, noise = _tap_arrays(ds, tap, layer, None)
        wt = ds["within_tolerance"].sel(tap=tap, layer=layer).min(["quantity", "position"], skipna=True)
        for level in ("best", "leading"):
            e = err.sel(level=level).where(done).compute()
            values = e.values[np.isfinite(e.values)]
            row = {"tap": tap, "layer": layer, "level": level, "points": int(values.size)}
            for tol in CONTOURS:
                row[f"within_{tol:g}"] = int(np.sum(values <= tol))
            row["within_noise"] = int(noise.sel(level=level).where(done, False).sum())
            row["within_tolerance"] = int((wt.where(done) == 1).sum()) if level == "best" else None
            if values.size:
                flat = np.nanargmax(np.where(np.isfinite(e.values), e.values, -1))
                idx = np.unravel_index(flat, e.shape)
                row["worst"] = float(e.values[idx])
                row["worst_at"] = {a: _plain(ds[a].values[i]) for a, i in zip(axes, idx)}
            else:
                row["worst"], row["worst_at"] = math.nan, {}
            rows.append(row)
    del n_done
    return rows


def _plain(v):
    return v.item() if hasattr(v, "item") else v


def _pct(n: int, total: int) -> str:
    return f"{n} ({100 * n / total:.0f}%)" if total else "0"


def markdown(ds, rows: list[dict], figures: list[str], fixed: dict, x: str, y: str | None) -> str:
    status = ds["status"].values
    counts = {name: int(np.sum(status == code)) for name, code in STATUS.items()}
    s = ds.attrs["settings"]
    lines = ["# Regime map", "",
             f"Axes: {', '.join(f'`{a}` ({ds.sizes[a]})' for a in ds.attrs['axes'])}; base spec "
             f"`{s['base']}`; {s['samples']} networks per point, seed {s['seed']}, alpha {s['alpha']}.", "",
             "Points: " + ", ".join(f"{v} {k}" for k, v in counts.items()) + ".", "",
             "A tap's error at a point is its largest |theory/sim - 1| over the query positions (var; sum_sq for "
             "the pattern); *noise* counts points where every |z| is below the Bonferroni critical value at 5%.",
             "", "| tap | layer | level | points | <= 1% | <= 5% | <= 20% | within noise | within declared "
             "tolerance | worst | at |", "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        n = r["points"]
        lines.append(f"| `{r['tap']}` | {r['layer']} | {r['level']} | {n} | {_pct(r['within_0.01'], n)} | "
                     f"{_pct(r['within_0.05'], n)} | {_pct(r['within_0.2'], n)} | {_pct(r['within_noise'], n)} | "
                     f"{'' if r['within_tolerance'] is None else _pct(r['within_tolerance'], n)} | "
                     f"{100 * r['worst']:.2f}% | {', '.join(f'{k}={v:g}' if isinstance(v, float) else f'{k}={v}' for k, v in r['worst_at'].items())} |")
    lines += ["", f"Maps over `{x}`" + (f" and `{y}`" if y else "") + (f", {_slice_note(fixed)}" if fixed else "")
              + "; the paper's configuration (GPT-2 init) is starred where it lies on the map.", ""]
    lines += [f"![{f}]({f})" for f in figures if f.endswith(".png")]
    reasons: dict[str, int] = {}
    for code, text in zip(status.ravel(), ds["error"].values.ravel()):
        if code in (STATUS["invalid"], STATUS["failed"]):
            reasons[str(text)] = reasons.get(str(text), 0) + 1
    if reasons:
        lines += ["", "## Invalid and failed points", ""] + [f"- {n} x {t}" for t, n in reasons.items()]
    return "\n".join(lines) + "\n"


def _tex(text: str) -> str:
    return (str(text).replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%")
            .replace("&", r"\&").replace("#", r"\#"))


def latex(rows: list[dict]) -> str:
    out = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{llrrrrrr}", r"\toprule",
           r"tap & level & points & $\le 1\%$ & $\le 5\%$ & $\le 20\%$ & in tolerance & worst \\", r"\midrule"]
    for r in rows:
        n = r["points"]
        share = (lambda k: f"{100 * r[k] / n:.0f}\\%" if n else "--")
        wt = "--" if r["within_tolerance"] is None or not n else f"{100 * r['within_tolerance'] / n:.0f}\\%"
        worst = f"{100 * r['worst']:.1f}\\%" if math.isfinite(r["worst"]) else "--"
        out.append(f"\\texttt{{{_tex(r['tap'])}}} (layer {r['layer']}) & {r['level']} & {n} & "
                   f"{share('within_0.01')} & {share('within_0.05')} & {share('within_0.2')} & {wt} & {worst} \\\\")
    out += [r"\bottomrule", r"\end{tabular}",
            r"\caption{Share of grid points where each level of the theory is within 1\%, 5\% and 20\% of the "
            r"simulation (largest $|\mathrm{theory}/\mathrm{sim} - 1|$ over query positions) and within its "
            r"declared tolerance.}", r"\label{tab:regimes}", r"\end{table}"]
    return "\n".join(out) + "\n"


def _boundary(ds, x: str, fixed: dict, maps: Path) -> list[str]:
    tap, layer = BOUNDARY_TAP
    if (tap, layer) not in available_taps(ds):
        return []
    sub = ds.sel(fixed) if fixed else ds
    sel = dict(tap=tap, layer=layer, quantity="var")
    best = sub["theory"].sel(sel).sel(level="best").compute()
    lead = sub["theory"].sel(sel).sel(level="leading").compute()
    rel = sub["rel_error"].sel(sel).sel(level="leading").compute()
    z = sub["z"].sel(sel).sel(level="leading").compute()
    pos = ds["position"].values
    theory, sim = {t: [] for t in CONTOURS}, {t: [] for t in CONTOURS}
    for j in range(ds.sizes[x]):
        b, l_, r, zz = (a.isel({x: j}).values for a in (best, lead, rel, z))
        for tol in CONTOURS:
            theory[tol].append(crossing(pos, l_ / b - 1.0, tol))
            m, flag = crossing(pos, r, tol)
            k = np.searchsorted(pos, m) if math.isfinite(m) else 0
            noisy = bool(k < len(zz) and np.isfinite(zz[min(k, len(zz) - 1)])
                         and abs(zz[min(k, len(zz) - 1)]) < 2.0)
            sim[tol].append((m, flag, noisy))
    values = [_plain(v) for v in ds[x].values]
    fig = boundary_figure(f"Where the paper's 1/m picture holds: {tap} (layer {layer}) var,\n"
                          "leading order against the best theory (lines) and the simulation (markers)", (x, values), theory, sim,
                          _paper().get(x), _slice_note(fixed))
    return save_figure(fig, maps, "boundary")


def write_maps(folder: Path, *, maps: Path | None = None, x: str | None = None, y: str | None = None,
               at: dict | None = None, taps: list[str] | None = None, position: int | None = None) -> list[str]:
    """Draw every map and write the tables of the sweep in ``folder``; the files written."""
    folder = Path(folder)
    try:
        ds = open_dataset(folder)
    except StoreError as err:
        raise ValueError(str(err)) from None
    maps = Path(maps) if maps is not None else folder / "maps"
    if maps.exists() and not maps.is_dir():
        raise ValueError(f"--maps {shown(str(maps))} is a file; give a folder")
    maps.mkdir(parents=True, exist_ok=True)
    x, y = choose_axes(ds, x, y)
    fixed = slice_of(ds, (x,) + ((y,) if y else ()), at or {})
    chosen = parse_taps(taps, ds) if taps else default_taps(ds)
    paper = _paper()
    written: list[str] = []
    status = ds["status"].sel(fixed).compute() if fixed else ds["status"].compute()
    if y is not None:
        for tap, layer in chosen:
            err, noise = _tap_arrays(ds.sel(fixed) if fixed else ds, tap, layer, position)
            errors = {lv: err.sel(level=lv).transpose(y, x).compute().values for lv in ("best", "leading")}
            noises = {lv: noise.sel(level=lv).transpose(y, x).compute().values for lv in ("best", "leading")}
            missing = (status.transpose(y, x).values != STATUS["done"]) | ~np.isfinite(errors["best"])
            where = f"at m = {position}" if position else "largest over positions"
            title = f"{tap} (layer {layer}) {quantity_of(tap)}: |theory/sim - 1|, {where}"
            fig = heat_map(title, (x, [_plain(v) for v in ds[x].values]), (y, [_plain(v) for v in ds[y].values]),
                           errors, noises, missing, paper, _slice_note(fixed))
            written += [str(maps / n) for n in save_figure(fig, maps, _file_name(tap, layer))]
    bfixed = dict(fixed)
    if y:  # the boundary is drawn along x: y held nearest the paper's value among the values with results
        done = (status == STATUS["done"]).any(x).values
        values = [_plain(v) for v, d in zip(ds[y].values, done) if d] or [_plain(v) for v in ds[y].values]
        bfixed[y] = _nearest_paper(y, values)
    written += [str(maps / n) for n in _boundary(ds, x, bfixed, maps)]
    rows = regime_rows(ds, chosen or available_taps(ds)[:6])
    names = [Path(w).name for w in written]
    atomic_write_text(maps / "regimes.md", markdown(ds, rows, names, fixed, x, y))
    atomic_write_text(maps / "regimes.tex", latex(rows))
    return written + [str(maps / "regimes.md"), str(maps / "regimes.tex")]


__all__ = ["write_maps", "regime_rows", "markdown", "latex", "choose_axes", "slice_of", "default_taps",
           "quantity_of"]
