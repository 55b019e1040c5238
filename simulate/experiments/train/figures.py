"""The training experiment's figures, drawn from stored results only (renderers never compute).

Inputs: a run's ``run.json`` (loss curves, baselines, loss per context position) and
``measure/results.json`` (`measure`, `beyond`). Every figure is drawn in the toolkit's one
style (`theory.figure_style`: one-column 3.4 in or two-column 7.0 in widths, Okabe-Ito
colours, a legend naming every series). Colours: one per model (`MODEL_COLOURS`), the
theory in the style's ``best`` colour; init dotted/open, trained solid.

    python -m simulate.experiments.train.figures DIR      # redraw every figure of a run

Files: ``DIR/loss.png``, ``DIR/loss_per_position.png``; in ``DIR/measure/``:
``variance_{attn_out,z,resid_post}[_<model>].png``, ``slopes.png``, ``entropy.png``,
``through_training.png``, ``beyond_training_length[_<model>].png``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from theory._argparse import OneLineParser
from theory._guard import guarded
from theory._outputs import atomic_savefig
from theory.figure_style import ONE_COLUMN, PALETTE, ROLE_COLOURS, TWO_COLUMNS, colour, styled

from .files import read_run_json

MODEL_COLOURS = {"none": PALETTE[0], "learned": PALETTE[5], "rope": PALETTE[3]}
MODEL_NAMES = {"none": "NoPE", "learned": "learned positions", "rope": "RoPE"}
TAPS = ("hook_attn_out", "attn.hook_z", "hook_resid_post")
BASELINE_COLOURS = {"2": PALETTE[6], "3": PALETTE[4], "4": PALETTE[2], "7": PALETTE[1]}


def _plt():
    # deferred: matplotlib is heavy, and only the figures need it
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _name(positional: str) -> str:
    return MODEL_NAMES.get(positional, positional)


def _save(plt, fig, path: Path) -> None:
    atomic_savefig(fig, path, dpi=200)
    plt.close(fig)


def _legend_below(fig, axes, ncol: int = 4) -> None:
    """One legend for the figure, every series named once, below the panels."""
    seen = {}
    for ax in np.ravel(axes):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(lab, h)
    fig.legend(list(seen.values()), list(seen), loc="lower center", ncol=ncol, bbox_to_anchor=(0.5, -0.02))


@styled
def loss_figures(run: dict, out: Path) -> None:
    """``loss.png`` (training and held-out bits/byte per step, baselines) and
    ``loss_per_position.png`` (held-out bits/byte against the bytes of context)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(ONE_COLUMN, 3.4))
    for name, m in run["models"].items():
        c = MODEL_COLOURS.get(name, colour(6))
        y = np.asarray(m["train_loss"]) / math.log(2)
        if len(y) >= 10:  # a 10-step running mean for readability; the raw curve is in run.json
            y = np.convolve(y, np.ones(10) / 10, mode="valid")
        x = np.arange(len(m["train_loss"]) - len(y) + 1, len(m["train_loss"]) + 1)
        ax.plot(x, y, color=c, alpha=0.35, lw=0.6, marker="", label=f"{_name(name)}: training (10-step mean)")
        ev = m["eval"]
        ax.plot([e["step"] for e in ev], [e["loss"] / math.log(2) for e in ev], color=c, marker="o", ms=2, lw=1,
                label=f"{_name(name)}: held-out")
    base = run["baselines"]
    ax.axhline(base["bigram_bits_per_byte"], color="#999999", ls=":", lw=0.8, label="add-one bigram")
    for n, c in BASELINE_COLOURS.items():
        if n != "2" and n in base.get("kneser_ney", {}):
            ax.axhline(base["kneser_ney"][n]["bits_per_byte"], color=c, ls="-.", lw=0.8, label=f"Kneser-Ney {n}-gram")
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("bits per byte")
    ax.set_ylim(top=min(8.5, ax.get_ylim()[1]))
    ax.legend(ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))  # below: the curves stay visible
    _save(plt, fig, out / "loss.png")
    scored = {name: m for name, m in run["models"].items() if "per_position" in m}
    if not scored:
        return
    fig, ax = plt.subplots(figsize=(ONE_COLUMN, 3.0))
    for name, m in scored.items():
        y, e = np.asarray(m["per_position"]), np.asarray(m["per_position_se"])
        j = np.arange(1, y.size + 1)
        c = MODEL_COLOURS.get(name, colour(6))
        ax.plot(j, y, color=c, marker="", lw=1.2, label=f"{_name(name)} trained (± 1 se)")
        ax.fill_between(j, y - e, y + e, color=c, alpha=0.2, lw=0)
    for n, c in BASELINE_COLOURS.items():
        s = base.get("kneser_ney", {}).get(n)
        if s:
            ax.plot(np.arange(1, len(s["per_position"]) + 1), s["per_position"], color=c, lw=0.8, ls="-.", marker="",
                    label=f"Kneser-Ney {n}-gram")
    ax.set_xscale("log")
    ax.set_xlabel("bytes of context j")
    ax.set_ylabel("held-out bits per byte")
    ax.legend(ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    _save(plt, fig, out / "loss_per_position.png")


@styled
def measure_figures(results: dict, dest: Path) -> None:
    """Every figure of ``measure/``, from ``results`` (the contents of ``results.json``)."""
    plt = _plt()
    for positional, entry in results["models"].items():
        for tap in TAPS:
            _variance(plt, results, positional, entry, tap, dest)
    _slopes(plt, results, dest)
    _entropy(plt, results, dest)
    if any("through_training" in e for e in results["models"].values()):
        _through_training(plt, results, dest)
    for positional, entry in results["models"].items():
        if entry.get("beyond"):
            _beyond(plt, positional, entry["beyond"], dest)


def _suffix(positional: str) -> str:
    return "" if positional == "none" else f"_{positional}"


def _variance(plt, results: dict, positional: str, entry: dict, tap: str, dest: Path) -> None:
    """Var of one coordinate of ``tap`` against position per layer, init and trained (± 1 se)."""
    L = len(entry["init"]["layers"])
    m = np.asarray(entry["init"]["positions"], dtype=float)
    fit = np.asarray(results["fit_positions"], dtype=float)
    c = MODEL_COLOURS.get(positional, colour(6))
    fig, axes = plt.subplots(1, L, figsize=(TWO_COLUMNS, 2.1), squeeze=False, sharey=True)  # layers compared
    for l, ax in enumerate(axes[0]):
        for which, ls, alpha in (("init", ":", 0.6), ("trained", "-", 1.0)):
            t = entry[which]["layers"][l]["taps"][tap]
            ax.errorbar(m, t["var"], yerr=t["var_se"], color=c, ls=ls, marker="", lw=1, alpha=alpha, elinewidth=0.5,
                        label=f"{which}: Var, pooled")
            ax.errorbar(fit, t["var_across_inputs_at_fit"], yerr=t["var_across_inputs_se_at_fit"], color=c, ls=ls,
                        marker="o", ms=2, lw=0.6, alpha=alpha, mfc="none" if which == "init" else c, elinewidth=0.5,
                        label=f"{which}: Var across inputs")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"layer {l}")
        ax.set_xlabel("position m")
    axes[0][0].set_ylabel(f"Var, {tap}")
    fig.suptitle(f"{_name(positional)}: variance of one coordinate of {tap} (± 1 se over documents)", y=1.02)
    _legend_below(fig, axes)
    fig.subplots_adjust(bottom=0.3, wspace=0.35)
    _save(plt, fig, dest / f"variance_{tap.replace('attn.', '').replace('hook_', '')}{_suffix(positional)}.png")


