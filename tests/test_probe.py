"""Position probes (issues #8, #17): known answers on planted signals, seeds, results layout, CLI,
and the quenched theory's predicted probe error against the measured one."""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulate.experiments.probe import cli as _probe_cli
from simulate.experiments.probe import (
    ProbeConfig,
    fit_scalar,
    mean_cosines,
    tune_mlp,
    fit_mlp,
    fit_ridge,
    fit_variance_only,
    invert_variance_curve,
    position_metrics,
    probe_experiment,
    resolution_length,
    theory_resolution,
)
from theory import ModelSpec
from theory.information import predicted_probe
from tests.simulate_helpers import one_thread  # noqa: F401  (the fixture, by name)

pytestmark = pytest.mark.usefixtures("one_thread")

T = 16
TINY = ModelSpec(d_model=16, n_heads=2, n_layers=2, seq_len=8, vocab_size=50, sigma_q=0.3, sigma_k=0.3)


def _chi2_second_moments(curve, n, dof, seed):
    """s = v(m) chi^2_k / k for every position of n sequences, (n, T)."""
    rng = np.random.default_rng(seed)
    return curve[None, :] * rng.chisquare(dof, size=(n, len(curve))) / dof


# ---------------------------------------------------------------- metrics
def test_position_metrics_known_values():
    m = np.arange(1, T + 1)
    perfect = position_metrics(m.astype(float), m, m)
    assert perfect == {"mae": 0.0, "mad": 0.0, "r2": 1.0, "r2_log": 1.0}
    const = position_metrics(np.full(T, m.mean()), np.full(T, 8), m)
    assert const["r2"] == pytest.approx(0.0, abs=1e-12)
    assert const["mae"] == pytest.approx(np.mean(np.abs(m - m.mean())))
    assert const["mad"] == pytest.approx(np.mean(np.abs(m - 8)))
    assert resolution_length(np.array([0.1, 0.5, 2.0])) == 3
    assert resolution_length(np.zeros(4)) is None


# ---------------------------------------------------------------- the theory probe: inversion of a curve
def test_inverting_a_curve_recovers_position_without_training():
    curve = 0.2 + 1.0 / np.arange(1, T + 1)  # a 1/m shrinkage over a floor
    exact = invert_variance_curve(curve, curve, dof=1e9)  # noiseless observations
    assert exact.cls.tolist() == list(range(1, T + 1))
    assert np.allclose(exact.point, np.arange(1, T + 1), atol=1e-6)
    # chi-square noise with k = 256 channels: early positions exact, the error grows with m
    s = _chi2_second_moments(curve, 400, 256, seed=1)
    est = invert_variance_curve(curve, s, dof=256)
    err = np.abs(est.cls.reshape(400, T) - np.arange(1, T + 1)).mean(axis=0)
    assert err[0] < 0.05 and err[1] < 0.3
    assert err[-4:].mean() > 1.0 > err[:3].mean()
    # the resolution the curve predicts is where the observed class error reaches one position
    predicted = theory_resolution(curve, 256)
    observed = resolution_length(err)
    assert predicted is not None and observed is not None and abs(predicted - observed) <= 2


def test_inverting_a_non_monotone_curve_takes_the_nearest_value():
    curve = np.array([4.0, 2.0, 1.0, 2.5, 3.0])  # falls, then rises
    est = invert_variance_curve(curve, np.array([1.0, 2.4, 3.1, 3.9]), dof=1e6)
    assert est.cls.tolist() == [3, 4, 5, 1]
    with pytest.raises(ValueError, match="curve"):
        invert_variance_curve(np.array([1.0, -1.0]), np.array([1.0]), dof=10)
    with pytest.raises(ValueError, match="dof"):
        invert_variance_curve(curve, np.array([1.0]), dof=0)


