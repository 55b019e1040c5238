"""verify through depth: every tap of every layer is checked, against `theory.derive` for
the layer-1 attention taps and `theory.depth` for the rest, with the levels and declared
tolerances theory states; the per-layer accuracy, the findings and the depth figures."""

import json
import math

import numpy as np
import pytest

import verify
from theory import Level, ModelSpec
from theory.depth import predict
from theory.taps import ATTENTION_TAPS, block_taps
from verify import Comparison
from verify.checks import judge, relative_tolerance
from verify.checks.depth import MAIN_TAPS, depth_findings
from verify.checks.statistics import critical_z
from verify.cli import _load_spec, build_parser
from verify.report import console_summary, markdown, results_dict
from verify.report.figures import DEPTH_FIGURES, depth_error_figure, depth_variance_figure, save_figures
from verify.report.latex import depth_table_tex

# Two full blocks, eps = 0: layer 1 (attention and MLP) exact, layer 2 approximate.
SPEC = ModelSpec(d_model=16, n_heads=2, n_layers=2, seq_len=8, sigma_q=0.2, sigma_k=0.2, ln_eps=0.0)


@pytest.fixture(scope="module")
def report():
    return verify.run(SPEC, preset="quick", samples=400, seed=7, calibration=False, device="cpu")


def test_table_covers_every_tap_of_every_layer(report):
    table = report.best
    expected = {f"blocks.{l}.{s}" for l in range(SPEC.n_layers) for s in block_taps(SPEC)}
    assert set(table.taps) == expected
    assert table.n_layers == 2
    for tap in table.taps:
        source = "derive" if tap.startswith("blocks.0.") and tap.split(".", 2)[-1] in ATTENTION_TAPS else "depth"
        assert table[tap].source == source
    # Depth taps carry theory.depth's numbers at the recorded positions, and its levels.
    depth = predict(SPEC)
    idx = np.asarray(report.positions) - 1
    for tap in ("blocks.0.mlp.hook_post", "blocks.1.attn.hook_z", "blocks.1.hook_resid_post"):
        np.testing.assert_allclose(table[tap].values["var"], depth[tap].values["var"][idx])
        assert table[tap].level == depth[tap].level and table[tap].tolerance == depth[tap].tolerance
    np.testing.assert_allclose(table["blocks.0.mlp.hook_post"].values["mean"], depth["blocks.0.mlp.hook_post"].values["mean"][idx])
    # The simulation recorded them all and every one is checked.
    assert {c.tap for c in report.checks} == expected
    assert report.passed, [c.describe() for c in report.checks.failed]


def test_levels_and_declared_tolerances(report):
    table = report.best
    # eps = 0: every layer-1 tap is exact (attention from derive, MLP from depth) and held to 0.
    for suffix in block_taps(SPEC):
        tap = f"blocks.0.{suffix}"
        assert table[tap].level == Level.EXACT, tap
        assert relative_tolerance(table, tap) == 0.0
    # Deeper taps: approximate, with exactly the tolerance theory.depth declares.
    for tap in (t for t in table.taps if t.startswith("blocks.1.")):
        assert table[tap].level == Level.APPROXIMATE
        assert relative_tolerance(table, tap) == table[tap].tolerance
    # Derived (theory.tolerance.depth_tolerance): the closure's 1/d per block below, at least.
    for tap in ("blocks.1.attn.hook_z", "blocks.1.hook_resid_post"):
        assert 1 / SPEC.d_model <= relative_tolerance(table, tap) < 0.2, tap
    for c in report.checks:
        assert c.rel_tol == (0.0 if c.exact else table[c.tap].tolerance) or c.method == "deterministic"


def test_declared_tolerance_is_what_is_allowed():
    # A residual tap (2%) off by 2.5% with a tiny SE fails; an attention-path tap (3%) passes;
    # the same residual error on an exact tap fails whatever the tolerance map says.
    def row(tap, level):
        return Comparison(tap=tap, position=8, quantity="var", level=level, theory=1.025, sim=1.0, se=1e-4, z=250.0,
                          scale=1.0, units=1000)

    rows = [row("blocks.1.hook_resid_post", "approximate"), row("blocks.1.attn.hook_z", "approximate"),
            row("blocks.0.mlp.hook_post", "exact")]
    tols = {"blocks.1.hook_resid_post": 0.02, "blocks.1.attn.hook_z": 0.03, "blocks.0.mlp.hook_post": 0.05}
    judged = judge(rows, 0.01, tols)
    assert [c.passed for c in judged] == [False, True, False]
    assert [c.rel_tol for c in judged] == [0.02, 0.03, 0.0]