def _slopes(plt, results: dict, dest: Path) -> None:
    """Fitted slopes of ln Var (top) and ln Var across inputs (bottom) against ln m, per layer and model."""
    fig, axes = plt.subplots(2, len(TAPS), figsize=(TWO_COLUMNS, 3.8), squeeze=False, sharex=True, sharey="row")
    for row, key in enumerate(("slope", "slope_in")):
        for ax, tap in zip(axes[row], TAPS):
            for k, (positional, entry) in enumerate(results["models"].items()):
                c = MODEL_COLOURS.get(positional, colour(6))
                for which, ls in (("init", ":"), ("trained", "-")):
                    s = [lay["taps"][tap][key] for lay in entry[which]["layers"]]
                    e = [lay["taps"][tap][key + "_se"] for lay in entry[which]["layers"]]
                    ax.errorbar(np.arange(len(s)) + 0.06 * k, s, yerr=e, ls=ls, marker="o", ms=2.5, color=c,
                                mfc="none" if which == "init" else c, label=f"{_name(positional)} {which}")
            ax.axhline(0, color="#999999", lw=0.5, marker="", label="slope 0: no trend in m")
            ax.axhline(-1, color="#999999", lw=0.5, ls="--", marker="", label="slope -1: Var like 1/m")
            if row == 0:
                ax.set_title(tap)
            else:
                ax.set_xlabel("layer")
                ax.set_xticks(range(len(s)))  # layers are integers (0-based, as the tap names)
        axes[row][0].set_ylabel("slope of ln Var vs ln m" if key == "slope" else "slope of ln Var\nacross inputs vs ln m")
    _legend_below(fig, axes, ncol=3)
    fig.subplots_adjust(bottom=0.2, hspace=0.35, wspace=0.3)
    _save(plt, fig, dest / "slopes.png")