# ---------------------------------------------------------------- trained probes on synthetic signals
def test_variance_only_probe_learns_the_curve_from_data():
    curve = 0.5 + 2.0 / np.arange(1, T + 1)
    s_tr = _chi2_second_moments(curve, 300, 512, seed=2)
    s_te = _chi2_second_moments(curve, 200, 512, seed=3)
    est = fit_variance_only(s_tr, s_te)
    err = np.abs(est.cls.reshape(200, T) - np.arange(1, T + 1)).mean(axis=0)
    assert err[:3].max() < 0.2
    assert est.info["dof_effective"] == pytest.approx(512, rel=0.15)
    shuffled = fit_variance_only(s_tr[:, ::-1], s_te)  # wrong curve: must do much worse
    assert np.abs(shuffled.cls - np.tile(np.arange(1, T + 1), 200)).mean() > 3 * np.abs(est.cls - np.tile(np.arange(1, T + 1), 200)).mean()


def _linear_signal(n, seed, noise=0.3, d=6):
    rng = np.random.default_rng(seed)
    m = np.tile(np.arange(1, T + 1), n)
    X = rng.normal(size=(len(m), d))
    X[:, 0] = m + noise * X[:, 0]  # position is linear in one direction
    X[:, 1] = X[:, 1] * noise + np.log(m)
    return X, m


def test_ridge_probe_recovers_a_linear_position_code():
    X_tr, y_tr = _linear_signal(40, 0)
    X_va, y_va = _linear_signal(10, 1)
    X_te, y_te = _linear_signal(20, 2)
    est = fit_ridge(X_tr, y_tr.astype(float), X_va, y_va.astype(float), X_te, T)
    metrics = position_metrics(est.point, est.cls, y_te)
    assert metrics["r2"] > 0.95 and metrics["mae"] < 1.0
    noise = fit_ridge(X_tr[:, 2:], y_tr.astype(float), X_va[:, 2:], y_va.astype(float), X_te[:, 2:], T)
    assert position_metrics(noise.point, noise.cls, y_te)["r2"] < 0.05  # pure noise features: nothing


def test_mlp_probe_classifies_positions_and_is_seeded():
    rng = np.random.default_rng(4)
    codes = rng.normal(size=(T, 8))  # one random code per position: not linear in m

    def data(n):
        m = np.tile(np.arange(1, T + 1), n)
        return codes[m - 1] + 0.3 * rng.normal(size=(len(m), 8)), m

    (X_tr, y_tr), (X_va, y_va), (X_te, y_te) = data(60), data(10), data(20)
    est = fit_mlp(X_tr, y_tr, X_va, y_va, X_te, T, seed=5, hidden=64, epochs=30, batch=256)
    assert position_metrics(est.point, est.cls, y_te)["mad"] < 0.3
    again = fit_mlp(X_tr, y_tr, X_va, y_va, X_te, T, seed=5, hidden=64, epochs=30, batch=256)
    assert np.array_equal(est.point, again.point)


# ---------------------------------------------------------------- planted signals of known strength
def _planted_log_s(n, T, sd, seed):
    rng = np.random.default_rng(seed)
    mu = -np.log(np.arange(1, T + 1.0))  # a 1/m variance
    return mu, np.exp(mu[None, :] + sd * rng.normal(size=(n, T)))


def test_variance_only_probe_reaches_the_bayes_error_of_a_planted_law():
    T, sd = 32, 0.25
    mu, s_tr = _planted_log_s(400, T, sd, 10)
    _, s_te = _planted_log_s(300, T, sd, 11)
    est = fit_variance_only(s_tr, s_te)
    measured = position_metrics(est.point, est.cls, np.tile(np.arange(1, T + 1), 300))
    pred = predicted_probe(mu, np.full(T, sd**2))
    assert measured["mae"] == pytest.approx(pred["mae"], rel=0.08)
    assert measured["r2_log"] == pytest.approx(pred["r2_log"], abs=0.03)
    weak = predicted_probe(mu, np.full(T, (2 * sd) ** 2))["mae"]
    assert weak > 1.4 * pred["mae"]  # the test can tell a planted strength from twice the noise


