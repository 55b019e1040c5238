"""verify.sweep: grids, a tiny sweep end to end on a two-process LocalCluster, the store's
labels and numbers against an independent simulation, determinism across workers, a failing
point recorded, extension and refusal of a changed grid, resume after killing the CLI."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")
pytest.importorskip("xarray")
pytest.importorskip("zarr")

import simulate  # noqa: E402
from theory import ModelSpec  # noqa: E402
from verify import theory_table  # noqa: E402
from verify.cli import main as verify_main  # noqa: E402
from verify.sweep import STATUS, StoreError, open_dataset, parse_grid, point_seed, sweep  # noqa: E402
from verify.sweep import tasks as sweep_tasks  # noqa: E402
from verify.sweep.tasks import make_task, run_point  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = {"d_model": 16, "n_layers": 1, "seq_len": 8, "attn_only": True}
GRID = {"base": BASE, "axes": {"sigma_q": [0.1, 0.8], "n_heads": [2, 3]}, "samples": 40, "seed": 5,
        "positions": [1, 2, 4, 8]}


@pytest.fixture(scope="module")
def client():
    from distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                           silence_logs=40)
    c = Client(cluster)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def swept(client, tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    summary = sweep(parse_grid(GRID), out, client=client, progress=False)
    return out, summary


# ------------------------------------------------------------------ grids
def test_grid_axes_spacings_and_point_seeds():
    g = parse_grid({"base": {"n_layers": 1}, "axes": {"sigma_q": {"log": [0.01, 1, 3]},
                    "d_model": {"linear": [16, 64, 3]}}, "samples": 10})
    assert g.axes["sigma_q"] == [0.01, 0.1, 1.0] and g.axes["d_model"] == [16, 40, 64]
    assert g.size == 9 and g.positions is None
    # a point's seed comes from its spec, not its index: another grid holding it agrees
    other = parse_grid({"base": {"n_layers": 1}, "axes": {"d_model": [64, 16], "sigma_q": [1.0, 0.5]},
                        "samples": 10})
    a = {json.dumps(p.fields, sort_keys=True): point_seed(g.seed, p.fields) for p in g.points()}
    b = {json.dumps(p.fields, sort_keys=True): point_seed(other.seed, p.fields) for p in other.points()}
    shared = set(a) & set(b)
    assert len(shared) == 2 and all(a[k] == b[k] for k in shared)
    assert len(set(a.values())) == 9  # distinct points, distinct seeds
    assert point_seed(1, {"d_model": 16}) != point_seed(2, {"d_model": 16})
    # integer fields whose default is null (d_mlp, n_kv_heads) get integers; a repeat after rounding goes
    h = parse_grid({"base": {"n_layers": 1, "n_heads": 4}, "axes": {"d_mlp": {"log": [64, 512, 4]},
                    "n_kv_heads": {"log": [1, 2, 3]}}, "samples": 10})
    assert h.axes["d_mlp"] == [64, 128, 256, 512] and h.axes["n_kv_heads"] == [1, 2]


@pytest.mark.parametrize("grid, words", [
    ({"axes": {"sigma_x": [1]}, "samples": 10}, ["sigma_x", "allowed fields", "sigma_q"]),
    ({"axes": {"sigma_q": {"log": [0, 1, 3]}}, "samples": 10}, ["axes.sigma_q.log", "> 0"]),
    ({"axes": {"sigma_q": {"cubic": [1, 2, 3]}}, "samples": 10}, ["axes.sigma_q", "log", "linear"]),
    ({"axes": {"sigma_q": [0.1]}}, ["samples", "integer >= 2"]),
    ({"axes": {"sigma_q": [0.1, "a"]}, "samples": 10}, ["axes.sigma_q", "mixes"]),
    ({"axes": {"sigma_q": [0.1]}, "samples": 10, "colour": 1}, ["colour", "allowed keys"]),
    ({"base": {"sigma_q": 1}, "axes": {"sigma_q": [0.1]}, "samples": 10}, ["sigma_q", "both"]),
])
def test_bad_grids_are_one_line_exit_2(tmp_path, capsys, grid, words):
    path = tmp_path / "g.json"
    path.write_text(json.dumps(grid))
    assert verify_main(["sweep", "--grid", str(path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("verify sweep: error:") and "Traceback" not in err
    for w in words:
        assert w in err
    assert not (tmp_path / "o").exists()


def test_bad_json_and_missing_store(tmp_path, capsys):
    (tmp_path / "g.json").write_text("{not json")
    assert verify_main(["sweep", "--grid", str(tmp_path / "g.json"), "--out", str(tmp_path / "o")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert verify_main(["sweep", "--report", str(tmp_path)]) == 2
    assert "no sweep store" in capsys.readouterr().err


def test_boundary_crossing_and_paper_slice():
    from verify.sweep.maps import crossing
    from verify.sweep.regimes import _nearest_paper

    m = np.array([1, 2, 4, 8])
    # |r| crosses 5% between m = 2 (2%) and m = 4 (8%): halfway in |r| is halfway in log m
    assert crossing(m, np.array([0.0, 0.02, 0.08, 0.2]), 0.05) == (pytest.approx(2 * math.sqrt(2)), "")
    assert crossing(m, np.array([0.0, -0.01, 0.02, 0.04]), 0.05) == (8.0, ">=")
    assert crossing(m, np.array([0.3, 0.4, 0.5, 0.6]), 0.05) == (1.0, "<=")
    assert math.isnan(crossing(m, np.full(4, np.nan), 0.05)[0])
    # other axes are held nearest the paper's value (GPT-2: d = 768, sigma 0.02), in log distance
    assert _nearest_paper("d_model", [16, 512, 1024]) == 1024
    assert _nearest_paper("sigma_v", [0.01, 0.05, 0.5]) == 0.01
    assert _nearest_paper("attn_scale", ["linear", "sqrt"]) == "sqrt"


def test_heat_map_marks_the_paper_hatches_noise_and_draws_contours():
    from matplotlib.patches import Rectangle

    from verify.sweep.grid import spec_fields
    from verify.sweep.maps import heat_map

    err = np.array([[0.002, 0.03, 0.3], [0.004, 0.06, 0.5], [0.008, 0.1, 0.9]])  # (y, x)
    noise = np.zeros((3, 3), bool)
    noise[0, :2] = True
    missing = np.zeros((3, 3), bool)
    missing[2, 2] = True
    fig = heat_map("t", ("d_model", [512, 768, 1024]), ("sigma_q", [0.01, 0.02, 0.04]),
                   {"best": err, "leading": 2 * err}, {"best": noise, "leading": noise}, missing, spec_fields())
    best, leading = fig.axes[:2]
    stars = [ln for ln in best.lines if ln.get_marker() == "*"]
    assert len(stars) == 1 and stars[0].get_xdata()[0] == 768 and stars[0].get_ydata()[0] == 0.02
    hatched = [p for p in best.patches if isinstance(p, Rectangle) and p.get_hatch() == "///"]
    grey = [p for p in best.patches if isinstance(p, Rectangle) and p.get_hatch() == "xx"]
    assert len(hatched) == 2 and len(grey) == 1
    assert best.get_xscale() == "linear" and best.get_yscale() == "linear"
    from matplotlib.contour import ContourSet

    contours = [c for c in best.collections if isinstance(c, ContourSet)]
    assert len(contours) == 1 and list(contours[0].levels) == [0.01, 0.05, 0.2]
    off = heat_map("t", ("d_model", [16, 32]), ("sigma_q", [0.1, 1.0]), {"best": err[:2, :2]},
                   {"best": noise[:2, :2]}, missing[:2, :2], spec_fields())
    assert "off this map" in " ".join(t.get_text() for t in off.axes[0].texts)


# ------------------------------------------------------------------ end to end
def test_end_to_end_store_labels_and_invalid_points(swept):
    out, summary = swept
    assert (summary.total, summary.ran, summary.invalid, summary.failed) == (4, 2, 2, 0)
    ds = open_dataset(out)
    assert list(ds.attrs["axes"]) == ["sigma_q", "n_heads"]
    assert ds["theory"].dims == ("sigma_q", "n_heads", "tap", "layer", "quantity", "position", "level")
    assert ds["sim"].dims == ("sigma_q", "n_heads", "tap", "layer", "quantity", "position")
    assert ds["sigma_q"].values.tolist() == [0.1, 0.8] and ds["n_heads"].values.tolist() == [2, 3]
    assert ds["position"].values.tolist() == [1, 2, 4, 8] and ds["level"].values.tolist() == ["best", "leading"]
    assert ds["layer"].values.tolist() == [0] and "attn.hook_z" in ds["tap"].values.tolist()
    assert ds["quantity"].values.tolist() == ["mean", "var", "sum_sq"]
    status = ds["status"].values
    assert (status[:, 0] == STATUS["done"]).all() and (status[:, 1] == STATUS["invalid"]).all()
    assert all("divisible by n_heads" in e for e in ds["error"].values[:, 1])
    assert np.isnan(ds["sim"].values[:, 1]).all()  # invalid points hold no numbers


def test_point_numbers_against_an_independent_run(swept):
    out, _ = swept
    ds = open_dataset(out)
    spec = ModelSpec(**BASE, sigma_q=0.8, n_heads=2)
    seed = int(ds["seed"].sel(sigma_q=0.8, n_heads=2))
    assert seed == point_seed(5, {**BASE, "sigma_q": 0.8, "n_heads": 2})
    sim = simulate.run(spec, taps=["blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern"], samples=40, seed=seed,
                       positions=[1, 2, 4, 8], device="cpu", progress=False, threads=1)
    best = theory_table(spec, [1, 2, 4, 8])
    leading = theory_table(spec, [1, 2, 4, 8], "leading")
    z = ds.sel(sigma_q=0.8, n_heads=2, tap="attn.hook_z", layer=0, quantity="var")
    st = sim["blocks.0.attn.hook_z"]
    np.testing.assert_array_equal(z["sim"].values, st.var)  # the same seed, the same numbers, another process
    np.testing.assert_array_equal(z["se"].values, st.var_se)
    np.testing.assert_allclose(z["theory"].sel(level="best").values, best["blocks.0.attn.hook_z"].values["var"],
                               rtol=1e-12)
    np.testing.assert_allclose(z["theory"].sel(level="leading").values,
                               leading["blocks.0.attn.hook_z"].values["var"], rtol=1e-12)
    rel = z["theory"].values / st.var[:, None] - 1
    np.testing.assert_allclose(z["rel_error"].values, rel, rtol=1e-12)
    np.testing.assert_allclose(z["z"].values, (z["theory"].values - st.var[:, None]) / st.var_se[:, None],
                               rtol=1e-12)
    p = ds.sel(sigma_q=0.8, n_heads=2, tap="attn.hook_pattern", layer=0, quantity="sum_sq")
    np.testing.assert_array_equal(p["sim"].values, sim["blocks.0.attn.hook_pattern"].sum_sq)
    assert np.isnan(ds.sel(tap="attn.hook_pattern", quantity="var")["sim"].values).all()  # not a checked quantity
    assert set(np.unique(ds["within_tolerance"].sel(sigma_q=0.8, n_heads=2).values[
        np.isfinite(ds["within_tolerance"].sel(sigma_q=0.8, n_heads=2).values)])) <= {0.0, 1.0}


def test_a_point_is_the_same_on_every_worker(client):
    spec = ModelSpec(**BASE, sigma_q=0.3, n_heads=2)
    task = make_task(spec, [1, 4, 8], 24, point_seed(0, {"sigma_q": 0.3}), 0.01, "cpu")
    workers = sorted(client.scheduler_info()["workers"])
    assert len(workers) == 2
    results = [client.submit(run_point, task, workers=[w], pure=False, allow_other_workers=False).result()
               for w in workers]
    assert results[0]["worker"] != results[1]["worker"]
    for key in ("sim", "se", "theory_best", "theory_leading"):
        np.testing.assert_array_equal(results[0]["rows"][key], results[1]["rows"][key])


def test_extension_and_refusal(swept, client, tmp_path):
    out, _ = swept
    before = open_dataset(out)
    wall = float(before["wall_s"].sel(sigma_q=0.1, n_heads=2))
    grid = dict(GRID, axes={"sigma_q": [0.1, 0.8, 0.4], "n_heads": [2, 3]})
    summary = sweep(parse_grid(grid), out, client=client, progress=False)
    assert (summary.skipped, summary.ran) == (2, 1) and "sigma_q +1" in summary.note
    ds = open_dataset(out)
    assert ds["sigma_q"].values.tolist() == [0.1, 0.4, 0.8]  # sorted when read
    assert float(ds["wall_s"].sel(sigma_q=0.1, n_heads=2)) == wall  # not run again
    assert int(ds["status"].sel(sigma_q=0.4, n_heads=2)) == STATUS["done"]
    # the same base written with floats (16.0, 8.0) and n_heads as 2.0 is the same grid: resumed, nothing run
    floats = dict(grid, base={k: float(v) if not isinstance(v, bool) else v for k, v in BASE.items()},
                  axes={"sigma_q": [0.1, 0.8, 0.4], "n_heads": [2.0, 3]})
    again = sweep(parse_grid(floats), out, client=client, progress=False)
    assert (again.skipped, again.ran, again.note) == (3, 0, "")  # the 3 valid points (n_heads 3 does not divide 16)
    with pytest.raises(StoreError, match="base"):  # a different number is still refused
        sweep(parse_grid(dict(grid, base={**BASE, "seq_len": 8.5})), out, client=client, progress=False)
    with pytest.raises(StoreError, match="samples"):
        sweep(parse_grid(dict(grid, samples=80)), out, client=client, progress=False)
    with pytest.raises(StoreError, match="axes"):
        sweep(parse_grid(dict(grid, axes={"sigma_k": [0.1]})), out, client=client, progress=False)


def test_settings_compare_equal_numbers_equal():
    from verify.sweep.store import _canonical

    assert _canonical({"base": {"d_model": 16, "sigma_q": 1}}) == _canonical({"base": {"d_model": 16.0, "sigma_q": 1.0}})
    assert _canonical([np.int64(3), np.float64(0.5), 2.0]) == [3, 0.5, 2]
    assert _canonical({"d_model": 16}) != _canonical({"d_model": 16.5})
    assert _canonical({"attn_only": True}) != _canonical({"attn_only": 1})  # a bool is not a number here
    assert _canonical(2**60 + 1) != _canonical(2**60)  # integers compare exactly (not through float)
    assert _canonical("16") != _canonical(16)


def test_a_failing_point_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from distributed import Client, LocalCluster

    real = sweep_tasks.simulate_point

    def flaky(spec, *args, **kwargs):
        if spec.sigma_q > 0.5:
            raise RuntimeError("simulated worker trouble")
        return real(spec, *args, **kwargs)

    monkeypatch.setattr(sweep_tasks, "simulate_point", flaky)
    grid = parse_grid(dict(GRID, base={**BASE, "n_heads": 2}, axes={"sigma_q": [0.1, 0.8]}, samples=16))
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=":0",
                      silence_logs=40) as cluster, Client(cluster) as c:
        summary = sweep(grid, tmp_path, client=c, progress=False)
        assert (summary.ran, summary.failed) == (1, 1)
        ds = open_dataset(tmp_path)
        assert ds["status"].values.tolist() == [STATUS["done"], STATUS["failed"]]
        assert "RuntimeError: simulated worker trouble" in str(ds["error"].values.ravel()[1])
        monkeypatch.setattr(sweep_tasks, "simulate_point", real)
        again = sweep(grid, tmp_path, client=c, progress=False)  # a rerun retries the failed point
        assert (again.skipped, again.ran, again.failed) == (1, 1, 0)


def test_maps_and_tables(swept, tmp_path):
    from verify.sweep.regimes import write_maps

    out, _ = swept
    written = write_maps(out, maps=tmp_path / "maps", x="sigma_q", y="n_heads", taps=["attn.hook_z@0"])
    names = {Path(w).name for w in written}
    assert {"map_attn_hook_z_L0.png", "map_attn_hook_z_L0.pdf", "boundary.png", "regimes.md",
            "regimes.tex"} <= names
    md = (tmp_path / "maps" / "regimes.md").read_text()
    assert "| `attn.hook_z` | 0 | best |" in md and "divisible by n_heads" in md
    assert (tmp_path / "maps" / "map_attn_hook_z_L0.png").read_bytes()[:4] == b"\x89PNG"
    assert "\\begin{tabular}" in (tmp_path / "maps" / "regimes.tex").read_text()


@pytest.mark.parametrize("args, words", [
    (["--x", "sigma_q", "--y", "sigma_q"], "two different axes"),
    (["--x", "sigma_k"], "not an axis"),
    (["--at", "sigma_q=1"], "axis of the maps"),
    (["--taps", "attn.hook_q@3"], "not in the store"),
])
def test_report_errors_are_one_line(swept, capsys, args, words):
    out, _ = swept
    assert verify_main(["sweep", "--report", str(out), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and words in err


# ------------------------------------------------------------------ resume after a kill
def test_resume_after_killing_the_cli(tmp_path, client):
    """A CLI process (on the module's warm cluster, through --scheduler) is killed with
    SIGKILL once a point is in the store; the rerun keeps the finished points and runs the rest."""
    grid = dict(GRID, base={**BASE, "n_heads": 2}, axes={"sigma_q": [0.05, 0.1, 0.2, 0.4, 0.8, 1.6]}, samples=1500)
    (tmp_path / "g.json").write_text(json.dumps(grid))
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "verify", "sweep", "--grid", str(tmp_path / "g.json"), "--out",
                             str(out), "--scheduler", client.scheduler.address, "--quiet"], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 90
        done = 0
        while time.time() < deadline and proc.poll() is None:
            time.sleep(0.1)
            try:
                done = int((open_dataset(out)["status"].values == STATUS["done"]).sum())
            except Exception:  # the store is being made
                continue
            if done >= 1:
                break
        assert done >= 1, "the sweep finished no point in time"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    ds = open_dataset(out)
    status = ds["status"].values
    kept = {float(v): float(w) for v, s, w in zip(ds["sigma_q"].values, status, ds["wall_s"].values) if s == 1}
    assert 1 <= len(kept) < 6, "kill the sweep midway"
    summary = sweep(parse_grid(grid), out, client=client, progress=False)
    assert summary.skipped == len(kept) and summary.finished == 6 and summary.failed == 0
    ds = open_dataset(out)
    assert (ds["status"].values == STATUS["done"]).all()
    for v, w in kept.items():  # finished points were not run again
        assert float(ds["wall_s"].sel(sigma_q=v)) == w
    assert math.isfinite(float(ds["sim"].sel(sigma_q=0.05, tap="attn.hook_z", layer=0, quantity="var",
                                             position=8)))
