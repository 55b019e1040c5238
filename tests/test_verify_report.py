"""The main job's outputs: files are written and parse, figures have the expected axes and
series (matplotlib objects, not pixels), and the report states the leading-order misses."""

import json
import re

import numpy as np
import pytest

import verify
from theory import ModelSpec
from verify.checks.distributions import LAW_TAPS, distribution_checks
from verify.checks.mutants import attention_residual
from verify.job import CALIBRATION_SEED_OFFSET
from verify.report import console_summary, markdown, results_dict
from verify.report.figures import (BEST_LABEL, LEADING_LABEL, SIM_LABEL, distribution_figure, sum_sq_figure,
                                   variance_figure, variance_taps, zscore_figure)

SPEC = ModelSpec(d_model=32, n_heads=2, n_layers=1, seq_len=16, attn_only=True, sigma_q=0.15, sigma_k=0.15,
                 sigma_v=0.5, sigma_o=0.2, ln_eps=1e-5)
# An attention-only block ends at hook_resid_post (TransformerLens): the residual after attention.
RESID = attention_residual(SPEC)
CHECK_KEYS = {"tap", "position", "level", "theory", "sim", "se", "z", "tolerance", "passed", "assumption"}


@pytest.fixture(scope="module")
def report():
    return verify.run(SPEC, preset="quick", samples=300, seed=5, calibration_runs=6, parallel=False)


