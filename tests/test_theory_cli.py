"""`python -m theory derive|predict`: output formats and one-line errors."""

import json
import subprocess
import sys

import pytest

from theory import ModelSpec
from theory.cli import main
from theory.taps import ATTENTION_TAPS, MLP_TAPS


def run(*args):
    return subprocess.run([sys.executable, "-m", "theory", *args], capture_output=True, text=True, timeout=300)


@pytest.fixture()
def small_spec(tmp_path):
    path = tmp_path / "spec.json"
    ModelSpec(d_model=64, n_heads=4, seq_len=256, sigma_k=0.1).save(str(path))
    return str(path)


def test_predict_json_schema(small_spec):
    proc = run("predict", "--spec", small_spec, "--positions", "1,2,8,256", "--level", "best", "--layers", "0", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["measure"] == "annealed" and out["level"] == "best"
    assert out["spec"]["d_model"] == 64
    assert set(out["predictions"]) == {f"blocks.0.{t}" for t in ATTENTION_TAPS + MLP_TAPS}
    assert out["meta"]["blocks.0.hook_resid_post"]["level"] == "approximate"
    z = out["predictions"]["blocks.0.attn.hook_z"]
    assert list(z) == ["1", "2", "8", "256"] and set(z["8"]) == {"mean", "var"}
    assert z["256"]["var"] < z["1"]["var"]
    assert {"mean", "sum_sq"} <= set(out["predictions"]["blocks.0.attn.hook_pattern"]["8"])


def test_derive_formats(capsys, small_spec):
    assert main(["derive", "--spec", small_spec]) == 0
    text = capsys.readouterr().out
    assert "blocks.0.attn.hook_z" in text and "leading (paper)" in text and "coupling" in text
    assert main(["derive", "--spec", small_spec, "--format", "latex"]) == 0
    latex_out = capsys.readouterr().out
    assert "\\begin{align" in latex_out and "\\label{eq:blocks.0.attn.hook_z" in latex_out
    assert main(["derive", "--spec", small_spec, "--format", "json", "--symbolic", "sigma_q,d_model"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["spec"]["sigma_q"] == {"symbol": "sigma_q"}
    assert "sigma_q" in data["steps"]["blocks.0.attn.hook_q"]["best"]["quantities"]["var"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["predict", "--positions", "0,1"], "positions"),
        (["predict", "--positions", "a"], "positions"),
        (["predict", "--level", "exact"], "level"),
        (["predict", "--spec", "/no/such/file.json"], "cannot read spec"),
        (["derive", "--symbolic", "attn_scale"], "cannot be symbolic"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line(capsys, args, message):
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_bad_spec_file_exits_nonzero_without_traceback(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"d_model": 64, "n_heads": 5}))
    proc = run("predict", "--spec", str(bad))
    assert proc.returncode == 2
    assert "n_heads" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