def test_a_full_state_probe_with_the_log_norm_reads_norm_coded_position():
    """Position only in the norm of a 16-dim Gaussian state: the MLP on state + log-norm must come
    close to the Bayes error of the norm, the linear probe must find nothing."""
    T, d = 8, 16
    rng = np.random.default_rng(12)
    scale = np.sqrt(1.0 / np.arange(1, T + 1))

    def data(n):
        X = rng.normal(size=(n, T, d)) * scale[None, :, None]
        logn = np.log((X**2).mean(axis=-1))
        return np.concatenate([X, logn[..., None]], axis=-1).reshape(n * T, d + 1), np.tile(np.arange(1, T + 1), n)

    (X_tr, y_tr), (X_va, y_va), (X_te, y_te) = data(300), data(60), data(100)
    est, cfg = tune_mlp(X_tr, y_tr, X_va, y_va, X_te, T, seed=1, grid=((64, 3e-3),), epochs=40)
    full = position_metrics(est.point, est.cls, y_te)["mae"]
    # the law of log(chi^2_d/d) at this d: mean log(1/m) + psi(d/2) - log(d/2), variance psi'(d/2)
    from scipy.special import polygamma
    var = float(polygamma(1, d / 2))
    bayes = predicted_probe(np.log(scale**2), np.full(T, var))["mae"]
    assert full < 1.15 * bayes
    ridge = fit_ridge(X_tr[:, :d], y_tr.astype(float), X_va[:, :d], y_va.astype(float), X_te[:, :d], T)
    assert position_metrics(ridge.point, ridge.cls, y_te)["r2"] < 0.05
    assert est.info["epochs"] >= 1 and cfg == (64, 3e-3)


def test_mean_cosines_and_the_cosine_probe_on_a_planted_prefix_average():
    rng = np.random.default_rng(13)
    T, d, n = 8, 64, 200
    v = rng.normal(size=(n, T, d))
    h = np.cumsum(v, axis=1) / np.arange(1, T + 1)[None, :, None]  # uniform causal average
    cos = mean_cosines(h)
    u = h / np.linalg.norm(h, axis=-1, keepdims=True)
    loop = np.array([[sum(u[k, i] @ u[k, j] for j in range(T) if j != i) / (T - 1) for i in range(T)] for k in range(3)])
    np.testing.assert_allclose(cos[:3], loop, rtol=1e-12)
    m = np.arange(1, T + 1)
    expected = [(np.sqrt(np.minimum(i, m) / np.maximum(i, m)).sum() - 1) / (T - 1) for i in m]
    np.testing.assert_allclose(cos.mean(axis=0), expected, atol=0.03)
    est = fit_scalar(cos[:150], cos[150:])
    chance = np.mean(np.abs(m - np.median(m)))
    assert position_metrics(est.point, est.cls, np.tile(m, 50))["mae"] < 0.8 * chance  # non-monotone: a middle peak
    noise = fit_scalar(rng.normal(size=(150, T)), rng.normal(size=(50, T)))
    assert position_metrics(noise.point, noise.cls, np.tile(m, 50))["mae"] > 0.9 * chance