@pytest.fixture(scope="module")
def written(report, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = verify.write_report(report, out)
    return out, paths


def test_run_summary(report):
    assert report.passed and report.exact_passed
    assert report.positions == verify.positions_for(16) == [1, 2, 3, 4, 6, 8, 11, 16]
    assert len(report.checks) == len(report.positions) * (9 * 2 + 1)
    assert set(report.mutants) == set(verify.MUTANTS)
    assert report.mutants["factor H dropped"]["detected"]
    assert set(report.timings) >= {"theory_s", "simulation_s", "calibration_s", "total_s"}


def test_files_written_and_parse(written):
    out, paths = written
    names = {p.name for p in out.iterdir()}
    assert {"report.md", "results.json", "summary.tex", "report.tex"} <= names
    assert "\\input{derivation/derivation-body.tex}" in (out / "report.tex").read_text()
    assert (out / "derivation" / "derivation-body.tex").exists()
    for fig in ("variance", "sum_sq", "zscores", "distributions"):
        assert (out / f"{fig}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (out / f"{fig}.pdf").read_bytes()[:5] == b"%PDF-"
    data = json.loads((out / "results.json").read_text())
    assert ModelSpec.from_dict(data["spec"]) == SPEC
    assert data["run"]["samples"] == 300 and data["run"]["measure"] == "annealed"
    assert data["verdict"]["passed"] is True
    assert len(data["checks"]) == data["verdict"]["checks"]
    for check in data["checks"]:
        assert CHECK_KEYS <= set(check)
        assert check["level"] in ("exact", "approximate", "asymptotic")
    cal = data["calibration"]
    assert cal["runs"] == 6 and cal["samples"] == 300
    assert {"false_alarm", "zscores", "family_wise", "power"} <= set(cal)
    assert set(cal["power"]) == set(verify.MUTANTS)
    assert {r["tap"] for r in data["leading"]["summary"]} >= {"blocks.0.attn.hook_z", RESID}
    assert data["figures"]["variance"] == ["variance.png", "variance.pdf"]
    assert [d["tap"] for d in data["distributions"]] == list(LAW_TAPS)
    assert data["verdict"]["distributions_passed"] is True


def test_markdown_sections(written, report):
    out, _ = written
    text = (out / "report.md").read_text()
    for heading in ("## What was run", "## Verdict per tap", "## Distributions (m = 16)",
                    "## Where the paper's leading order deviates",
                    "## Calibration of verify", "## Figures", "## All checks"):
        assert heading in text
    assert "**Verdict: PASS**" in text
    assert "![variance](variance.png)" in text
    z = next(r for r in report.leading_summary() if r["tap"] == "blocks.0.attn.hook_z")
    assert f"At m = {z['position']} the paper's `hook_z` variance" in text
    assert text.count("\n| `") >= len(report.checks)  # one table row per check
    assert "\\begin{tabular}" in (out / "summary.tex").read_text()


def test_console_summary(report):
    text = console_summary(report, "report")
    assert text.startswith("verify: PASS")
    assert "leading order (paper): hook_z variance at m=16" in text
    assert "calibration: false alarms" in text


def _legend_labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_variance_figure(report):
    fig = variance_figure(report)
    axes = fig.axes
    assert len(axes) == 6  # three taps, values and ratios
    top, bottom = axes[:3], axes[3:]
    assert [ax.get_title() for ax in top] == ["attn.hook_z", "hook_attn_out", "hook_resid_post"]
    assert _legend_labels(top[0]) == [BEST_LABEL, LEADING_LABEL, SIM_LABEL]   # one legend, the same series in each
    for ax, tap in zip(top, variance_taps(report)):
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert len(ax.containers) == 1  # the error bars
        sim_x, sim_y = ax.containers[0].lines[0].get_data()
        np.testing.assert_allclose(sim_y, report.simulation[tap].var)
        np.testing.assert_array_equal(sim_x, report.positions)
        best, leading = ax.get_lines()[-2:]
        np.testing.assert_allclose(best.get_ydata(), report.best[tap].values["var"])
        np.testing.assert_allclose(leading.get_ydata(), report.leading[tap].values["var"])
    for ax in bottom:
        assert ax.get_xscale() == "log" and ax.get_xlabel() == "query position m"
        assert ax.get_ylabel() == "theory / simulation"


def test_sum_sq_figure(report):
    ax = sum_sq_figure(report).axes[0]
    assert ax.get_xscale() == "log"
    assert _legend_labels(ax) == [BEST_LABEL, LEADING_LABEL, SIM_LABEL]
    m = np.asarray(report.positions, float)
    best, leading = ax.get_lines()[-2:]
    np.testing.assert_allclose(best.get_ydata(), m * report.best["blocks.0.attn.hook_pattern"].values["sum_sq"])
    np.testing.assert_allclose(leading.get_ydata(), 1.0)  # uniform attention
    assert best.get_ydata()[0] == pytest.approx(1.0) and best.get_ydata()[-1] > 1.0


def test_zscore_figure(report):
    ax = zscore_figure(report).axes[0]
    finite = [c for c in report.checks if np.isfinite(c.z)]
    points = np.concatenate([c.get_offsets() for c in ax.collections])
    assert len(points) == len(finite)  # no failures: one point per check
    # each point is the statistic the check was judged by: z for exact results, the excess over
    # the tolerance (in SE) for approximate ones, recomputed here from the check's own numbers
    judged = [c.z if c.exact else np.sign(c.z) * max(0.0, abs(c.theory - c.sim) - c.rel_tol * abs(c.theory)) / c.se
              for c in finite]
    assert set(np.round(points[:, 1], 9)) == set(np.round(judged, 9))
    assert all(abs(c.judged_z) <= abs(c.z) + 1e-12 for c in finite)
    assert ax.get_xscale() == "log" and "z" in ax.get_ylabel()
    labels = _legend_labels(ax)
    series = [label for label in labels if not label.startswith("Holm")]
    assert len(series) == len({c.tap for c in finite})
    assert sum(label.startswith("Holm critical") for label in labels) == 2      # the critical lines are named
    styles = [(tuple(np.round(c.get_facecolor()[0], 3)), c.get_paths()[0].vertices.round(3).tobytes())
              for c in ax.collections]
    assert len(set(styles)) == len(styles)                       # no two series share colour and marker


def test_failures_are_reported(report):
    # The same simulation judged against a mutant: the report says FAIL and names assumptions.
    bad = verify.compare(verify.MUTANTS["factor H dropped"](report.best), report.simulation)
    broken = verify.Report(**{**report.__dict__, "checks": bad})
    assert not broken.passed
    text = markdown(broken)
    assert "**Verdict: FAIL" in text and "**NO**" in text
    data = json.loads(json.dumps(results_dict(broken), allow_nan=False))
    failed = [c for c in data["checks"] if not c["passed"]]
    assert failed and all(c["assumption"] for c in failed)
    assert {c["tap"] for c in failed} <= {"blocks.0.hook_attn_out", RESID}
    ax = zscore_figure(broken).axes[0]
    assert any(label.startswith("failed (") for label in _legend_labels(ax))


def test_parallel_calibration_is_the_same_calibration():
    # The calibration in a second process gives the numbers calibrate() gives here.
    small = SPEC.replace(d_model=16, n_heads=2, seq_len=4)
    report = verify.run(small, samples=100, seed=2, calibration_runs=3, parallel=True)
    here = verify.calibrate(runs=3, samples=100, seed=2 + CALIBRATION_SEED_OFFSET)
    a, b = report.calibration.to_dict(), here.to_dict()
    a.pop("wall_time_s"), b.pop("wall_time_s")
    assert a == b


def test_distribution_checks(report):
    checks = report.distributions
    assert [d.tap for d in checks] == list(LAW_TAPS)
    assert all(d.passed and d.n == 300 and d.position == 16 and 0 < d.p_value <= 1 for d in checks)
    # The same verdict type as the moment checks: p-value against Holm's level.
    assert all(isinstance(d.verdict, verify.Verdict) and d.p_value > d.verdict.threshold for d in checks)
    # The same draws against the law of a spec with sigma_q twice too large: q and the logits fail.
    wrong, _ = distribution_checks(SPEC.replace(sigma_q=2 * SPEC.sigma_q), report.simulation, 16)
    failed = {d.tap for d in wrong if not d.passed}
    assert failed == {"blocks.0.attn.hook_q", "blocks.0.attn.hook_attn_scores"}


def test_distribution_figure(report):
    fig = distribution_figure(report)
    axes = [ax for ax in fig.axes if ax.axison]
    n = len(report.distributions)
    assert n == 6 and len(axes) == 2 * n  # a histogram row and a CDF-difference row
    # three panels across; each block is a density row above its CDF-difference row
    hists = [axes[(j // 3) * 6 + j % 3] for j in range(n)]
    diffs = [axes[(j // 3) * 6 + 3 + j % 3] for j in range(n)]
    assert fig.get_suptitle().endswith("m = 16")
    for j, (ax, diff, check) in enumerate(zip(hists, diffs, report.distributions)):
        assert ax.get_title() == check.tap.split('.', 2)[-1]
        assert len(ax.patches) == 40  # the histogram's bars
        exact, gaussian = ax.get_lines()[:2]
        law = report.laws[check.tap]
        np.testing.assert_allclose(exact.get_ydata(), law.pdf(exact.get_xdata()), rtol=1e-9)
        sim_diff, gauss_diff = diff.get_lines()[:2]
        x = sim_diff.get_xdata()
        assert len(x) == check.n and np.all(np.diff(x) >= 0)   # every draw, sorted
        # the empirical CDF minus the law's, recomputed: its largest |value| is the KS distance (to 1/2n)
        empirical = (np.arange(1, len(x) + 1) - 0.5) / len(x)
        np.testing.assert_allclose(sim_diff.get_ydata(), empirical - law.cdf(x), atol=1e-12)
        assert np.abs(sim_diff.get_ydata()).max() <= 1.36 / np.sqrt(check.n) + 1 / check.n   # the checks passed
        assert diff.get_ylabel() == "CDF difference"
    fig.draw_without_rendering()  # tick labels and offset texts are made at draw time
    for ax in axes:  # no '1e-2' offset under the axis, where it collides with the label
        assert ax.xaxis.get_offset_text().get_text() == "", (ax.get_title(), ax.xaxis.get_offset_text().get_text())
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert labels == ["simulation (300 networks)", "theory (exact law)", "Gaussian (paper)", "KS 95% band",
                      "simulation - exact", "Gaussian - exact"]


def test_gaussian_failure_columns(report):
    for d in report.distributions:
        assert 0 <= d.gaussian_p_value <= 1
        if d.tap.endswith("hook_resid_pre"):
            assert d.gaussian_distance == 0 and d.n_detect == float("inf")
    scores = next(d for d in report.distributions if d.tap.endswith("scores"))
    # one score is a variance-gamma law with excess kurtosis ~6/d_head: far from Gaussian at small d_head
    assert scores.gaussian_distance > 1e-3 and scores.n_detect < 1e7


# ------------------------------------------------------------------ report.tex: captions and math
def _running_text(tex: str) -> str:
    """report.tex without what may hold underscores and math: math, code, labels, paths, comments."""
    import re

    tex = re.sub(r"(?m)%.*$", "", tex)
    tex = re.sub(r"\$[^$]*\$", "", tex)
    for command in ("texttt", "label", "ref", "eqref", "input", "includegraphics", "reportfigure", "tt"):
        tex = re.sub(r"\\" + command + r"(\[[^\]]*\])?\{[^{}]*(\{[^{}]*\}[^{}]*)*\}", "", tex)
    return tex


def test_report_tex_has_real_captions_and_math_in_math_mode(written, report):
    from verify.report.report_tex import TEX_CAPTIONS

    out, _ = written
    tex = (out / "report.tex").read_text()
    for name in ("variance", "sum_sq", "zscores", "distributions"):
        assert f"\\caption{{{TEX_CAPTIONS[name]}}}\\label{{fig:{name.replace('_', '-')}}}" in tex, name
    text = _running_text(tex)
    assert "_" not in text.replace("\\_", ""), [l for l in text.splitlines() if "_" in l.replace("\\_", "")][:3]
    assert "sigma" not in text and "!=" not in text and "sqrt(" not in text


def test_report_sentences_in_latex():
    from verify.report.latex import sentence_tex

    sentence = ("`hook_resid_mid`: the error grows with depth, from 1.20% at layer 0 to 3.40% at layer 2 (m = 64, "
                "theory above simulation, z = +2.1; beyond the declared 5%). Most likely what breaks: sigma_q "
                "small; largest |error| per layer; tau_bar^2 below 1")
    tex = sentence_tex(sentence)
    assert tex.startswith(r"\texttt{hook\char95{}resid\char95{}mid}: ")
    for piece in (r"$m = 64$", r"$z = +2.1$", r"3.40\%", r"$\sigma_{q}$", r"$|\mathrm{error}|$", r"$\bar{\tau}^{2}$"):
        assert piece in tex, piece
    assert "_" not in _running_text(tex)


def test_written_report_tex_compiles(written, tmp_path):
    import shutil

    from verify.report.report_tex import compile_pdf

    if shutil.which("pdflatex") is None:
        pytest.skip("needs pdflatex (texlive)")
    out, _ = written
    copy = tmp_path / "r"
    shutil.copytree(out, copy)
    pdf = compile_pdf(copy / "report.tex", runs=1)
    assert pdf.read_bytes()[:5] == b"%PDF-"
    # every figure at its own size (drawn at a paper's column widths, so its 8 pt fonts print at 8 pt)
    log = (copy / "report.log").read_text(errors="replace")
    natural = [float(w) for w in re.findall(r"<[^<>]*\.pdf, id=\d+, ([\d.]+)pt x [\d.]+pt>", log)]
    requested = [float(w) for w in re.findall(r"Requested size: ([\d.]+)pt x", log)]
    assert natural and len(natural) == len(requested)
    assert all(abs(n - r) < 1 for n, r in zip(natural, requested)), (natural, requested)
    assert "Overfull \\hbox" not in log


def test_report_tex_sets_figures_at_print_size(written):
    from verify.report.report_tex import FIGURE_PREAMBLE

    out, _ = written
    tex = (out / "report.tex").read_text()
    assert FIGURE_PREAMBLE in tex and "\\reportfigure{variance.pdf}" in tex and "width=0.85" not in tex
