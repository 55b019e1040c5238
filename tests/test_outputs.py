"""Output paths, atomic writes, LaTeX notation and the CLI guard (issue 13, items 4 and 5)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from theory._guard import EXIT_INTERNAL_ERROR, guarded
from theory._latex import DEFAULT_NOTATION, Notation
from theory._outputs import atomic_path, atomic_write_text, check_output_dir, check_output_file

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"d_model": 16, "n_heads": 2, "n_layers": 1, "seq_len": 8, "attn_only": True}


@pytest.fixture
def spec_path(tmp_path):
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SPEC))
    return path


# ---------------------------------------------------------------- theory._outputs
def test_output_file_checks(tmp_path, spec_path):
    assert check_output_file(tmp_path / "r.json", inputs=[spec_path]) == (tmp_path / "r.json", None)
    (tmp_path / "r.json").write_text("{}")
    assert "will be replaced" in check_output_file(tmp_path / "r.json")[1]
    refusals = {
        str(spec_path): "is an input",
        str(tmp_path / "sub" / ".." / "spec.json"): "is an input",  # the same file by another name
        str(tmp_path): "is a folder",
        str(tmp_path / "missing" / "r.json"): "does not exist",
        "/proc/r.json": "cannot write",
        str(tmp_path / "r.npz"): "must end in .json",
    }
    (tmp_path / "sub").mkdir()
    for path, words in refusals.items():
        with pytest.raises(ValueError, match=words):
            check_output_file(path, inputs=[spec_path], suffix=".json")
    assert not (tmp_path / "missing").exists()  # a file's folder is never created
    link = tmp_path / "link.json"
    link.symlink_to(spec_path)
    with pytest.raises(ValueError, match="symbolic link"):
        check_output_file(link)
    assert spec_path.read_text() == json.dumps(SPEC)


def test_output_dir_checks(tmp_path, spec_path):
    out, note = check_output_dir(tmp_path / "new" / "deeper", will_write=("a.txt",))
    assert out.is_dir() and note is None
    (out / "a.txt").write_text("old")
    assert "a.txt exist and will be replaced" in check_output_dir(out, will_write=("a.txt", "b.txt"))[1]
    with pytest.raises(ValueError, match="is an input"):
        check_output_dir(tmp_path, will_write=("spec.json",), inputs=[spec_path])
    with pytest.raises(ValueError, match="exists and is not a folder"):
        check_output_dir(spec_path)
    with pytest.raises(ValueError, match="cannot create"):
        check_output_dir("/proc/new-folder")


def test_atomic_writes_leave_old_or_new_never_half(tmp_path):
    target = tmp_path / "r.json"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["r.json"]
    with atomic_path(tmp_path / "a.npz") as tmp:  # np.savez keeps the name: the suffix is kept
        np.savez(tmp, x=np.arange(3))
    with np.load(tmp_path / "a.npz") as npz:
        assert npz["x"].tolist() == [0, 1, 2]
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "r.json"]


# ---------------------------------------------------------------- every CLI that writes
def _cli(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=env)


def test_no_cli_overwrites_its_input_or_writes_through_a_link(tmp_path, spec_path):
    before = spec_path.read_text()
    (tmp_path / "elsewhere").write_text("keep")
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "report.md").symlink_to(tmp_path / "elsewhere")
    cases = [
        ("simulate", ["run", "--spec", str(spec_path), "--samples", "2", "--seed", "0", "--out", str(spec_path)], "is an input"),
        ("simulate", ["run", "--spec", str(spec_path), "--samples", "2", "--seed", "0",
                      "--out", str(tmp_path / "spec.npz")], "must end in .json"),
        ("simulate", ["run", "--spec", str(spec_path), "--samples", "2", "--seed", "0", "--out", str(tmp_path / "r.json"),
                      "--checkpoint", str(spec_path)], "is an input"),
        ("simulate", ["run", "--spec", str(spec_path), "--samples", "2", "--seed", "0", "--out", "/proc/r.json"], "cannot write"),
        ("theory", ["latex", "--spec", str(spec_path), "--out", str(spec_path)], "is an input"),
        ("verify", ["--spec", str(spec_path), "--out", str(tmp_path / "report"), "--samples", "2"], "symbolic link"),
        ("simulate", ["probe", "--spec", str(spec_path), "--out", str(spec_path)], "is an input"),
    ]
    for module, args, words in cases:
        done = _cli(module, *args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        assert words in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert spec_path.read_text() == before and (tmp_path / "elsewhere").read_text() == "keep"


def test_simulate_run_says_what_it_replaces_and_writes_both_files(tmp_path, spec_path):
    args = ["run", "--spec", str(spec_path), "--samples", "3", "--seed", "0", "--out", str(tmp_path / "r.json"), "--no-progress"]
    assert _cli("simulate", *args, cwd=tmp_path).returncode == 0
    again = _cli("simulate", *args, cwd=tmp_path)
    assert again.returncode == 0 and "r.json exists and will be replaced" in again.stderr
    assert json.loads((tmp_path / "r.json").read_text())["meta"]["samples"] == 3
    assert (tmp_path / "r.npz").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json", "r.npz", "spec.json"]  # no temporary left


# ---------------------------------------------------------------- LaTeX notation
@pytest.mark.parametrize("value", [
    r"\immediate\write18{touch /tmp/x}", r"\input{/etc/passwd}", r"\include{x}", r"\openin5=/etc/passwd",
    r"\csname input\endcsname", r"\def\x{y}", r"\catcode`\@=11", "^^5cinput{/etc/passwd}", "$x$", "x % comment",
    "a\nb", r"\\", "}{", r"\newcommand{\x}{y}", r"\read16 to \x", r"\special{x}", "x#1", "a&b",
])
def test_notation_refuses_what_is_not_a_math_fragment(value):
    with pytest.raises(ValueError, match="notation: 'sigma_q'"):
        Notation.from_mapping({"sigma_q": value})


@pytest.mark.parametrize("value", [r"\sigma_{Q}", r"\mathrm{W}_{\!q}", r"\tilde{\sigma}'", r"\operatorname{std}(W_q)",
                                   r"\boldsymbol{\Sigma}^{1/2}", "D", r"\lVert e\rVert"])
def test_notation_takes_math_fragments(value):
    assert Notation.from_mapping({"sigma_q": value})["sigma_q"] == value


def test_default_notation_passes_its_own_rule():
    assert Notation.from_mapping(DEFAULT_NOTATION).as_dict() == DEFAULT_NOTATION


def test_notation_file_errors_are_one_line(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 60_000)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"sigma_q": "x" * 100_000}))
    for path, words in [(deep, "nested too deeply"), (big, "larger than|at most")]:
        with pytest.raises(ValueError, match=words):
            Notation.load(path)


# ---------------------------------------------------------------- the guard
def test_guard_turns_a_bug_into_one_line_and_status_70(capsys, monkeypatch):
    @guarded("prog")
    def broken(argv=None):
        raise TypeError("deep\ninside " + "x" * 1000)

    monkeypatch.delenv("NOPE_TRACEBACK", raising=False)
    assert broken() == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.startswith("prog: internal error: TypeError: deep inside") and err.count("\n") == 1 and len(err) < 400
    monkeypatch.setenv("NOPE_TRACEBACK", "1")
    with pytest.raises(TypeError):
        broken()

    @guarded("prog")
    def hungry(argv=None):
        raise MemoryError

    assert hungry() == 2 and "out of memory" in capsys.readouterr().err
