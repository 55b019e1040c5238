"""`python -m verify`: a small end-to-end run, exit statuses, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import verify
import verify.job
import verify.report
from theory import ModelSpec
from verify.cli import main

SMALL = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=8, attn_only=True, sigma_q=0.2, sigma_k=0.2)


@pytest.fixture
def spec_file(tmp_path):
    path = tmp_path / "spec.json"
    SMALL.save(str(path))
    return path


def test_end_to_end(spec_file, tmp_path, capsys):
    out = tmp_path / "out"
    rc = main(["--spec", str(spec_file), "--samples", "200", "--calibration-runs", "4", "--out", str(out),
               "--seed", "3", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.out + captured.err
    assert captured.out.startswith("verify: PASS")
    data = json.loads((out / "results.json").read_text())
    assert data["run"]["seed"] == 3 and data["run"]["samples"] == 200
    assert data["calibration"]["runs"] == 4
    assert data["run"]["command"].startswith("python -m verify --spec")
    assert (out / "zscores.pdf").exists()


def test_exit_status_one_when_a_check_fails(spec_file, tmp_path, monkeypatch, capsys):
    real = verify.job.theory_table

    def wrong(spec, positions, level="best", *args, **kwargs):
        table = real(spec, positions, level, *args, **kwargs)
        return verify.MUTANTS["factor H dropped"](table) if level == "best" else table

    monkeypatch.setattr(verify.job, "theory_table", wrong)
    monkeypatch.setattr(verify.report, "save_figures", lambda report, out: {})  # figures: tested elsewhere
    rc = main(["--spec", str(spec_file), "--samples", "150", "--no-calibration", "--out", str(tmp_path), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    assert captured.out.startswith("verify: FAIL")
    assert json.loads((tmp_path / "results.json").read_text())["calibration"] is None


@pytest.mark.parametrize(
    "args, message",
    [
        (["--samples", "0"], "--samples must be an integer >= 2"),
        (["--samples", "many"], "--samples must be an integer >= 2"),
        (["--seed", "-1"], "--seed must be an integer >= 0"),
        (["--alpha", "2"], "alpha must be a number in (0, 1)"),
        (["--preset", "huge"], "invalid choice: 'huge'"),
        (["--spec", "/nonexistent/spec.json"], "cannot read spec file"),
        (["--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_bad_input_one_line(args, message, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and err.startswith("verify: error:")


def test_bad_spec_contents(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"d_model": 30, "n_heads": 4}))
    assert main(["--spec", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "divisible" in err and err.count("\n") == 1
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"d_model": 16, "n_heads": 2, "vocab_size": 10}))
    assert main(["--spec", str(vocab), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "vocab_size null" in capsys.readouterr().err


def test_bad_device_before_any_work(tmp_path, capsys):
    assert main(["--device", "gpu", "--out", str(tmp_path), "--quiet"]) == 2
    assert "device must be 'auto', 'cpu' or 'cuda" in capsys.readouterr().err


def test_out_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["--out", str(f)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err


def test_module_entry_point_bad_input_has_no_traceback():
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "verify", "--samples", "1"], capture_output=True, text=True,
                          timeout=120, cwd=root)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["verify: error: argument --samples: --samples must be an integer >= 2, got '1'"]
