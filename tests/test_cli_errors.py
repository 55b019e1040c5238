"""One argument parser and one error style for every command line (issue 21, item 5).

Every CLI builds its parsers from `theory._argparse.OneLineParser` (checked in the source with
`ast`: no other ArgumentParser, no class of its own), and a usage error, whichever command or
sub-command, is one line ``<command>: error: <message>`` with exit status 2, no usage dump.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

from theory._argparse import OneLineParser, command_name, error_line, interrupted, usage_error

ROOT = Path(__file__).resolve().parents[1]
CLI_MODULES = ["theory/cli.py", "simulate/__main__.py", "simulate/experiments/probe/cli.py",
               "simulate/experiments/train/cli.py", "verify/cli.py", "verify/sweep/cli.py"]


@pytest.mark.parametrize("path", CLI_MODULES)
def test_every_cli_builds_its_parsers_from_the_one_parser(path):
    tree = ast.parse((ROOT / path).read_text())
    built, own = [], []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if name.endswith("ArgumentParser") or name.endswith("Parser"):
                built.append(name)
        if isinstance(node, ast.ClassDef) and any("Parser" in ast.unparse(b) for b in node.bases):
            own.append(node.name)
    assert built and set(built) == {"OneLineParser"}, built
    assert own == []


# (module with main, argv, the command the line names)
USAGE_ERRORS = [
    ("theory.cli", ["--bogus"], "theory"),
    ("theory.cli", ["derive", "--bogus"], "theory"),
    ("theory.cli", ["nope"], "theory"),
    ("simulate.__main__", ["nope"], "simulate"),
    ("simulate.__main__", ["run", "--bogus"], "simulate"),
    ("simulate.__main__", ["bench", "--bogus"], "simulate"),
    ("simulate.experiments.probe.cli", ["--out", "x", "--bogus"], "simulate probe"),
    ("verify.cli", ["--bogus"], "verify"),
    ("verify.sweep.cli", ["--bogus"], "verify sweep"),
]


@pytest.mark.parametrize("module, argv, command", USAGE_ERRORS, ids=[" ".join(a) + f" ({m})" for m, a, _ in USAGE_ERRORS])
def test_a_usage_error_is_one_line_and_exit_2(capsys, module, argv, command):
    main = importlib.import_module(module).main
    try:
        status = main(argv)
    except SystemExit as stop:
        status = stop.code
    out, err = capsys.readouterr()
    assert status == 2
    assert err.startswith(f"{command}: error: ") and err.count("\n") == 1, err
    assert "usage:" not in err and "Traceback" not in err and out == ""


def test_simulate_lists_every_subcommand_when_one_is_wrong(capsys):
    from simulate.__main__ import main

    with pytest.raises(SystemExit):
        main(["nope"])
    err = capsys.readouterr().err
    assert all(f"'{c}'" in err for c in ("run", "probe", "train", "bench")), err


def test_the_error_helpers(capsys):
    assert command_name("python -m simulate probe") == "simulate probe"
    assert command_name("python3.11 -m verify") == "verify"
    assert error_line("verify", "two\n  lines") == "verify: error: two lines"
    assert usage_error("theory", ValueError("bad\nfield")) == 2
    assert interrupted("verify sweep", "rerun") == 130
    assert capsys.readouterr().err == "theory: error: bad field\nverify sweep: interrupted; rerun\n"
    parser = OneLineParser(prog="python -m simulate")
    sub = parser.add_subparsers(dest="command", parser_class=OneLineParser)
    run = sub.add_parser("run")
    assert run.error_prefix == "simulate"  # a sub-command reports under its command's name
    with pytest.raises(SystemExit) as stop:
        run.parse_args(["--bogus"])
    assert stop.value.code == 2 and capsys.readouterr().err == "simulate: error: unrecognized arguments: --bogus\n"