# ---------------------------------------------------------------- the pipeline
def test_pipeline_is_reproducible_and_has_the_results_layout():
    cfg = ProbeConfig(spec=TINY, positionals=("none", "learned", "alibi"), sequences=24, networks=2, seed=3,
                      sigmas=(0.1,), sweep_probes=("variance_only",), mlp_epochs=2, mlp_grid=((16, 3e-3),))
    first, _ = probe_experiment(cfg, progress=False)
    second, _ = probe_experiment(cfg, progress=False)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert list(first["variants"]) == ["none", "learned", "alibi"]
    kinds = ["attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post"]
    for variant, body in first["variants"].items():
        assert [(r["layer"], r["tap_kind"]) for r in body["layers"]] == [(l, k) for l in range(2) for k in kinds]
        for row in body["layers"]:
            assert row["tap"] == f"blocks.{row['layer']}.{row['tap_kind']}"
            full = row["tap_kind"] in ("hook_attn_out", "hook_resid_post")
            probes = {"variance_only", "cosine"} | ({"linear", "mlp", "full"} if full else set()) \
                | ({"theory"} if variant == "none" else set())
            assert probes == set(row) & {"linear", "mlp", "full", "variance_only", "theory", "cosine"}, (variant, row["tap"])
            assert ("quenched" in row) == (variant == "none")
            for p in probes:
                for key in ("mae", "mad", "r2", "r2_log", "mae_se", "mad_se", "r2_se", "r2_log_se"):
                    assert isinstance(row[p][key], float), (variant, p, key)
    assert first["sigma_sweep"][0]["sigma"] == 0.1
    other, _ = probe_experiment(ProbeConfig(**{**cfg.__dict__, "seed": 4}), progress=False)
    assert other["variants"]["none"]["layers"][0]["variance_only"] != first["variants"]["none"]["layers"][0]["variance_only"]


def test_taps_narrow_the_probe():
    cfg = ProbeConfig(spec=TINY, positionals=("none",), probes=("variance_only",), taps=("hook_attn_out",),
                      sequences=16, networks=1)
    results, _ = probe_experiment(cfg, progress=False)
    assert [r["tap"] for r in results["variants"]["none"]["layers"]] == ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out"]
    with pytest.raises(ValueError, match="taps"):
        ProbeConfig(spec=TINY, taps=("hook_q",))


@pytest.mark.parametrize("d, T", [(32, 16), (64, 32)])
def test_theory_predicts_the_variance_only_probe_error(d, T):
    """Issue 17 item 6: the quenched law's predicted MAE (no training) against the measured one at
    layer 0's attention output; declared 12% (the probe's finite training set and O(1/d)) plus 2 SE."""
    spec = ModelSpec(d_model=d, n_heads=2, n_layers=1, seq_len=T, vocab_size=50257)
    cfg = ProbeConfig(spec=spec, positionals=("none",), probes=("variance_only", "theory"), taps=("attn.hook_z", "hook_attn_out"),
                      sequences=192, networks=2, seed=1)
    results, _ = probe_experiment(cfg, progress=False)
    for row in results["variants"]["none"]["layers"]:
        q, vo = row["quenched"], row["variance_only"]
        assert abs(vo["mae"] - q["mae_predicted"]) < 0.12 * q["mae_predicted"] + 2 * vo["mae_se"], (row["tap"], vo, q)
        assert abs(q["var_ratio"] - 1.0) < 0.1 + 3 * q["var_ratio_se"]
        assert row["theory"]["mae"] < 1.15 * q["mae_predicted"]


