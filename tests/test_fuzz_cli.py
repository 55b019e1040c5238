"""Fuzz every command line in-process with hostile and extreme specs and arguments (issue 13).

Each call must end in a result (exit 0; 1 where a command documents it: verify's failed
check, simulate run's "nothing usable"), or in exit status 2 with exactly one line on stderr
of at most `MAX_ERROR_CHARS` characters that names the culprit (the spec field that was
changed, or the spec itself when it does not parse). Never a traceback (the guard's exit
status 70 counts as one), never a hang (`CALL_SECONDS` per call, enforced by SIGALRM),
never more memory than `MEMORY_HEADROOM` above what the process already maps (enforced
with RLIMIT_AS, so an oversized allocation fails instead of thrashing the machine).

Derandomised in CI (tests/conftest.py's profile); HYPOTHESIS_PROFILE=dev explores more.
The work settings are the smallest each command takes, so a legal spec costs seconds.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import re
import resource
import signal
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from theory import cli as theory_cli
from theory.spec import ModelSpec

MAX_ERROR_CHARS = 400
CALL_SECONDS = 120  # a legal tiny spec takes seconds; verify's report (sympy, figures, LaTeX) the longest
MEMORY_HEADROOM = 6 << 30  # bytes of address space a call may add (the machine has 24 GiB)
EXIT_OK = {0}

BASE = {"d_model": 8, "n_heads": 2, "n_layers": 1, "seq_len": 4, "attn_only": True}
FIELDS = [f for f in ModelSpec.__dataclass_fields__]

# ---------------------------------------------------------------- hostile values
_MAGNITUDES = [0, -1, 1, 2, 3, 7, 2**53 + 1, 10**9, 10**20, 10**300,
               0.0, -0.0, 0.5, 1.5, 10.0, 100.0, 1e-300, 5e-324, 1e-30, 1e-200, 1e154, 1e200, 1e308, 1e300,
               math.nan, math.inf, -math.inf]
_STRINGS = ["", "none", "gelu", "rope", "linear", "x" * 100_000, "\u0000", "\u202e\u00e9", "{\"symbol\": \"d\"}"]


def _nest(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value


hostile_value = st.one_of(
    st.sampled_from(_MAGNITUDES),
    st.sampled_from(_STRINGS),
    st.none(),
    st.booleans(),
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.integers(0, 9), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.sampled_from([{"symbol": "d"}, {"symbol": "sigma_q"}, {"symbol": "weird"}, {"symbol": 7}, {"symbol": "d", "x": 1}]),
    st.integers(1, 900).map(_nest),
)

RAW_TEXTS = ["", "not json", "[" * 100_000, "{", '{"d_model": 1e999}', "[]", "null", "1" * 5000,
             '{"d_model": 8, "d_model": "dup"}', '{"d_model": NaN}', '{"sigma_q": Infinity}']


@st.composite
def hostile_spec(draw) -> tuple[str, set[str]]:
    """(the spec file's text, the names one of which an error must mention)."""
    if draw(st.integers(0, 9)) == 0:
        text = draw(st.sampled_from(RAW_TEXTS))
        return text, {"spec"} | {f for f in FIELDS if f in text}
    spec = dict(BASE)
    changed = set()
    for field in draw(st.lists(st.sampled_from(FIELDS), min_size=1, max_size=2, unique=True)):
        spec[field] = draw(hostile_value)
        changed.add(field)
    if draw(st.integers(0, 7)) == 0:
        extra = draw(st.sampled_from(["unknown", "x" * 10_000, "d_modle"]))
        spec[extra] = 1
        changed |= {"unknown"}
    text = json.dumps(spec, allow_nan=True)
    return text, changed | {"spec"}


# ---------------------------------------------------------------- one bounded call
class Hang(Exception):
    pass


def _mapped_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmSize:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmSize in /proc/self/status")


@contextlib.contextmanager
def _bounded(seconds: float, headroom: int):
    """SIGALRM after ``seconds``; address space limited to what is mapped now plus ``headroom``."""
    def alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old_handler = signal.signal(signal.SIGALRM, alarm)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = _mapped_bytes() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old_handler)
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def call(main, argv: list[str], seconds: float = CALL_SECONDS) -> tuple[int, str, str, float]:
    """Run ``main(argv)`` in-process, bounded: (exit status, stdout, stderr, seconds)."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    with _bounded(seconds, MEMORY_HEADROOM), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 2
    return code, out.getvalue(), err.getvalue(), time.perf_counter() - t0


def assert_answered(code: int, stdout: str, stderr: str, culprits: set[str], ok=EXIT_OK) -> None:
    assert "Traceback" not in stderr, stderr[-2000:]
    assert code != 70, f"internal error (a bug): {stderr.strip()[:500]}"
    if code in ok:
        return
    assert code == 2, f"exit status {code}: {stderr.strip()[:500]}"
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {stderr[:1000]}"
    assert len(lines[0]) <= MAX_ERROR_CHARS, f"{len(lines[0])} characters: {lines[0][:500]}"
    named = {c for c in culprits if re.search(re.escape(c), lines[0])}
    assert named, f"the error names none of {sorted(culprits)}: {lines[0]}"


def _spec_file(folder: Path, text: str) -> str:
    path = folder / "spec.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    return str(path)


FUZZ = settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow], deadline=None)


# ---------------------------------------------------------------- the entry points
@FUZZ
@given(hostile_spec(), st.sampled_from(["derive", "predict", "predict-default", "latex"]))
def test_theory_cli_answers_every_spec(spec, command):
    text, culprits = spec
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = _spec_file(tmp, text)
        argv = {
            "derive": ["derive", "--spec", path],
            "predict": ["predict", "--spec", path, "--positions", "1,2"],
            "predict-default": ["predict", "--spec", path],
            "latex": ["latex", "--spec", path, "--out", str(tmp / "tex")],
        }[command]
        code, stdout, stderr, _ = call(theory_cli.main, argv)
        assert_answered(code, stdout, stderr, culprits | ({"--positions"} if command == "predict" else set()))
        if code == 0 and command.startswith("predict"):
            assert not re.search(r"\bnan\b|\binf\b", stdout, re.IGNORECASE), "a NaN or inf printed as a result"


@FUZZ
@given(hostile_spec(), st.sampled_from(["annealed", "quenched"]), st.sampled_from(["float32", "float64"]))
def test_simulate_run_answers_every_spec(spec, measure, dtype):
    from simulate.__main__ import main

    text, culprits = spec
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        argv = ["run", "--spec", _spec_file(tmp, text), "--samples", "2", "--seed", "0", "--out", str(tmp / "r.json"),
                "--measure", measure, "--dtype", dtype, "--threads", "1", "--no-progress"]
        code, stdout, stderr, _ = call(main, argv)
        assert_answered(code, stdout, stderr, culprits, ok={0, 1})
        if code in (0, 1):
            assert (tmp / "r.json").is_file(), "a result was announced but not written"


@settings(max_examples=12, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(hostile_spec())
def test_simulate_probe_answers_every_spec(spec):
    from simulate.experiments.probe.cli import main

    text, culprits = spec
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        argv = ["--spec", _spec_file(tmp, text), "--out", str(tmp / "probe"), "--sequences", "16", "--networks", "1",
                "--sigmas", "none", "--probes", "variance_only,theory", "--positional", "none", "--no-progress"]
        code, stdout, stderr, _ = call(main, argv)
        assert_answered(code, stdout, stderr, culprits)


@settings(max_examples=10, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(hostile_spec())
def test_verify_answers_every_spec(spec):
    from verify.cli import main

    text, culprits = spec
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        argv = ["--spec", _spec_file(tmp, text), "--samples", "3", "--no-calibration", "--preset", "quick",
                "--out", str(tmp / "report"), "--quiet"]
        code, stdout, stderr, _ = call(main, argv)
        assert_answered(code, stdout, stderr, culprits, ok={0, 1})


# simulate train takes no spec: its arguments and its corpus file are what a user can get wrong.
_TRAIN_ARGS = {
    "--steps": ["-1", "0", "1", "2", "x", "1e3", "99999999999999999999999"],
    "--holdout": ["-1", "0", "0.5", "1", "2", "nan", "inf", "x"],
    "--seed": ["-5", "0", "7", "x", str(2**64)],
    "--positional": ["none", "learned", "none,learned", "", ",", "rope", "x" * 10_000],
    "--sequences": ["-1", "0", "1", "2", "8"],
    "--groups": ["-1", "0", "1", "2", "9"],
    "--threads": ["0", "1", "-3"],
}
_CORPORA = [b"", b"tiny", b"\xff\xfe\x00" * 100, ("a plain text corpus. " * 400).encode(), b"\x00" * 5000]


@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(_TRAIN_ARGS)), st.integers(0, 10**6), max_size=3),
       st.sampled_from(_CORPORA), st.booleans())
def test_simulate_train_answers_every_argument(choices, corpus, measure):
    from simulate.experiments.train.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "corpus.txt").write_bytes(corpus)
        argv = ["--preset", "tiny", "--out", str(tmp / "run"), "--corpus", str(tmp / "corpus.txt"), "--no-progress",
                "--no-figures", "--steps", "2", "--sequences", "8", "--groups", "2"]
        culprits = {"corpus"}
        for flag, index in choices.items():
            values = _TRAIN_ARGS[flag]
            argv += [flag, values[index % len(values)]]  # a later flag wins in argparse
            culprits.add(flag)
            culprits.add(flag.lstrip("-"))
        if not measure:
            argv.append("--no-measure")
        code, stdout, stderr, _ = call(main, argv)
        assert_answered(code, stdout, stderr, culprits)


def test_the_bounds_themselves_work():
    """The harness catches what it claims to: a hang, an allocation beyond the headroom."""
    def sleeper(argv):
        time.sleep(5)
        return 0

    with pytest.raises(Hang):
        call(sleeper, [], seconds=0.2)

    def hog(argv):
        return len(bytearray(MEMORY_HEADROOM + (1 << 30)))

    with pytest.raises(MemoryError):
        call(hog, [])


# ---------------------------------------------------------------- the issue's reproducers
REPRO_BASE = {"d_model": 16, "n_heads": 2, "n_layers": 2, "seq_len": 8}
THEORY_REPRODUCERS = [
    {"sigma_embed": 0.0, "ln_eps": 1e-5},
    *({"sigma_embed": s} for s in (1e-300, 5e-324, 1e-30, 1e200, 1e308)),
    {"sigma_q": 1e154}, {"sigma_v": 1e154},
    {"sigma_q": 100.0, "attn_scale": "linear"}, {"sigma_q": 10.0, "sigma_k": 10.0, "attn_scale": "linear"},
    {"d_model": 2, "n_heads": 1},
]
SIMULATE_REPRODUCERS = [
    {"sigma_q": 1e20, "sigma_k": 1e20},
    {"sigma_embed": 1e30, "ln_eps": 0.0}, {"sigma_embed": 1e-30, "ln_eps": 0.0}, {"sigma_embed": 1e-200, "ln_eps": 0.0},
    {"sigma_embed": 0.0, "ln_eps": 1e-5}, {"sigma_v": 1e154}, {"d_model": 2, "n_heads": 1},
]
SIZE_REPRODUCERS = [
    {"d_model": 10**9, "n_heads": 1}, {"d_model": 10**20, "n_heads": 1}, {"n_layers": 10**9}, {"n_layers": 10**300},
    {"seq_len": 10**9},
]


def _repro_file(tmp_path: Path, changes: dict) -> tuple[str, set[str]]:
    return _spec_file(tmp_path, json.dumps({**REPRO_BASE, **changes})), set(changes)


@pytest.mark.parametrize("changes", THEORY_REPRODUCERS + SIZE_REPRODUCERS, ids=lambda c: json.dumps(c)[:60])
@pytest.mark.parametrize("command", ["derive", "predict"])
def test_issue_reproducers_theory(changes, command, tmp_path):
    path, culprits = _repro_file(tmp_path, changes)
    argv = ["derive", "--spec", path] if command == "derive" else ["predict", "--spec", path, "--positions", "1,2"]
    code, stdout, stderr, _ = call(theory_cli.main, argv)
    assert_answered(code, stdout, stderr, culprits)
    if code == 0 and command == "predict":
        assert not re.search(r"\bnan\b|\binf\b", stdout, re.IGNORECASE), stdout[:2000]


@pytest.mark.parametrize("changes", SIMULATE_REPRODUCERS + SIZE_REPRODUCERS, ids=lambda c: json.dumps(c)[:60])
@pytest.mark.parametrize("dtype,method", [("float32", "auto"), ("float32", "explicit"), ("float64", "auto")])
def test_issue_reproducers_simulate(changes, dtype, method, tmp_path):
    from simulate.__main__ import main

    path, culprits = _repro_file(tmp_path, changes)
    argv = ["run", "--spec", path, "--samples", "3", "--seed", "0", "--out", str(tmp_path / "r.json"),
            "--dtype", dtype, "--method", method, "--threads", "1", "--no-progress"]
    code, stdout, stderr, _ = call(main, argv)
    assert_answered(code, stdout, stderr, culprits, ok={0, 1})
    if code == 1:  # every sample non-finite: said so, and no statistic pretends to be a number
        assert "nothing usable" in stderr or "no finite" in stderr, stderr
        result = json.loads((tmp_path / "r.json").read_text())
        assert all(v.get("mean") is None for per_m in result["stats"].values() for v in per_m.values())


def test_verify_refuses_a_spec_outside_theory_before_simulating(tmp_path, monkeypatch):
    import simulate
    from verify.cli import main

    def no_simulation(*args, **kwargs):
        raise AssertionError("verify simulated a spec that theory cannot cover")

    monkeypatch.setattr(simulate, "run", no_simulation)
    path, _ = _repro_file(tmp_path, {"d_model": 2, "n_heads": 1})
    code, stdout, stderr, _ = call(main, ["--spec", path, "--samples", "3", "--no-calibration", "--out",
                                          str(tmp_path / "report"), "--quiet"])
    assert code == 2 and "d_model" in stderr and len(stderr.strip().splitlines()) == 1, stderr
