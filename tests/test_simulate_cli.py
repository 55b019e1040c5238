"""`python -m simulate run|bench`: the JSON schema, identical stats for any chunk size,
resume through the CLI, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from simulate.__main__ import main
from tests.simulate_helpers import one_thread, small_spec  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def spec_path(tmp_path):
    path = tmp_path / "spec.json"
    small_spec(n_layers=2, attn_only=False, seq_len=8).save(str(path))
    return path


def _run(spec_path, out, *extra):
    argv = ["run", "--spec", str(spec_path), "--samples", "40", "--seed", "3", "--out", str(out),
            "--taps", "blocks.0.attn.hook_z,blocks.0.attn.hook_pattern,blocks.1.hook_resid_post", "--no-progress", *extra]
    assert main(argv) == 0
    return json.loads(out.read_text())


def test_run_writes_the_documented_schema(spec_path, tmp_path):
    data = _run(spec_path, tmp_path / "a.json", "--positions", "1,2,4-6")
    meta, stats = data["meta"], data["stats"]
    for key in ("spec", "seed", "measure", "device", "dtype", "versions", "wall_time_s", "samples", "taps"):
        assert key in meta
    assert meta["measure"] == "annealed" and meta["device"] == "cpu" and meta["dtype"] == "float32"
    assert list(stats["blocks.0.attn.hook_z"]) == ["1", "2", "4", "5", "6"]
    z = stats["blocks.0.attn.hook_z"]["4"]
    assert {"mean", "mean_se", "var", "var_se", "n"} <= set(z) and z["n"] == 40
    assert {"sum_sq", "sum_sq_se"} <= set(stats["blocks.0.attn.hook_pattern"]["2"])
    assert (tmp_path / "a.npz").exists()


def test_same_seed_same_stats_for_any_chunk_size(spec_path, tmp_path):
    a = _run(spec_path, tmp_path / "a.json", "--chunk-size", "40")
    b = _run(spec_path, tmp_path / "b.json", "--chunk-size", "3")
    assert a["stats"] == b["stats"]
    assert json.dumps(a["stats"]) == json.dumps(b["stats"])


def test_resume_through_the_cli(spec_path, tmp_path):
    straight = _run(spec_path, tmp_path / "a.json", "--chunk-size", "7")
    ckpt = tmp_path / "run.ckpt"
    argv = ["run", "--spec", str(spec_path), "--samples", "21", "--seed", "3", "--out", str(tmp_path / "part.json"),
            "--taps", "blocks.0.attn.hook_z,blocks.0.attn.hook_pattern,blocks.1.hook_resid_post", "--no-progress",
            "--chunk-size", "7", "--checkpoint", str(ckpt)]
    assert main(argv) == 0  # as if killed after 21 samples
    resumed = _run(spec_path, tmp_path / "b.json", "--chunk-size", "7", "--checkpoint", str(ckpt))
    assert resumed["meta"]["resumed_from"] == 21
    assert resumed["stats"] == straight["stats"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--spec", "missing.json", "--samples", "2", "--seed", "0", "--out", "o.json"], "cannot read spec file"),
        (["run", "--spec", "{spec}", "--samples", "0", "--seed", "0", "--out", "o.json"], "samples must be"),
        (["run", "--spec", "{spec}", "--samples", "2", "--seed", "0", "--out", "o.json", "--taps", "blocks.9.attn.hook_z"], "not in this network"),
        (["run", "--spec", "{spec}", "--samples", "2", "--seed", "0", "--out", "o.json", "--positions", "1,x"], "--positions must be integers"),
        (["run", "--spec", "{spec}", "--samples", "2", "--seed", "0", "--out", "o.json", "--positions", "0"], "positions must lie"),
        (["run", "--spec", "{spec}", "--samples", "2", "--seed", "0", "--out", "o.json", "--measure", "tempered"], "invalid choice"),
        (["run", "--spec", "{spec}", "--samples", "2", "--seed", "0", "--out", "/no/such/dir/o.json"], "does not exist"),
        (["bench", "--widths", "a"], "not an integer"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, message, spec_path, tmp_path, capsys):
    args = [a.replace("{spec}", str(spec_path)) for a in args]
    with pytest.raises(SystemExit) if not args or "tempered" in args else _no_raise():
        code = main(args)
        assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "Traceback" not in err and len(err.splitlines()) == 1, err


class _no_raise:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_subprocess_exit_status(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    bad = subprocess.run([sys.executable, "-m", "simulate", "run", "--spec", str(tmp_path / "nope.json"),
                          "--samples", "2", "--seed", "0", "--out", str(tmp_path / "o.json")],
                         capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr

def test_bench_json_schema(capsys):
    assert main(["bench", "--json", "--widths", "16", "--seq-len", "8", "--seconds", "0.05"]) == 0
    data = json.loads(capsys.readouterr().out)
    # today's keys (issue 14) kept; per dtype, the peak, GPT-2 small and the machine added (issue 18)
    assert set(data) == {"d16", "peak", "gpt2_small", "machine"} and {"engine", "loop", "ceiling"} <= set(data["d16"])
    assert all(data["d16"][k] > 0 for k in ("engine", "loop", "ceiling"))
    assert set(data["peak"]) == {"float32", "bfloat16"} and data["d16"]["bfloat16"]["engine_of_peak"] > 0


def test_help_lists_every_subcommand_and_a_wrong_one_names_them(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in ("run", "probe", "train", "bench"):
        assert f"    {name} " in out, name
    with pytest.raises(SystemExit) as exit_info:
        main(["nonsense"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'probe'" in err and "'train'" in err and "Traceback" not in err


def test_packages_have_a_version_and_type_marker():
    import importlib.metadata
    from pathlib import Path

    import simulate
    import theory
    import verify

    assert theory.__version__ == simulate.__version__ == verify.__version__ == importlib.metadata.version("nope-theory")
    for package in (theory, simulate, verify):
        assert (Path(package.__file__).parent / "py.typed").is_file()
