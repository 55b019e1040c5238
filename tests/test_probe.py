"""Position probes (issue #8): known answers on synthetic signals, seeds, results layout, CLI."""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pytest

import theory
from simulate.experiments.probe import cli as _probe_cli
from simulate.experiments.probe import (
    ProbeConfig,
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
from tests.simulate_helpers import one_thread  # noqa: F401

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


# ---------------------------------------------------------------- the pipeline
def _fake_depth(calls):
    """A stand-in for theory.depth with the agreed API: a 1/m curve per layer."""

    class Prediction:
        def __init__(self, spec):
            self.spec = spec

        def var(self, tap, layer):
            assert tap == "hook_resid_post"
            return 1e-3 * (1.0 + layer) + 2e-3 / np.arange(1, self.spec.seq_len + 1)

    def predict(spec):
        calls.append(spec)
        return Prediction(spec)

    return types.SimpleNamespace(predict=predict)


def test_pipeline_is_reproducible_and_has_the_results_layout(monkeypatch):
    calls = []
    monkeypatch.setattr(sys.modules["simulate.experiments.probe.experiment"], "depth", _fake_depth(calls))
    cfg = ProbeConfig(spec=TINY, positionals=("none", "learned", "alibi"), sequences=24, networks=2, seed=3,
                      sigmas=(0.1,), sweep_probes=("variance_only",), mlp_epochs=2, mlp_hidden=16)
    first, _ = probe_experiment(cfg, progress=False)
    second, _ = probe_experiment(cfg, progress=False)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    assert list(first["variants"]) == ["none", "learned", "alibi"]
    for variant, body in first["variants"].items():
        assert [row["layer"] for row in body["layers"]] == [0, 1]
        for row in body["layers"]:
            probes = {"linear", "mlp", "variance_only"} | ({"theory"} if variant == "none" else set())
            assert probes <= set(row) and ("theory" in row) == (variant == "none")
            for p in probes:
                for key in ("mae", "mad", "r2", "r2_log", "mae_se", "mad_se", "r2_se", "r2_log_se"):
                    assert isinstance(row[p][key], float), (variant, p, key)
    assert calls and all(s.positional == "none" for s in calls)
    assert first["sigma_sweep"][0]["sigma"] == 0.1
    other, _ = probe_experiment(ProbeConfig(**{**cfg.__dict__, "seed": 4}), progress=False)
    assert other["variants"]["none"]["layers"][0]["variance_only"] != first["variants"]["none"]["layers"][0]["variance_only"]


def test_cli_writes_every_output(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules["simulate.experiments.probe.experiment"], "depth", _fake_depth([]))
    spec_path = tmp_path / "spec.json"
    TINY.replace(n_layers=1).save(str(spec_path))
    out = tmp_path / "out"
    args = ["--spec", str(spec_path), "--positional", "none,sinusoidal", "--sequences", "16", "--networks", "2",
            "--sigmas", "none", "--mlp-epochs", "1", "--no-progress", "--out", str(out)]
    assert _probe_cli.main(args) == 0
    for name in ("results.json", "report.md", "table.md", "table.tex", "probe_error.png", "probe_error.pdf", "per_position.npz"):
        assert (out / name).exists(), name
    results = json.loads((out / "results.json").read_text())
    assert results["meta"]["spec"]["vocab_size"] == 50
    assert set(results["variants"]) == {"none", "sinusoidal"}
    assert "## Findings" in (out / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["--positional", "none,absolute"], "--positional"),
    (["--probes", "linear,knn"], "--probes"),
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


def test_an_attention_only_spec_is_probed_at_its_block_output():
    """An attention-only block ends at hook_resid_post, as in TransformerLens (issue 14, item 6):
    the probe reads it (it raised KeyError before), in every variant and the sigma sweep, and
    says so in the results."""
    spec = TINY.replace(attn_only=True, n_layers=2)
    cfg = ProbeConfig(spec=spec, positionals=("none", "rope"), probes=("linear", "variance_only"),
                      sequences=16, networks=1, seed=0, sigmas=(0.05,), sweep_probes=("variance_only",),
                      mlp_epochs=1, mlp_hidden=8)
    results, curves = probe_experiment(cfg, progress=False)
    assert results["meta"]["tap"] == "hook_resid_post"
    for variant in ("none", "rope"):
        for l, row in enumerate(results["variants"][variant]["layers"]):
            assert row["tap"] == f"blocks.{l}.hook_resid_post"
            assert np.isfinite(row["linear"]["mae"]) and np.isfinite(row["variance_only"]["mae"])
    assert results["sigma_sweep"][0]["layers"][1]["tap"] == "blocks.1.hook_resid_post"
    assert ("sigma=0.05", 1, "variance_only") in curves


def test_the_theory_probe_reads_an_attention_only_block_output():
    """theory.depth predicts the same tap for an attention-only block (hook_resid_post)."""
    spec = TINY.replace(attn_only=True, n_layers=1)
    cfg = ProbeConfig(spec=spec, positionals=("none",), probes=("variance_only", "theory"), sequences=16,
                      networks=1, seed=0, sigmas=(), mlp_epochs=1, mlp_hidden=8)
    results, _ = probe_experiment(cfg, progress=False)
    row = results["variants"]["none"]["layers"][0]
    assert row["tap"] == "blocks.0.hook_resid_post"
    assert "theory" in row, results["meta"].get("theory")
    assert np.isfinite(row["theory"]["mae"])