def _entropy(plt, results: dict, dest: Path) -> None:
    """Attention entropy against position per layer: init and every trained model, with ln m."""
    first = next(iter(results["models"].values()))
    L = len(first["init"]["layers"])
    m = np.asarray(first["init"]["positions"], dtype=float)
    fig, axes = plt.subplots(1, L, figsize=(TWO_COLUMNS, 2.1), squeeze=False, sharey=True)
    for l, ax in enumerate(axes[0]):
        ax.plot(m, np.log(m), color="#999999", lw=0.6, ls="--", marker="", label="ln m (uniform attention)")
        for positional, entry in results["models"].items():
            c = MODEL_COLOURS.get(positional, colour(6))
            for which, ls in (("init", ":"), ("trained", "-")):
                lay = entry[which]["layers"][l]
                ax.plot(m, lay["entropy"], color=c, ls=ls, lw=1, marker="", label=f"{_name(positional)} {which}")
        ax.set_xscale("log")
        ax.set_title(f"layer {l}")
        ax.set_xlabel("position m")
    axes[0][0].set_ylabel("attention entropy (nats)")
    _legend_below(fig, axes, ncol=7)
    fig.subplots_adjust(bottom=0.3, wspace=0.3)
    _save(plt, fig, dest / "entropy.png")


def _through_training(plt, results: dict, dest: Path) -> None:
    """Per tap, the slope of ln Var against ln m at each checkpoint (colour: layer; solid all m,
    dashed m >= tail_from; line style per model), and the entropy / ln m; ± 1 se over documents."""
    styles = {"none": "-", "learned": (0, (1, 1)), "rope": (0, (4, 1, 1, 1))}
    fig, axes = plt.subplots(1, len(TAPS) + 1, figsize=(TWO_COLUMNS, 2.4), squeeze=False)
    for ax in axes[0][1:len(TAPS)]:  # the slope panels compared on one scale; entropy / ln m has its own
        ax.sharey(axes[0][0])
    for positional, entry in results["models"].items():
        snaps = entry.get("through_training")
        if not snaps:
            continue
        steps = [s["step"] for s in snaps]
        ls = styles.get(positional, "-")
        for l in range(len(snaps[0]["layers"])):
            c = colour(l + 1)
            for ax, tap in zip(axes[0], TAPS):
                keys = ("slope", "slope_tail") if positional == "none" else ("slope",)
                for key in keys:
                    y = [s["layers"][l]["taps"][tap][key] for s in snaps]
                    e = [s["layers"][l]["taps"][tap][key + "_se"] for s in snaps]
                    tail = key == "slope_tail"
                    ax.errorbar(steps, y, yerr=e, ls="--" if tail else ls, marker="", lw=0.9, color=c, elinewidth=0.5,
                                label=f"{_name(positional)} layer {l}" + (f" (m >= {results['tail_from']})" if tail else ""))
            axes[0][-1].errorbar(steps, [s["layers"][l]["entropy_over_ln_m"] for s in snaps],
                                 yerr=[s["layers"][l]["entropy_over_ln_m_se"] for s in snaps], ls=ls, marker="", lw=0.9,
                                 color=c, elinewidth=0.5, label=f"{_name(positional)} layer {l}")
    for ax, tap in zip(axes[0], TAPS):
        ax.set_title(f"slope: {tap}")
    axes[0][0].set_ylabel("slope of ln Var vs ln m")
    axes[0][-1].set_title("entropy / ln m")
    axes[0][-1].ticklabel_format(axis="y", useOffset=False)  # values near 1 at init: no '1e-5+9.999e-1' offset
    for ax in axes[0]:
        ax.set_xlabel("optimiser step")
    _legend_below(fig, axes, ncol=4)
    fig.subplots_adjust(bottom=0.42, wspace=0.4)
    _save(plt, fig, dest / "through_training.png")


