"""Issue 13 (items 2 and 3), the simulate side: non-finite samples are counted and left
out (never a LinAlgError), a run of nothing usable says so (null statistics, exit 1), and
sizes that cannot fit are refused before any allocation, with the field, the estimate and
the limit in one line (exit 2)."""

from __future__ import annotations

import json
import math
import time
import warnings

import numpy as np
import pytest
import torch

import simulate
from simulate import SimulationResult
from simulate.__main__ import main
from simulate import NothingUsableWarning, psd_root
from simulate.engine import Accumulator
from simulate.experiments.probe import ProbeConfig, check_probe_size
from theory import ModelSpec
from tests.simulate_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

BASE = dict(d_model=8, n_heads=2, n_layers=1, seq_len=8)


def _spec_file(tmp_path, **changes):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(dict(BASE, **changes)))  # ints stay exact ints (10**300 included)
    return path


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert len(lines[0]) <= 300, lines[0]
    assert "Traceback" not in text and "internal error" not in text
    return lines[0]


def _strict_json(path):
    def refuse(name):
        raise AssertionError(f"{path} holds the non-JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


# ====================================================================== A, B: NaN/inf samples
ALL_NONFINITE = [
    pytest.param(dict(sigma_q=1e20, sigma_k=1e20), "float32", "annealed", id="sigma_qk=1e20"),
    pytest.param(dict(sigma_embed=1e30, ln_eps=0.0), "float32", "annealed", id="sigma_embed=1e30"),
    pytest.param(dict(sigma_embed=1e-30, ln_eps=0.0), "float32", "annealed", id="sigma_embed=1e-30"),
    pytest.param(dict(sigma_embed=1e-200, ln_eps=0.0), "float64", "annealed", id="sigma_embed=1e-200-f64"),
    pytest.param(dict(sigma_embed=1e-30, ln_eps=0.0, n_layers=2), "float32", "quenched", id="quenched"),
]


@pytest.mark.parametrize("changes, dtype, measure", ALL_NONFINITE)
def test_every_sample_nonfinite_writes_null_and_exits_1(tmp_path, capsys, changes, dtype, measure):
    spec = _spec_file(tmp_path, **changes)
    out = tmp_path / "r.json"
    code = main(["run", "--spec", str(spec), "--samples", "8", "--seed", "0", "--chunk-size", "4",
                 "--dtype", dtype, "--measure", measure, "--no-progress", "--out", str(out)])
    assert code == 1
    line = _one_line(capsys.readouterr().err)
    assert "nothing usable" in line
    data = _strict_json(out)  # valid JSON: null, never NaN
    assert data["meta"]["nonfinite_samples"] == 8  # every sample drawn
    assert data["meta"]["nonfinite_indices"] == list(range(8))
    for per_pos in data["stats"].values():
        for entry in per_pos.values():
            assert entry["n"] == 0 and entry["n_values"] == 0
            assert entry["mean"] is None and entry["var"] is None
    loaded = SimulationResult.load(out)
    for tap in loaded:
        assert loaded[tap].n == 0 and np.isnan(loaded[tap].mean).all() and np.isnan(loaded[tap].var).all()
    (tmp_path / "r.npz").unlink()  # the JSON alone reads back too
    assert np.isnan(SimulationResult.load(out)[loaded.taps[0]].mean).all()


def test_every_sample_nonfinite_in_the_api_is_nan_with_a_warning():
    spec = ModelSpec(**BASE, sigma_embed=1e30, ln_eps=0.0)
    with pytest.warns(NothingUsableWarning, match="nothing usable"):
        result = simulate.run(spec, samples=6, chunk_size=4, device="cpu", progress=False)
    assert result.meta["nonfinite_samples"] == 6
    for tap in result:
        ts = result[tap]
        assert ts.n == 0
        for name in ("mean", "var", "m2", "m3", "m4"):
            assert np.isnan(getattr(ts, name)).all(), name
    with pytest.raises(ValueError):  # a strict JSON writer would refuse NaN: to_dict has None
        json.dumps(float("nan"), allow_nan=False)
    json.dumps(result.to_dict(), allow_nan=False)


def test_partly_nonfinite_run_exits_0_and_counts(tmp_path, capsys, monkeypatch):
    """Network 1 of each chunk of 4 made NaN: samples 1 and 5 are left out, the rest kept."""
    import simulate.engine.sampler as sampler_module

    real_forward = sampler_module.forward

    def poisoned(spec, x, project, record=()):
        cache = real_forward(spec, x, project, record=record)
        for value in cache.values():
            value[1] = float("nan")
        return cache

    monkeypatch.setattr(sampler_module, "forward", poisoned)
    spec = _spec_file(tmp_path)
    out = tmp_path / "r.json"
    code = main(["run", "--spec", str(spec), "--samples", "8", "--seed", "0", "--chunk-size", "4",
                 "--taps", "blocks.0.attn.hook_z", "--no-progress", "--out", str(out)])
    assert code == 0
    err = capsys.readouterr().err
    assert "2 sample(s) gave NaN/inf" in err and "nothing usable" not in err
    data = _strict_json(out)
    assert data["meta"]["nonfinite_samples"] == 2 and data["meta"]["nonfinite_indices"] == [1, 5]
    entry = data["stats"]["blocks.0.attn.hook_z"]["3"]
    assert entry["n"] == 6 and math.isfinite(entry["mean"]) and entry["var"] > 0


def test_psd_root_gives_nan_for_a_nonfinite_gram_and_keeps_the_others():
    torch.manual_seed(0)
    a = torch.randn(5, 3, dtype=torch.float64)
    singular = a @ a.T  # rank 3 of 5: Cholesky fails, eigh is needed
    grams = torch.stack([singular, singular.clone(), singular.clone()]).float()
    grams[1, 2, 0] = float("nan")
    grams[2, 4, 4] = float("inf")
    root = psd_root(grams)
    assert torch.isnan(root[1]).all() and torch.isnan(root[2]).all()
    assert torch.isfinite(root[0]).all()
    torch.testing.assert_close((root[0].double() @ root[0].double().T), singular, atol=1e-4, rtol=1e-4)
    assert torch.equal(root[0], root[0].tril())


def test_psd_root_falls_back_per_matrix_when_eigh_fails(monkeypatch):
    """A batch in which LAPACK fails on one matrix loses that matrix only."""
    real_eigh = torch.linalg.eigh

    def flaky(mat):
        if bool((mat[..., 0, 0] == 7.0).any()):  # the marked matrix never converges
            raise torch.linalg.LinAlgError("did not converge")
        return real_eigh(mat)

    monkeypatch.setattr(torch.linalg, "eigh", flaky)
    a = torch.randn(4, 2, dtype=torch.float64)
    singular = a @ a.T
    marked = singular.clone()
    marked[0, 0] = 7.0
    root = psd_root(torch.stack([singular, marked, singular]))
    assert torch.isnan(root[1]).all()
    for i in (0, 2):
        torch.testing.assert_close(root[i] @ root[i].T, singular, atol=1e-10, rtol=1e-10)


def test_statistics_of_zero_units_are_nan():
    acc = Accumulator([("t", "value")], n_positions=3)
    acc.add(np.zeros(0, dtype=np.int64), np.zeros((4, 0, 1, 3)), np.ones((1, 3)), completed=64)
    final = acc.finalize()
    assert final["n_values"].tolist() == [[0, 0, 0]]
    for key in ("mean", "var", "mean_se", "var_se", "m2", "m3", "m4"):
        assert np.isnan(final[key]).all(), key


# ====================================================================== C: size guards
HUGE = [
    pytest.param(dict(d_model=10**9), "d_model", id="d_model=1e9"),
    pytest.param(dict(d_model=10**20), "d_model", id="d_model=1e20"),
    pytest.param(dict(d_model=10**400), "d_model", id="d_model=1e400"),
    pytest.param(dict(n_layers=10**9), "n_layers", id="n_layers=1e9"),
    pytest.param(dict(n_layers=10**300), "n_layers", id="n_layers=1e300"),
    pytest.param(dict(seq_len=10**9), "seq_len", id="seq_len=1e9"),
    pytest.param(dict(n_layers=10**9, attn_only=True), "n_layers", id="n_layers=1e9-attn-only"),
]


@pytest.mark.parametrize("changes, field", HUGE)
@pytest.mark.parametrize("measure", ["annealed", "quenched"])
def test_run_refuses_sizes_that_cannot_fit_in_one_line(tmp_path, capsys, changes, field, measure):
    spec = _spec_file(tmp_path, **changes)
    out = tmp_path / "r.json"
    t0 = time.perf_counter()
    code = main(["run", "--spec", str(spec), "--samples", "8", "--seed", "0", "--measure", measure,
                 "--no-progress", "--out", str(out)])
    assert time.perf_counter() - t0 < 5.0  # refused from the estimate, nothing allocated or looped
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"simulate: error: {field} = ")
    assert "limit" in line or "2^63" in line
    assert not out.exists()


