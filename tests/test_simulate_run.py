"""`simulate.run`: reproducibility, resume, NaN handling, measures, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import simulate
import simulate.engine.runner as run_module
import simulate.engine.sampler as sampler_module
from simulate import SimulationResult
from tests.simulate_helpers import small_spec
from tests.simulate_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

TAPS = ["blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern", "blocks.1.hook_resid_post", "blocks.1.attn.hook_attn_scores"]
SPEC = small_spec(n_layers=2, attn_only=False, seq_len=10, sigma_q=0.5, sigma_k=0.5)


def _same(a: SimulationResult, b: SimulationResult) -> bool:
    return json.dumps(a.to_dict()["stats"]) == json.dumps(b.to_dict()["stats"]) and all(
        np.array_equal(x, b.arrays()[k], equal_nan=True) for k, x in a.arrays().items()
    )


def _close_to_rounding(a: SimulationResult, b: SimulationResult) -> bool:
    """Every array of ``a`` and ``b`` equal up to float32 rounding.

    A batched product may take another kernel for another shape (issue 13: under the
    quenched measure a chunk of c sequences is one GEMM over c * T rows, and AMX/AVX-512
    kernels differ by shape), which changes the summation order of each dot product of
    length K: a relative change of at most about K * 2^-24 per product (K <= 4 * d_model
    = 128 here, 7.6e-6), carried through a few layers. 1e-5 of each array's scale
    (plus that much relative) bounds it; a seed or sample mix-up moves numbers by O(1).
    """
    arrays_b = b.arrays()
    for key, x in a.arrays().items():
        y = arrays_b[key]
        scale = float(np.nanmax(np.abs(x))) if np.size(x) else 0.0
        if x.shape != y.shape or not np.allclose(x, y, rtol=1e-5, atol=1e-5 * scale, equal_nan=True):
            return False
    return True


@pytest.mark.parametrize("measure", ["annealed", "quenched"])
def test_same_seed_same_numbers_for_any_chunk_size(measure):
    """What holds on every machine (docs/simulate.md, "Runs you can trust"): the same call
    gives the same bits, whatever the draw threads; another chunk size gives the same
    numbers up to float32 rounding."""
    kw = dict(taps=TAPS, samples=70, seed=11, measure=measure, device="cpu", reservoir=5)
    results = {c: simulate.run(SPEC, chunk_size=c, **kw) for c in (70, 1, 9, 64)}
    assert _same(results[9], simulate.run(SPEC, chunk_size=9, **kw))
    threaded = simulate.run(SPEC, chunk_size=9, workers=3, **kw)  # the draw threads do not matter
    assert _same(results[9], threaded)
    for chunk in (1, 9, 64):
        assert _close_to_rounding(results[70], results[chunk])
    different = simulate.run(SPEC, chunk_size=9, **{**kw, "seed": 12})
    assert not _close_to_rounding(different, results[9])


def test_resume_after_interruption_gives_identical_results(tmp_path, monkeypatch):
    kw = dict(taps=TAPS, samples=150, seed=5, device="cpu", chunk_size=20, reservoir=4)
    straight = simulate.run(SPEC, **kw)
    ckpt = tmp_path / "run.ckpt"
    real = run_module.add_chunk
    calls = {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:  # killed while working on the fifth chunk (samples 80..99)
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "add_chunk", dying)
    with pytest.raises(KeyboardInterrupt):
        simulate.run(SPEC, checkpoint=ckpt, checkpoint_every=0.0, **kw)
    monkeypatch.setattr(run_module, "add_chunk", real)
    assert ckpt.exists()
    resumed = simulate.run(SPEC, checkpoint=ckpt, **kw)
    assert resumed.meta["resumed_from"] == 80
    assert _same(straight, resumed)
    # a finished checkpoint extends to more samples, again without a sample lost or doubled
    # (its last chunks are cut differently from a straight run's: equal up to rounding)
    longer = simulate.run(SPEC, checkpoint=ckpt, **{**kw, "samples": 170})
    assert longer.meta["resumed_from"] == 150
    assert _close_to_rounding(longer, simulate.run(SPEC, **{**kw, "samples": 170}))


def test_checkpoint_of_another_run_is_refused(tmp_path):
    ckpt = tmp_path / "c.ckpt"
    simulate.run(SPEC, taps=TAPS[:1], samples=10, seed=1, device="cpu", checkpoint=ckpt)
    with pytest.raises(ValueError, match="different run.*seed"):
        simulate.run(SPEC, taps=TAPS[:1], samples=10, seed=2, device="cpu", checkpoint=ckpt)
    with pytest.raises(ValueError, match="already holds 10 samples"):
        simulate.run(SPEC, taps=TAPS[:1], samples=5, seed=1, device="cpu", checkpoint=ckpt)


def test_nonfinite_samples_are_reported_and_left_out(monkeypatch, capsys):
    real = sampler_module.forward

    def poisoned(spec, x, project, record):
        cache = real(spec, x, project, record=record)
        cache["blocks.0.attn.hook_z"][1, 0, 3, 0, 0] = float("nan")  # second network of each chunk
        return cache

    monkeypatch.setattr(sampler_module, "forward", poisoned)
    result = simulate.run(SPEC, taps=TAPS[:2], samples=40, seed=0, device="cpu", chunk_size=20)
    assert result.meta["nonfinite_samples"] == 2 and result.meta["nonfinite_indices"] == [1, 21]
    assert result["hook_z", 0].n == 38 and result["pattern", 0].n == 38
    assert np.all(np.isfinite(result["hook_z", 0].var))
    assert "NaN/inf" in capsys.readouterr().err


def test_pattern_statistics_and_exact_identities():
    spec = small_spec(seq_len=9, sigma_q=0.3, sigma_k=0.3, sigma_embed=1.0, ln_eps=0.0)
    result = simulate.run(
        spec, taps=["blocks.0.hook_resid_pre", "blocks.0.attn.hook_q", "blocks.0.attn.hook_pattern"],
        samples=400, seed=3, device="cpu", dtype="float64",
    )
    m = result.positions
    pattern = result["pattern", 0]
    assert np.allclose(pattern.mean, 1.0 / m, rtol=1e-12)  # E[a_mn] = 1/m: rows sum to one
    assert pattern.sum_sq[0] == pytest.approx(1.0) and pattern.sum_sq_se[0] == pytest.approx(0.0, abs=1e-12)
    assert np.all(pattern.sum_sq[1:] > 1.0 / m[1:])  # logits vary: attention is not uniform
    assert np.array_equal(pattern.n_values, 400 * spec.n_heads * m)
    # inputs: var = sigma_embed^2; with eps = 0, |e|^2 = d exactly, so Var(q_i) = sigma_q^2 d
    for tap, truth in (("hook_resid_pre", spec.sigma_embed**2), ("hook_q", spec.sigma_q**2 * spec.d_model)):
        stats = result[tap, 0]
        z = (stats.var - truth) / stats.var_se
        assert np.all(np.abs(z) < 5), (tap, z)
        assert np.all(np.abs(stats.mean / stats.mean_se) < 5)


def test_positions_subset_matches_full_run():
    full = simulate.run(SPEC, taps=TAPS, samples=30, seed=2, device="cpu")
    some = simulate.run(SPEC, taps=TAPS, samples=30, seed=2, device="cpu", positions=[1, 4, 10])
    assert some.positions.tolist() == [1, 4, 10]
    for tap in TAPS:
        for m in (1, 4, 10):
            a, b = full[tap].at(m), some[tap].at(m)
            assert a.keys() == b.keys()
            for k in a:
                assert np.isclose(a[k], b[k], rtol=1e-12, equal_nan=True), (tap, m, k)


def test_quenched_is_one_frozen_network():
    kw = dict(taps=["blocks.0.attn.hook_z"], samples=200, device="cpu", measure="quenched")
    a = simulate.run(SPEC, seed=1, **kw)
    b = simulate.run(SPEC, seed=1, **{**kw, "samples": 100})
    assert a.meta["unit"] == "sequence" and a["hook_z", 0].n == 200
    # samples 0..99 are the same sequences through the same network
    c = simulate.run(SPEC, seed=1, **{**kw, "samples": 100, "chunk_size": 7})
    assert _same(b, c)
    assert not np.array_equal(a["hook_z", 0].var, simulate.run(SPEC, seed=1, taps=kw["taps"], samples=200, device="cpu")["hook_z", 0].var)


def test_save_and_load_round_trip(tmp_path):
    result = simulate.run(SPEC, taps=TAPS, samples=20, seed=4, device="cpu", reservoir=6, positions=[2, 5])
    path = tmp_path / "res.json"
    result.save(path)
    data = json.loads(path.read_text())
    assert set(data) == {"meta", "stats"}
    entry = data["stats"]["blocks.0.attn.hook_pattern"]["5"]
    assert {"mean", "mean_se", "var", "var_se", "n", "sum_sq", "sum_sq_se"} <= set(entry)
    loaded = SimulationResult.load(path)
    assert _same(result, loaded) and loaded.spec == SPEC
    assert loaded["hook_z", 0].reservoir.shape == (6, 2)
    path.with_suffix(".npz").unlink()
    json_only = SimulationResult.load(path)
    assert json_only.to_dict()["stats"] == result.to_dict()["stats"]


def test_reservoir_holds_values_of_the_tap():
    spec = small_spec(seq_len=6)
    result = simulate.run(spec, taps=["blocks.0.attn.hook_pattern", "blocks.0.hook_resid_pre"], samples=30,
                          seed=9, device="cpu", reservoir=25)
    pat = result["pattern", 0]
    assert pat.reservoir.shape == (25, 6) and pat.sum_sq_reservoir.shape == (25, 6)
    assert np.all(pat.reservoir[:, 0] == 1.0)  # the first query attends only to itself
    assert np.all((pat.reservoir > 0) & (pat.reservoir <= 1))
    resid = result["resid_pre", 0].reservoir
    assert np.all(np.isfinite(resid)) and len(np.unique(resid)) == resid.size


def test_bad_arguments_raise_clear_errors():
    for kwargs, match in [
        (dict(samples=0), "samples"),
        (dict(measure="tempered"), "measure"),
        (dict(positions=[0]), "positions"),
        (dict(device="tpu"), "device"),
        (dict(dtype="float16"), "dtype"),
        (dict(taps="hook_z"), "needs a layer"),
        (dict(taps=["blocks.5.attn.hook_z"]), "not in this network"),
        (dict(measure="quenched", batch=2), "batch"),
    ]:
        with pytest.raises(ValueError, match=match):
            simulate.run(SPEC, **{"samples": 2, "seed": 0, **kwargs})
    with pytest.raises(ValueError, match="symbolic"):
        simulate.run(SPEC.symbolic("sigma_q"), samples=2)


def test_device_auto():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert simulate.resolve_device("auto").type == expected


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")
def test_cuda_agrees_with_cpu_in_distribution():
    spec = small_spec(seq_len=16, sigma_q=0.5, sigma_k=0.5)
    taps = ["blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern"]
    cpu = simulate.run(spec, taps=taps, samples=2000, seed=1, device="cpu")
    gpu = simulate.run(spec, taps=taps, samples=2000, seed=2, device="cuda")
    assert gpu.meta["device"].startswith("cuda")
    for tap in taps:
        a, b = cpu[tap], gpu[tap]
        z = np.abs(a.var - b.var) / np.sqrt(a.var_se**2 + b.var_se**2)
        assert np.all(z < 4.5), (tap, z.max())
    again = simulate.run(spec, taps=taps, samples=2000, seed=2, device="cuda", chunk_size=333)
    assert np.allclose(again["hook_z", 0].var, gpu["hook_z", 0].var, rtol=1e-5)


def test_progress_bar_and_threads_option(capsys):
    before = torch.get_num_threads()
    simulate.run(SPEC, taps=TAPS[:1], samples=12, seed=0, device="cpu", chunk_size=4, progress=True, threads=1)
    assert "12/12 samples" in capsys.readouterr().err
    assert torch.get_num_threads() == before  # restored
    simulate.run(SPEC, taps=TAPS[:1], samples=12, seed=0, device="cpu", progress=False)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------ files from disk run no code
def _npz_with_pickle(path, marker):
    """An .npz whose 'fingerprint' is an object array: loading it with allow_pickle=True would run the code."""
    from tests.planted_pickle import Exploit

    with open(path, "wb") as fh:  # a file object: np.savez would append .npz to a name without it
        np.savez(fh, fingerprint=np.array([Exploit(marker)], dtype=object), done=np.asarray(0))
    with np.load(path, allow_pickle=True) as npz:
        npz["fingerprint"]  # the planted code runs here, so the refusal below is not vacuous
    assert marker.exists()
    marker.unlink()


def test_a_damaged_or_planted_checkpoint_is_refused_not_run(tmp_path):
    from tests.planted_pickle import plant

    kw = dict(taps=TAPS[:1], samples=10, seed=1, device="cpu")
    ckpt, marker = tmp_path / "c.ckpt", tmp_path / "PWNED"
    simulate.run(SPEC, checkpoint=ckpt, **kw)
    good = ckpt.read_bytes()
    for damaged in (good[: len(good) // 2], b"garbage", b""):
        ckpt.write_bytes(damaged)
        with pytest.raises(ValueError, match=r"checkpoint '.*c\.ckpt' is not readable .*delete it"):
            simulate.run(SPEC, checkpoint=ckpt, **kw)
    for planted in ("pickle", "npz"):
        if planted == "pickle":
            plant(ckpt, marker, fmt="pickle")
        else:
            _npz_with_pickle(ckpt, marker)
        with pytest.raises(ValueError, match="is not readable"):
            simulate.run(SPEC, checkpoint=ckpt, **kw)
        assert not marker.exists()


def test_a_checkpoint_with_the_right_fingerprint_but_wrong_arrays_is_refused(tmp_path):
    kw = dict(taps=TAPS[:1], samples=10, seed=1, device="cpu")
    ckpt = tmp_path / "c.ckpt"
    simulate.run(SPEC, checkpoint=ckpt, **kw)
    with np.load(ckpt) as npz:
        data = dict(npz)
    for key, broken in (("acc_counts", np.zeros(3)), ("done", np.zeros(2)), ("acc_pending", None)):
        changed = {k: v for k, v in data.items() if k != key} if broken is None else {**data, key: broken}
        with open(ckpt, "wb") as fh:
            np.savez(fh, **changed)
        with pytest.raises(ValueError, match=r"c\.ckpt' is damaged"):
            simulate.run(SPEC, checkpoint=ckpt, **{**kw, "samples": 20})


def test_load_of_a_damaged_or_planted_result_is_a_clear_error(tmp_path):
    result = simulate.run(SPEC, taps=TAPS[:1], samples=10, seed=4, device="cpu")
    path, marker = tmp_path / "res.json", tmp_path / "PWNED"
    result.save(path)
    _npz_with_pickle(path.with_suffix(".npz"), marker)
    with pytest.raises(ValueError, match=r"cannot read the arrays of simulation result '.*res\.npz'"):
        SimulationResult.load(path)
    assert not marker.exists()
    path.with_suffix(".npz").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="res.npz"):
        SimulationResult.load(path)
    path.with_suffix(".npz").unlink()
    path.write_text('{"meta": {}}')  # JSON, but not a result
    with pytest.raises(ValueError, match=r"res\.json' is not a simulation result"):
        SimulationResult.load(path)