def _beyond(plt, positional: str, far: dict, dest: Path) -> None:
    """Var of ``hook_attn_out`` to ``factor x T`` per layer: the theory at init (i.i.d. Gaussian
    inputs, annealed), init on i.i.d. bytes, init and trained on held-out text."""
    b = far["trained"]
    L, T = len(b["layers"]), b["seq_len"]
    m = np.asarray(b["positions"], dtype=float)
    c = MODEL_COLOURS.get(positional, colour(6))
    init_c = PALETTE[4]
    fig, axes = plt.subplots(1, L, figsize=(TWO_COLUMNS, 2.2), squeeze=False, sharey=True)
    for l, ax in enumerate(axes[0]):
        if far.get("theory"):
            ax.plot(m, far["theory"]["layers"][l]["var"], color=ROLE_COLOURS["best"], lw=1.4, marker="",
                    label="theory at init (i.i.d. Gaussian inputs, annealed)")
        if far.get("init_iid"):
            lay = far["init_iid"]["layers"][l]
            ax.errorbar(far["init_iid"]["fit_positions"], lay["var_across_inputs_at_fit"], yerr=lay["var_across_inputs_se_at_fit"],
                        color=ROLE_COLOURS["simulation"], ls="", marker="s", ms=2.2, mfc="none", elinewidth=0.5,
                        label="init, i.i.d. random bytes: across inputs")
        for which, colr in (("init", init_c), ("trained", c)):
            lay = far[which]["layers"][l]
            ax.plot(m, lay["var"], color=colr, ls=":", lw=0.9, marker="", label=f"{which}, text: Var pooled")
            ax.errorbar(far[which]["fit_positions"], lay["var_across_inputs_at_fit"], yerr=lay["var_across_inputs_se_at_fit"],
                        color=colr, ls="-", marker="o", ms=2, lw=0.8, elinewidth=0.5, label=f"{which}, text: across inputs")
        ax.axvline(T, color="#999999", lw=0.6, ls="--", marker="", label=f"training length T = {T}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"layer {l}")
        ax.set_xlabel("position m")
    axes[0][0].set_ylabel("Var, hook_attn_out")
    fig.suptitle(f"{_name(positional)}: attention output to {b['factor']} x the training length "
                 f"({b['sequences']} windows, ± 1 se over {b['documents']} documents)", y=1.02)
    _legend_below(fig, axes, ncol=3)
    fig.subplots_adjust(bottom=0.38, wspace=0.35)
    _save(plt, fig, dest / f"beyond_training_length{_suffix(positional)}.png")


def render(run_dir: str | Path) -> list[str]:
    """Redraw every figure of a run from its stored ``run.json`` and ``measure/results.json``."""
    run_dir = Path(run_dir)
    drawn = []
    run_path, res_path = run_dir / "run.json", run_dir / "measure" / "results.json"
    if not run_path.is_file() and not res_path.is_file():
        raise ValueError(f"{str(run_dir)!r} holds no run (no run.json, no measure/results.json)")
    if run_path.is_file():
        run = read_run_json(run_path)
        if run.get("models") and run.get("baselines"):
            loss_figures(run, run_dir)
            drawn.append("loss")
    if res_path.is_file():
        measure_figures(json.loads(res_path.read_text(encoding="utf-8")), run_dir / "measure")
        drawn.append("measure")
    return drawn


@guarded("simulate.experiments.train.figures")
def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(error_prefix="figures", prog="python -m simulate.experiments.train.figures",
                      description="Redraw a training run's figures from its stored results.")
    p.add_argument("run", help="a run directory of python -m simulate train")
    args = p.parse_args(argv)
    try:
        drawn = render(args.run)
    except (ValueError, KeyError, json.JSONDecodeError) as err:
        sys.stderr.write(f"figures: error: {err}\n")
        return 2
    print(f"[figures] {', '.join(drawn)} -> {args.run}", file=sys.stderr)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())


__all__ = ["loss_figures", "measure_figures", "render", "MODEL_COLOURS"]