def test_exact_layer_one_mlp_taps_pass_the_z_test_and_catch_errors(report):
    mlp = [c for c in report.checks if c.tap.startswith("blocks.0.") and c.tap.split(".", 2)[-1] in
           ("mlp.hook_pre", "mlp.hook_post", "hook_mlp_out", "hook_resid_post") and c.method == "holm"]
    assert mlp and all(c.exact and c.rel_tol == 0.0 and c.passed for c in mlp)
    # The nonzero mean of the GELU output is checked too (and ReLU/GELU means are not zero).
    means = [c for c in mlp if c.tap == "blocks.0.mlp.hook_post" and c.quantity == "mean"]
    assert len(means) == len(report.positions) and all(c.theory > 0 for c in means)
    # A 6% error in the exact activation variance (only there; relative SE ~0.9% at 400
    # networks) is caught by the same simulation.
    post = report.best["blocks.0.mlp.hook_post"]
    wrong = report.best.with_values("hook_post x1.06", {post.tap: {"var": post.values["var"] * 1.06}})
    judged = verify.compare(wrong, report.simulation)
    assert not judged.passed and {c.tap for c in judged.failed} == {"blocks.0.mlp.hook_post"}


def test_approximate_mean_gets_a_relative_tolerance(report):
    # mlp.hook_post's deeper mean is nonzero: allowed its declared (derived) relative tolerance; zero means: a z-test.
    declared = report.best["blocks.1.mlp.hook_post"].tolerance
    deep = [c for c in report.checks if c.tap == "blocks.1.mlp.hook_post" and c.quantity == "mean" and c.method == "holm"]
    assert 0 < declared < 0.2
    assert deep and all(c.rel_tol == declared and c.tolerance >= declared * abs(c.theory) for c in deep)
    zero = [c for c in report.checks if c.tap == "blocks.1.hook_resid_post" and c.quantity == "mean"]
    assert zero and all(c.theory == 0.0 and c.tolerance == pytest.approx(c.critical_z * c.se) for c in zero)


def test_depth_accuracy_rows(report):
    rows = report.depth_accuracy()
    keys = {(r["layer"], r["tap"], r["quantity"]) for r in rows}
    for l in range(2):
        for suffix in block_taps(SPEC):
            quantity = "sum_sq" if suffix == "attn.hook_pattern" else "var"
            assert (l, suffix, quantity) in keys
        assert (l, "mlp.hook_post", "mean") in keys
    assert (0, "hook_resid_post", "mean") not in keys  # zero means are not summarised
    r = next(r for r in rows if (r["layer"], r["tap"]) == (1, "attn.hook_z"))
    mine = [c for c in report.checks if c.tap == "blocks.1.attn.hook_z" and c.quantity == "var"]
    worst = max(mine, key=lambda c: abs(c.theory / c.sim - 1))
    assert r["max_abs_rel_error"] == pytest.approx(abs(worst.theory / worst.sim - 1))
    assert r["position"] == worst.position and r["rel_tol"] == report.best["blocks.1.attn.hook_z"].tolerance
    assert r["failed"] == 0
    assert r["leading_max_abs_rel_error"] is not None and r["leading_max_abs_rel_error"] > 0


def _rows(base_error, deep_error, deep_z):
    common = dict(tap="attn.hook_z", quantity="var", checks=8, failed=0, position=8, max_abs_z=abs(deep_z),
                  leading_max_abs_rel_error=0.1)
    return [
        {**common, "layer": 0, "level": "exact", "rel_tol": 0.0, "max_abs_rel_error": base_error,
         "rel_error": base_error, "rel_se": 0.005, "z": 1.0, "assumptions": ["keys i.i.d. (exact at layer 0)"]},
        {**common, "layer": 1, "level": "approximate", "rel_tol": 0.03, "max_abs_rel_error": deep_error,
         "rel_error": -deep_error, "rel_se": deep_error / abs(deep_z), "z": deep_z,
         "assumptions": ["NNGP closure", "softmax rows of correlated keys as i.i.d."]},
    ]


def test_findings_name_the_assumptions_that_break():
    grows = depth_findings(_rows(0.005, 0.025, -5.0), taps=("attn.hook_z",))[0]
    assert grows["grows"] and grows["layer"] == 1 and grows["within_tolerance"]
    # Resolved means beyond Bonferroni at 5% over the deeper checks (8 here: 2.73).
    assert grows["z_threshold"] == pytest.approx(critical_z(0.05, 8))
    assert not depth_findings(_rows(0.005, 0.025, -2.6), taps=("attn.hook_z",))[0]["grows"]
    assert grows["new_assumptions"] == ["NNGP closure", "softmax rows of correlated keys as i.i.d."]
    assert "grows with depth" in grows["sentence"] and "softmax rows of correlated keys" in grows["sentence"]
    assert "theory below simulation" in grows["sentence"] and "at layer 1 (m" in grows["sentence"]
    assert "at layer 0 to" in grows["sentence"]  # 0-based, as the tap names (blocks.1 is layer 1)
    # A tap of the same layer that shares the closure but does not grow clears it.
    mlp = [{**r, "tap": "hook_mlp_out", "max_abs_rel_error": 0.006, "rel_error": 0.006, "z": 1.0,
            "assumptions": ["NNGP closure", "Gram matrix replaced by its mean"]} for r in _rows(0.005, 0.025, -5.0)]
    both = depth_findings(_rows(0.005, 0.025, -5.0) + mlp, taps=("attn.hook_z", "hook_mlp_out"))
    assert not both[1]["grows"]
    assert both[0]["suspects"] == ["softmax rows of correlated keys as i.i.d."]
    assert both[0]["cleared_by"] == ["hook_mlp_out"] and "Less likely: NNGP closure" in both[0]["sentence"]
    # Not resolved (|z| small) or not larger: no growth claimed.
    assert not depth_findings(_rows(0.005, 0.025, -1.5), taps=("attn.hook_z",))[0]["grows"]
    assert not depth_findings(_rows(0.02, 0.025, -5.0), taps=("attn.hook_z",))[0]["grows"]


