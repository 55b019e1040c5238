"""Compact reprs and Jupyter tables of results (issue 21, item 5): a result over many positions
prints as a short table with the positions elided, the numbers shown are the result's own, and
results export to pandas."""

from __future__ import annotations

import numpy as np
import pytest

import simulate
import verify
from theory import ModelSpec, depth, predict
from theory._tables import ELLIPSIS, elide, number

SPEC = ModelSpec(d_model=32, n_heads=2, n_layers=2, seq_len=64)


@pytest.fixture(scope="module")
def prediction():
    return depth.predict(SPEC)


def test_elide_keeps_both_ends():
    assert elide(range(4)) == [0, 1, 2, 3]
    assert elide(range(100)) == [0, 1, 2, ELLIPSIS, 98, 99]


def test_prediction_repr_is_a_short_table_of_its_own_numbers(prediction):
    text = repr(prediction)
    lines = text.splitlines()
    assert len(lines) <= 27 and max(map(len, lines)) < 200          # 30 taps x 64 positions, one screen
    assert "m=1" in lines[1] and "m=64" in lines[1] and ELLIPSIS in lines[1]
    z = prediction["blocks.1.attn.hook_z"]
    row = next(line for line in lines if line.startswith("blocks.1.attn.hook_z "))
    assert number(z.values["var"][0]) in row.split() and number(z.values["var"][-1]) in row.split()
    html = prediction._repr_html_()
    assert html.startswith("<table>") and html.count("<tr>") == len(lines) - 1   # header + the same rows


def test_tap_prediction_repr_and_dataframe(prediction):
    z = prediction["blocks.0.attn.hook_z"]
    assert repr(z).splitlines()[0].startswith("TapPrediction(blocks.0.attn.hook_z: approximate")
    pytest.importorskip("pandas")
    frame = z.to_dataframe()
    assert list(frame.index[:2]) == [1, 2] and np.allclose(frame["var"].to_numpy(), z.values["var"])
    long = prediction.to_dataframe()
    assert len(long) == sum(len(v) for r in prediction.records for v in r.values.values())
    assert set(long["layer"]) == {0, 1}


def test_checkset_repr_counts_and_names_failures():
    spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, attn_only=True)
    table = verify.theory_table(spec, [1, 2, 4])
    sim = simulate.run(spec, taps=table.taps, samples=200, seed=0, positions=[1, 2, 4], device="cpu", progress=False)
    mutant = verify.compare(verify.MUTANTS["factor H dropped"](table), sim)
    text = repr(mutant)
    n_failed = len(mutant.failed)
    assert n_failed > 0 and text.startswith(f"CheckSet(FAIL: {len(mutant) - n_failed}/{len(mutant)} checks passed")
    assert text.count("\n  FAIL ") == min(n_failed, 5)
    assert "<table>" in mutant._repr_html_()
    pytest.importorskip("pandas")
    assert len(mutant.to_dataframe()) == len(mutant)


def test_layer_one_prediction_repr_without_depth():
    p = predict(ModelSpec(d_model=64, n_heads=4, n_layers=1, seq_len=16), [1, 16], taps=["attn.hook_pattern"])
    assert "sum_sq" in repr(p) and "m=16" in repr(p)


def test_simulation_result_repr_and_dataframe():
    spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=32, attn_only=True)
    sim = simulate.run(spec, taps=[("hook_z", 0), ("pattern", 0)], samples=20, seed=0, device="cpu", progress=False)
    lines = repr(sim).splitlines()
    assert lines[0].startswith("SimulationResult(2 taps x 32 positions") and len(lines) == 4
    z = sim["hook_z", 0]
    row = next(line for line in lines if line.startswith("blocks.0.attn.hook_z "))
    assert number(z.var[0]) in row.split() and "m=32" in lines[1]
    stats_lines = repr(z).splitlines()
    assert stats_lines[0] == "TapStats(blocks.0.attn.hook_z: n = 20, 32 positions)" and len(stats_lines) == 5
    assert "sum_sq" in repr(sim["pattern", 0]) and "<table>" in sim._repr_html_()
    pytest.importorskip("pandas")
    frame = sim.to_dataframe()
    assert len(frame) == 2 * 32 and np.allclose(frame[frame.tap == z.tap]["var"].to_numpy(), z.var)
