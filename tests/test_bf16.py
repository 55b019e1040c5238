"""bfloat16 matrix products (issue 18): the error they bring into the reported moments.

The reference is float64 on the *same* networks: `Sampler(dtype=float64, draw_dtype=float32)`
runs the float32 draws of a seed in float64, and a bfloat16 run rounds those very draws
(`simulate.engine.sampler`). Per network u, tap row and position m the toolkit's second
moment is ``b_u = M2_u / c + a_u^2`` (`simulate.engine.stats`); the bias of bfloat16 is
``mean_u (b_u^bf16 - b_u^f64)`` and must stay below 0.2 standard errors of the float64
estimate itself, ``sd_u(b_u^f64) / sqrt(N)``, at N = 10^4 networks. The derivation
(docs/simulate.md, "bfloat16") predicts a relative bias of order 1e-5, far below that.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import simulate
from simulate.__main__ import main
from simulate.engine import Sampler, extract
from theory import ModelSpec
from theory.taps import all_taps

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # a shared CPU stalls torch's thread teams

SPEC = ModelSpec(d_model=16, n_heads=2, n_layers=3, seq_len=4)  # tiny: 10^4 networks in seconds
NETWORKS = 10_000


def _second_moments(spec, taps, dtype, draw_dtype, method, networks=NETWORKS):
    """Per network, tap row and position: the second moment b_u, (N, rows, P) float64."""
    out = []
    positions = torch.arange(spec.seq_len)
    with Sampler(spec, seed=11, method=method, device=torch.device("cpu"), dtype=dtype,
                 draw_dtype=draw_dtype) as sampler:
        for first in range(0, networks, 2500):
            cache = sampler.taps(first, 2500, taps)
            rows = []
            for tap in taps:
                for row in extract(tap, cache[tap], positions, quenched=False).values():
                    y = row.values if row.mask is None else row.values.masked_fill(~row.mask, 0.0)  # (U, P, C)
                    count = row.mask.sum(-1) if row.mask is not None else y.shape[-1]
                    rows.append(((y * y).sum(-1).double() / count).numpy())  # = M2_u / c + a_u^2
            out.append(np.stack(rows, axis=1))
    return np.concatenate(out)


@pytest.mark.parametrize("method, taps, networks", [
    ("auto", all_taps(SPEC.n_layers, SPEC), NETWORKS),  # every tap: the Gram path, the materialised attention
    ("explicit", [f"blocks.{l}.hook_resid_post" for l in range(SPEC.n_layers)], 2500),  # weights, fused kernel
])
def test_bf16_second_moments_agree_with_float64_on_the_same_networks(method, taps, networks):
    low = _second_moments(SPEC, taps, torch.bfloat16, None, method, networks)
    ref = _second_moments(SPEC, taps, torch.float64, torch.float32, method, networks)
    assert np.isfinite(low).all() and np.isfinite(ref).all()
    bias = (low - ref).mean(axis=0)  # (rows, P)
    se = ref.std(axis=0, ddof=1) / np.sqrt(networks)
    live = se > 0  # a pattern's first row is exactly 1: no error, no spread
    assert np.all(np.abs(bias[live]) < 0.2 * se[live]), np.max(np.abs(bias[live]) / se[live])
    # and on the same networks the bias itself is what the derivation says: |bias| within 5 paired
    # standard errors of a relative 5e-5 (rounding the softmax weights themselves, which snaps
    # near-uniform weights 1/m to 1/m, gave -4.5e-4 on hook_z at m = 2, 4: 13 paired SEs)
    paired = (low - ref).std(axis=0, ddof=1) / np.sqrt(networks)
    excess = np.abs(bias) - 5 * paired - 5e-5 * np.abs(ref.mean(axis=0))
    assert np.all(excess <= 0), np.max(excess)
    # bfloat16 did round: per-network differences of the order of its 2^-9 (not zero, not large)
    rel = np.abs(low - ref)[:, live].mean() / np.abs(ref)[:, live].mean()
    assert 1e-5 < rel < 1e-2, rel


def test_float32_draws_run_in_float64_are_the_float32_networks():
    spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4)
    tap = ["blocks.0.hook_resid_post"]
    kw = dict(seed=3, device=torch.device("cpu"), method="explicit")
    with Sampler(spec, dtype=torch.float32, **kw) as s32, \
         Sampler(spec, dtype=torch.float64, draw_dtype=torch.float32, **kw) as s64:
        a, b = s32.taps(0, 4, tap)[tap[0]], s64.taps(0, 4, tap)[tap[0]]
    assert b.dtype == torch.float64
    assert torch.allclose(a.double(), b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("measure", ["annealed", "quenched"])
def test_run_in_bfloat16_reports_float32_statistics(measure):
    spec = ModelSpec(d_model=32, n_heads=2, n_layers=2, seq_len=8, vocab_size=None)
    kw = dict(taps=["blocks.1.hook_resid_post"], samples=400, seed=2, device="cpu", progress=False, measure=measure)
    low, ref = simulate.run(spec, dtype="bfloat16", **kw), simulate.run(spec, dtype="float32", **kw)
    assert low.meta["dtype"] == "bfloat16"
    t = "blocks.1.hook_resid_post"
    # the same networks, rounded: the estimates differ by far less than their errors
    assert np.all(np.abs(low[t].var - ref[t].var) < 0.2 * ref[t].var_se)
    assert not np.array_equal(low[t].var, ref[t].var)


def test_alibi_and_gqa_in_bfloat16():
    spec = ModelSpec(d_model=32, n_heads=4, n_kv_heads=2, n_layers=1, seq_len=8, positional="alibi", attn_only=True)
    kw = dict(taps=["blocks.0.hook_resid_post"], samples=200, seed=1, device="cpu", progress=False)
    low, ref = simulate.run(spec, dtype="bfloat16", **kw), simulate.run(spec, dtype="float32", **kw)
    t = "blocks.0.hook_resid_post"
    assert np.all(np.abs(low[t].var - ref[t].var) < 0.2 * ref[t].var_se)


def test_float16_is_refused_on_a_cpu_and_the_cli_takes_bfloat16(tmp_path, capsys):
    spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, attn_only=True)
    with pytest.raises(ValueError, match="dtype 'float16' is for CUDA"):
        simulate.run(spec, samples=2, device="cpu", dtype="float16", progress=False)
    with pytest.raises(ValueError, match="dtype must be one of"):
        simulate.run(spec, samples=2, device="cpu", dtype="int8", progress=False)
    spec.save(tmp_path / "s.json")
    out = tmp_path / "r.json"
    assert main(["run", "--spec", str(tmp_path / "s.json"), "--samples", "8", "--seed", "0", "--device", "cpu",
                 "--dtype", "bfloat16", "--no-progress", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["meta"]["dtype"] == "bfloat16"
    assert main(["run", "--spec", str(tmp_path / "s.json"), "--samples", "8", "--seed", "0", "--device", "cpu",
                 "--dtype", "float16", "--no-progress", "--out", str(out)]) == 2
    assert "float16" in capsys.readouterr().err


@pytest.mark.parametrize("spec, method", [
    (ModelSpec(d_model=16, n_heads=2, n_layers=2, seq_len=4, positional="learned"), "auto"),  # G's, a table last
    (ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=5, vocab_size=7), "explicit"),  # W's, token ids
])
def test_the_drawing_threads_round_the_float32_draws_once(spec, method):
    """A bf16 run's weight/Gram normals are the float32 run's draws rounded (the drawer rounds
    them per sample, two threads here), the inputs and the position table stay float32, and the
    taps equal those of rounding in `Projections` (the path before the drawer rounded)."""
    tap = ["blocks.0.hook_resid_post"]
    kw = dict(seed=5, method=method, device=torch.device("cpu"))
    with Sampler(spec, dtype=torch.float32, workers=2, **kw) as s32, \
         Sampler(spec, dtype=torch.bfloat16, workers=2, **kw) as s16:
        ref = s32.taps(0, 6, tap)[tap[0]]
        low = s16.taps(0, 6, tap)[tap[0]]
        start, stop = s16.drawer.span
        rows = s32.drawer.draw(0, 6, spec.vocab_size)[0]  # the float32 draws, redrawn
        assert s32.drawer.low is None and stop > start
        assert s16.drawer.low.dtype == torch.bfloat16
        assert torch.equal(s16.drawer.low, rows[:, start:stop].to(torch.bfloat16))
        kept = s16.drawer._buffer[:6]  # inputs and the position table stay float32, unrounded
        assert kept.dtype == torch.float32 and torch.equal(kept[:, stop:], rows[:, stop:])
        s16.drawer.low_dtype = None  # round in Projections instead, as before
        s16.drawer._buffer = None
        again = s16.taps(0, 6, tap)[tap[0]]
    assert torch.equal(low, again) and not torch.equal(low, ref)


def test_bench_reports_bf16_speedups_beside_the_machines_and_its_bf16_units():
    from simulate.engine.benchmark import _row, bench_spec, cpu_features

    amx = cpu_features("model name\t: Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert amx == {"model": "Xeon", "flags": ["amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2"],
                   "bf16_units": "AMX"}
    assert cpu_features("flags : fpu avx512f avx512_bf16\n")["bf16_units"] == "AVX512-BF16"
    assert cpu_features("flags : fpu sse4_2 avx2\n")["bf16_units"] == "none"
    best = {"peak/float32": 100.0, "peak/bfloat16": 250.0}
    for dt, scale in (("float32", 1.0), ("bfloat16", 1.3)):
        best.update({f"engine/{dt}": 80.0 * scale, f"loop/{dt}": 40.0 * scale ** 0.5, f"ceiling/{dt}": 90.0 * 2,
                     f"draw/{dt}": 160.0})
    best["ceiling/float32"] = 90.0
    row = _row(bench_spec(64, 32), best, ("float32", "bfloat16"))
    b = row["bfloat16"]
    assert b["engine_vs_float32"] == pytest.approx(1.3) and b["ceiling_vs_float32"] == pytest.approx(2.0)
    assert b["loop_vs_float32"] == pytest.approx(1.3 ** 0.5) and b["peak_vs_float32"] == pytest.approx(2.5)
    assert b["engine_speedup_over_peak_speedup"] == pytest.approx(1.3 / 2.5)
    assert b["engine_share_of_peak_gain"] == pytest.approx(0.3 / 1.5)
    assert row["float32"]["draw_share"] == pytest.approx(0.5) and b["draw_share"] == pytest.approx(0.65)
    assert "engine_vs_float32" not in row["float32"] and row["engine"] == 80.0  # today's keys kept


# ---------------------------------------------------------------- training under bf16 autocast
def test_training_under_bf16_autocast_learns_like_float32(tmp_path):
    """The first step's loss agrees with float32 to bf16 rounding (same init, same batch); 20
    steps lower the loss as float32's do, and end within 0.1 nats of them (held-out, float32
    evaluation); a float32 config still writes no ``autocast`` key (old runs resume)."""
    import dataclasses
    from pathlib import Path

    from simulate.experiments.train import PRESETS, evaluate, load_model, train_model, windows
    from simulate.experiments.train.corpus import load_corpus
    from simulate.experiments.train.training import autocast

    corpus = load_corpus(Path(__file__).parent / "data" / "tiny_corpus.txt", holdout=0.1)
    base = dataclasses.replace(PRESETS["tiny"], d_model=16, n_heads=2, n_layers=2, seq_len=16, batch_size=8,
                               steps=20, warmup=4, eval_every=20, eval_windows=4, checkpoint_every=20,
                               positionals=("none",))
    low = dataclasses.replace(base, autocast="bfloat16")
    assert "autocast" not in base.to_dict() and low.to_dict()["autocast"] == "bfloat16"
    with pytest.raises(ValueError, match="autocast must be one of"):
        dataclasses.replace(base, autocast="float16")
    batch = windows(corpus.heldout, base.seq_len + 1, 16)
    from simulate.experiments.train.model import NoPETransformer
    model = NoPETransformer(base.spec("none"), seed=0)
    with torch.no_grad():
        exact = float(model.loss(batch[:, :-1], batch[:, 1:]))
        with autocast(low):
            rounded = float(model.loss(batch[:, :-1], batch[:, 1:]))
    assert rounded != exact and abs(rounded - exact) < 0.01
    finals = {}
    for cfg in (base, low):
        summary = train_model(cfg, corpus, tmp_path / cfg.autocast, "none", progress=False)
        assert np.mean(summary["train_loss"][-5:]) < np.mean(summary["train_loss"][:5]) - 0.5
        finals[cfg.autocast] = evaluate(load_model(tmp_path / cfg.autocast / "none" / "checkpoint.pt"), batch)
    assert abs(finals["bfloat16"] - finals["none"]) < 0.1, finals