def test_report_files_and_depth_figures(report, tmp_path):
    figures = save_figures(report, tmp_path, names=DEPTH_FIGURES)
    assert set(figures) == set(DEPTH_FIGURES)
    for name in ("depth_error", "depth_variance"):
        assert figures[name] == [f"{name}.png", f"{name}.pdf"]
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{name}.pdf").read_bytes()[:5] == b"%PDF-"
    text = markdown(report, figures)
    assert "## Accuracy through depth" in text and "| tap | layer 0 | layer 1 |" in text
    assert "![depth_error](depth_error.png)" in text and "Where the error grows with depth" in text
    assert "`blocks.1.attn.hook_z`" in text  # multi-layer check rows name their layer
    data = json.loads(json.dumps(results_dict(report, figures), allow_nan=False))
    assert data["depth"]["layers"] == 2 and len(data["depth"]["findings"]) == 5
    assert {r["layer"] for r in data["depth"]["accuracy"]} == {0, 1}
    assert "layer 1" in depth_table_tex(report) and "layer 2" not in depth_table_tex(report)
    # One numbering: the report's layer labels are the tap names' block indices (0-based).
    import re
    head = next(line for line in text.splitlines() if line.startswith("| tap | layer"))
    labels = {int(n) for n in re.findall(r"\| layer (\d+)", head)}
    taps = {int(n) for n in re.findall(r"`blocks\.(\d+)\.", text)}
    assert labels == taps == {0, 1}
    console = console_summary(report)
    assert "depth: hook_resid_post max |theory/sim - 1| per layer:" in console


def test_depth_error_figure(report):
    fig = depth_error_figure(report)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == list(MAIN_TAPS)
    ax = fig.axes[titles.index("hook_resid_post")]
    assert ax.get_xlabel() == "layer" and "%" in fig.axes[0].get_ylabel()
    # one y scale for every panel: the panels are compared
    assert len({tuple(np.round(a.get_ylim(), 9)) for a in fig.axes}) == 1
    # The m = T series: 100 (theory/sim - 1) at each layer, with 2-SE bars.
    T = max(report.positions)
    series = next(c for c in ax.containers if c.get_label() == f"best, m = {T}")
    y = series.lines[0].get_ydata()
    expected = [100 * (report.best.value(f"blocks.{l}.hook_resid_post", "var", T) /
                       report.simulation[f"blocks.{l}.hook_resid_post"].var[-1] - 1) for l in range(2)]
    np.testing.assert_allclose(y, expected)


def test_depth_variance_figure(report):
    fig = depth_variance_figure(report)
    top, bottom = fig.axes
    assert top.get_xscale() == "log" and top.get_yscale() == "log" and bottom.get_xlabel() == "query position m"
    assert len(top.containers) == 2  # simulation points of each layer
    for l, container in enumerate(top.containers):
        _, y = container.lines[0].get_data()
        np.testing.assert_allclose(y, report.simulation[f"blocks.{l}.hook_resid_post"].var)
    best_lines = [line for line in top.get_lines() if line.get_linestyle() == "-" and len(line.get_xdata()) == len(report.positions)]
    assert len(best_lines) >= 2


def test_one_layer_reports_have_no_depth_figures(tmp_path):
    small = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, attn_only=True)
    table = verify.theory_table(small, [1, 2, 4])
    assert {r.source for r in table.values()} == {"derive"}


def test_presets_and_default_spec():
    assert verify.DEFAULT_SPEC.n_layers >= 3 and not verify.DEFAULT_SPEC.attn_only
    depth = verify.PRESETS["depth"]
    assert depth.spec is not None and depth.spec.n_layers == 6 and depth.spec.d_model == 256
    assert _load_spec(None) is None  # the preset decides
    assert build_parser().parse_args(["--preset", "depth"]).preset == "depth"
    with pytest.raises(ValueError, match="positional = 'learned': theory covers"):
        verify.run(SPEC.replace(positional="learned"), samples=10, calibration=False)