def test_the_message_names_the_estimate_and_the_limit(tmp_path, capsys):
    spec = _spec_file(tmp_path, d_model=10**9)
    assert main(["run", "--spec", str(spec), "--samples", "8", "--seed", "0", "--out", str(tmp_path / "r.json")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "needs about" in line and " TB" in line  # at least 10^9 * 10^9 / 8 weights do not fit
    assert "limit" in line and "of RAM available" in line and "--force" in line


def test_the_time_guard_refuses_a_billion_layers_by_its_work_estimate():
    spec = ModelSpec(**dict(BASE, n_layers=10**9))
    with pytest.raises(ValueError, match=r"^n_layers = 1000000000: .* flop.*limit 1 day"):
        simulate.run(spec, samples=8, device="cpu", memory_limit=1e30)  # memory not in the way
    with pytest.raises(ValueError, match=r"^samples = 1000000000000: .*flop"):
        simulate.run(ModelSpec(**BASE), samples=10**12, device="cpu")


def test_force_and_explicit_limits():
    spec = ModelSpec(**BASE)
    with pytest.raises(ValueError, match="limit 1 bytes .*memory_limit"):
        simulate.run(spec, samples=4, device="cpu", memory_limit=1)
    with pytest.raises(ValueError, match="limit 1e-06 s"):
        simulate.run(spec, samples=4, device="cpu", time_limit=1e-6)
    result = simulate.run(spec, samples=4, device="cpu", memory_limit=1, time_limit=1e-6, force=True, progress=False)
    assert result["hook_resid_pre", 0].n == 4
    with pytest.raises(ValueError, match="memory_limit must be a positive number"):
        simulate.run(spec, samples=4, device="cpu", memory_limit=-5)
    # beyond 2^63 bytes even force does not try
    with pytest.raises(ValueError, match=r"^d_model = .*2\^63"):
        simulate.run(ModelSpec(**dict(BASE, d_model=10**20)), samples=1, device="cpu", force=True)


def test_cli_force_runs_past_the_limits(tmp_path, capsys, monkeypatch):
    import simulate.engine.budget as budget

    monkeypatch.setattr(budget, "TIME_LIMIT_S", 1e-9)  # every run is now "too long"
    spec = _spec_file(tmp_path)
    argv = ["run", "--spec", str(spec), "--samples", "4", "--seed", "0", "--no-progress"]
    assert main(argv + ["--out", str(tmp_path / "a.json")]) == 2
    assert "--force" in _one_line(capsys.readouterr().err)
    assert main(argv + ["--out", str(tmp_path / "b.json"), "--force"]) == 0
    assert _strict_json(tmp_path / "b.json")["meta"]["nonfinite_samples"] == 0


def test_activations_are_guarded_too():
    with pytest.raises(ValueError, match=r"^n_layers = 1000000000: "):
        simulate.activations(ModelSpec(**dict(BASE, n_layers=10**9)), device="cpu")


@pytest.mark.parametrize("changes, field", [
    (dict(vocab_size=10**12), "vocab_size"),
    (dict(d_model=10**9), "d_model"),
    (dict(seq_len=10**6), "seq_len"),
    (dict(n_layers=10**9), "n_layers"),
])
def test_probe_refuses_sizes_that_cannot_fit(tmp_path, capsys, changes, field):
    spec = _spec_file(tmp_path, **changes)
    t0 = time.perf_counter()
    code = main(["probe", "--spec", str(spec), "--sequences", "16", "--networks", "1", "--sigmas", "none",
                 "--no-progress", "--out", str(tmp_path / "probe")])
    assert time.perf_counter() - t0 < 5.0
    assert code == 2
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"simulate probe: error: {field} = ")


def test_probe_force_skips_the_limits():
    cfg = ProbeConfig(spec=ModelSpec(**dict(BASE, vocab_size=50)), sequences=16, networks=1)
    with pytest.raises(ValueError, match="memory_limit"):
        check_probe_size(cfg, memory_limit=1)
    est = check_probe_size(cfg, memory_limit=1, force=True)
    assert 0 < est["bytes"] < 1e9 and est["seconds"] < 60
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_probe_size(cfg)["bytes"] == est["bytes"]