def test_cli_writes_every_output(tmp_path):
    spec_path = tmp_path / "spec.json"
    TINY.replace(n_layers=1).save(str(spec_path))
    out = tmp_path / "out"
    args = ["--spec", str(spec_path), "--positional", "none,sinusoidal", "--sequences", "16", "--networks", "2",
            "--sigmas", "none", "--mlp-epochs", "1", "--no-progress", "--out", str(out)]
    assert _probe_cli.main(args) == 0
    for name in ("results.json", "report.md", "table.md", "table.tex", "where_position.png", "probe_error.png",
                 "quenched_spread.png", "per_position.npz"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["spec"]["vocab_size"] == 50
    assert set(results["variants"]) == {"none", "sinusoidal"}
    report = (out / "report.md").read_text()
    assert report.index("## Where position lives") < report.index("## Tables")
    assert "Where position lives (NoPE" in report and "posterior median" in report


@pytest.mark.parametrize("args, message", [
    (["--positional", "none,absolute"], "--positional"),
    (["--probes", "linear,knn"], "--probes"),
    (["--taps", "hook_q"], "--taps"),
    (["--full-taps", "hook_q"], "--full-taps"),
    (["--preset", "paper", "--spec", "x.json"], "--preset"),
    (["--sequences", "3"], "sequences"),
    (["--networks", "0"], "networks"),
    (["--sigmas", "0.02,abc"], "--sigmas"),
    (["--sigma", "-1"], "--sigma"),
    (["--vocab-size", "many"], "--vocab-size"),
    (["--spec", "/nonexistent/spec.json"], "cannot read spec"),
    (["--sequences", "ten"], "invalid int"),
])
def test_cli_bad_input_exits_2_with_one_line(args, message, tmp_path, capsys):
    try:
        code = _probe_cli.main(args + ["--out", str(tmp_path / "o"), "--no-progress"])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_the_paper_preset_builds_the_papers_configuration():
    args = _probe_cli._parser().parse_args(["--preset", "paper", "--out", "x"])
    cfg = _probe_cli.build_config(args)
    assert (cfg.spec.d_model, cfg.spec.n_heads, cfg.spec.n_layers, cfg.spec.seq_len) == (768, 12, 12, 256)
    assert set(cfg.positionals) == {"none", "learned", "sinusoidal", "rope", "alibi"} and cfg.networks >= 3
    assert "blocks.11.hook_resid_post" in cfg.full_tap_names(cfg.spec)


def test_an_attention_only_spec_is_probed_at_its_block_output():
    """An attention-only block ends at hook_resid_post, as in TransformerLens (issue 14, item 6):
    it has no hook_resid_mid or hook_mlp_out; the probe reads the others, in every variant and the sweep."""
    spec = TINY.replace(attn_only=True, n_layers=2)
    cfg = ProbeConfig(spec=spec, positionals=("none", "rope"), probes=("linear", "variance_only", "theory"),
                      sequences=16, networks=1, seed=0, sigmas=(0.05,), sweep_probes=("variance_only",), mlp_epochs=1)
    results, curves = probe_experiment(cfg, progress=False)
    for variant in ("none", "rope"):
        rows = results["variants"][variant]["layers"]
        assert [r["tap_kind"] for r in rows] == ["attn.hook_z", "hook_attn_out", "hook_resid_post"] * 2
        for row in rows:
            assert np.isfinite(row["variance_only"]["mae"])
    post = [r for r in results["variants"]["none"]["layers"] if r["tap_kind"] == "hook_resid_post"]
    assert all("theory" in r and np.isfinite(r["theory"]["mae"]) for r in post), results["meta"].get("theory")
    assert results["sigma_sweep"][0]["layers"][-1]["tap"] == "blocks.1.hook_resid_post"
    assert ("sigma=0.05", "blocks.1.hook_resid_post", "variance_only") in curves


def test_the_specs_own_positional_schedule_is_probed_as_it_is():
    """--positional spec keeps a per-layer schedule (SmolLM3: RoPE on three layers of four); theory,
    which covers NoPE with the standard MLP only, says why it was skipped."""
    spec = TINY.replace(n_layers=2, positional=("rope", "none"), normalization="rmsnorm", mlp="swiglu")
    cfg = ProbeConfig(spec=spec, positionals=("spec",), probes=("variance_only", "theory"), taps=("hook_attn_out",),
                      sequences=16, networks=1)
    results, _ = probe_experiment(cfg, progress=False)
    assert list(results["variants"]) == ["spec"]
    assert results["meta"]["spec"]["positional"] == ["rope", "none"]
    assert all("theory" not in r for r in results["variants"]["spec"]["layers"])


# ---------------------------------------------------------------- bf16 frozen forward (issue 18, item 5)
def test_bf16_forward_leaves_the_probe_statistics_unchanged_within_their_errors(one_thread):
    """The probes read |h_m|^2/d per token and its mean cosine: with the frozen forward's matrix
    products in bfloat16, the per-position means over sequences move by far less than their
    standard errors (same network, same sequences: a paired comparison)."""
    import torch

    from simulate.experiments.probe.experiment import tap_features

    spec = ModelSpec(d_model=64, n_heads=4, n_layers=2, seq_len=32, vocab_size=300)
    taps = ["blocks.0.hook_attn_out", "blocks.0.attn.hook_z", "blocks.1.hook_resid_post"]
    cpu = torch.device("cpu")
    f32 = tap_features(spec, 64, 7, taps, set(), device=cpu, dtype=torch.float32)
    b16 = tap_features(spec, 64, 7, taps, set(), device=cpu, dtype=torch.bfloat16)
    for name in taps:
        for key in ("s", "cos"):
            a, b = f32[name][key], b16[name][key]
            se = a.std(axis=0, ddof=1) / np.sqrt(a.shape[0])  # the probes' own error on a per-position mean
            shift = np.abs(b.mean(axis=0) - a.mean(axis=0))
            assert np.all(shift < 0.2 * se), (name, key, float(np.max(shift / se)))
            assert not np.array_equal(a, b)  # bf16 did run: the numbers are not the float32 ones


def test_probe_dtype_is_validated():
    with pytest.raises(ValueError, match="dtype must be one of 'float32', 'bfloat16', 'float16'; got 'int8'"):
        ProbeConfig(spec=ModelSpec(d_model=32, n_heads=2, n_layers=1, seq_len=16), dtype="int8")


def _stored_results():
    """A tiny stored result (results.json's shape): 2 variants, 2 layers, 2 taps, 2 probes."""
    rows = []
    for layer in (0, 1):
        for kind in ("attn.hook_z", "hook_resid_post"):
            row = {"tap": f"blocks.{layer}.{kind}", "tap_kind": kind, "layer": layer,
                   "linear": {"mae": 5.0 + layer, "mae_se": 0.3, "r2_log": 0.8},
                   "variance_only": {"mae": 4.0 + layer, "mae_se": 0.2, "r2_log": 0.9}}
            if layer == 0:
                row["quenched"] = {"mae_predicted": 4.2, "var_ratio": 1.0, "var_ratio_se": 0.05,
                                   "var_within_measured_at": {"1": 0.5, "4": 0.3, "16": 0.1},
                                   "var_within_predicted_at": {"1": 0.52, "4": 0.29, "16": 0.11}}
            rows.append(row)
    return {"meta": {"spec": {"seq_len": 16, "n_layers": 2}},
            "variants": {"none": {"layers": rows}, "sinusoidal": {"layers": [dict(r) for r in rows]}}}


def test_probe_figures_in_the_shared_style_name_every_variant(tmp_path):
    """Issue 21 item 4: the probe figures are drawn from stored results in theory.figure_style,
    legends name every variant and probe, the compared panels share one y scale, layers 0-based."""
    from simulate.experiments.probe import report as probe_report
    from theory.figure_style import FONT_SIZE, TWO_COLUMNS

    results = _stored_results()
    fig = probe_report.probe_error_figure(results)
    labels = [t.get_text() for legend in fig.legends for t in legend.get_texts()]
    for variant in results["variants"]:
        assert f"variant {variant}" in labels, labels
    for probe in ("linear", "variance_only"):
        assert probe_report.PROBE_LABELS[probe] in labels
    assert "predicted (quenched theory)" in labels and "constant guess" in labels
    axes = fig.axes
    assert len(axes) == 2 and axes[0].get_ylim() == axes[1].get_ylim()
    assert list(axes[0].get_xticks()) == [0, 1]
    assert fig.get_figwidth() <= TWO_COLUMNS
    assert min(t.get_fontsize() for t in labels and fig.legends[0].get_texts()) >= FONT_SIZE - 1
    spread = probe_report.quenched_spread_figure(results)
    spread_labels = [t.get_text() for t in spread.axes[0].get_legend().get_texts()]
    assert all(any(s.startswith(v) for s in spread_labels) for v in results["variants"])
    written = probe_report.figures(results, {}, tmp_path)
    assert {"probe_error.png", "probe_error.pdf", "where_position.png", "quenched_spread.pdf"} <= set(written)
    assert (tmp_path / "probe_error.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
