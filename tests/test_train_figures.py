"""The training experiment's figures (issue 21 item 4): drawn from stored results only, in the
one figure style (`theory.figure_style`): paper widths, fonts readable at print size, a y label
on every row, a legend naming every series, one y scale across panels that are compared.

The results are a real tiny run's (``python -m simulate train --preset tiny --no-figures``,
about 5 s), with the through-training record made from its trained measurement at two steps
(the tiny preset keeps no snapshots)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from simulate.experiments.train import figures
from simulate.experiments.train.cli import main
from theory.figure_style import FONT_SIZE, ONE_COLUMN, TWO_COLUMNS

FIXTURE = Path(__file__).parent / "data" / "tiny_corpus.txt"

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("train-figures") / "run"
    argv = ["--preset", "tiny", "--out", str(out), "--corpus", str(FIXTURE), "--steps", "8", "--sequences", "8",
            "--groups", "2", "--no-progress", "--holdout", "0.1", "--positional", "none,rope", "--beyond", "2",
            "--no-figures"]
    assert main(argv) == 0
    path = out / "measure" / "results.json"
    results = json.loads(path.read_text())
    for entry in results["models"].values():  # two "snapshots": the trained measurement at steps 4 and 8
        entry["through_training"] = [dict(entry["trained"], step=step) for step in (4, 8)]
    path.write_text(json.dumps(results))
    return out


@pytest.fixture(scope="module")
def drawn(run_dir):
    """Every figure of the run as (file name, matplotlib Figure), drawn from the stored files."""
    kept = []
    original = figures._save

    def keep(plt, fig, path):
        kept.append((Path(path).name, fig))
        original(plt, fig, path)

    figures._save = keep
    try:
        assert figures.render(run_dir) == ["loss", "measure"]
    finally:
        figures._save = original
    return kept


def test_every_figure_is_written(drawn, run_dir):
    names = {name for name, _ in drawn}
    assert {"loss.png", "loss_per_position.png", "slopes.png", "entropy.png", "through_training.png",
            "variance_attn_out.png", "variance_z.png", "variance_resid_post.png", "variance_attn_out_rope.png",
            "beyond_training_length.png", "beyond_training_length_rope.png"} <= names
    for name in names:
        path = run_dir / name if name.startswith("loss") else run_dir / "measure" / name
        assert path.read_bytes()[:4] == b"\x89PNG", name


def _legend_texts(fig) -> set[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return {t.get_text() for legend in legends for t in legend.get_texts()}


def _series_labels(ax) -> set[str]:
    handles, labels = ax.get_legend_handles_labels()
    return {label for label in labels if not label.startswith("_")}


def test_paper_widths_and_readable_fonts(drawn):
    for name, fig in drawn:
        width = fig.get_size_inches()[0]
        assert width in (ONE_COLUMN, TWO_COLUMNS), (name, width)
        texts = [t for ax in fig.axes for t in (*ax.get_xticklabels(), *ax.get_yticklabels(), ax.xaxis.label,
                                                 ax.yaxis.label, ax.title)]
        texts += [t for legend in fig.legends for t in legend.get_texts()]
        texts += [t for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
        small = {t.get_text(): t.get_fontsize() for t in texts if t.get_text() and t.get_fontsize() < FONT_SIZE - 1}
        assert not small, (name, small)


def test_legends_name_every_series_and_rows_have_y_labels(drawn):
    for name, fig in drawn:
        named = _legend_texts(fig)
        for ax in fig.axes:
            missing = _series_labels(ax) - named
            assert not missing, (name, missing)
        first_column = [ax for ax in fig.axes if ax.get_subplotspec().is_first_col()]
        assert all(ax.get_ylabel() for ax in first_column), name


def test_compared_panels_share_their_y_scale(drawn):
    by_name = dict(drawn)
    for name in ("entropy.png", "variance_attn_out.png", "beyond_training_length.png"):
        limits = {tuple(np.round(ax.get_ylim(), 12)) for ax in by_name[name].axes}
        assert len(limits) == 1, (name, limits)
    slopes = by_name["slopes.png"].axes
    for row in (slopes[:3], slopes[3:]):
        assert len({ax.get_ylim() for ax in row}) == 1
    for ax in slopes[3:]:  # layers are integers: no 0.25, 0.5 ticks
        assert all(float(t).is_integer() for t in ax.get_xticks()), ax.get_xticks()
    through = by_name["through_training.png"].axes
    assert len({ax.get_ylim() for ax in through[:3]}) == 1  # the three slope panels; entropy / ln m apart


def test_figures_from_stored_results_only(run_dir):
    """A missing run is one ValueError naming the folder; rendering twice gives the same files."""
    with pytest.raises(ValueError, match="holds no run"):
        figures.render(run_dir / "absent")
    assert figures.main([str(run_dir)]) == 0
