"""Command line of the main job.

    python -m verify [--spec SPEC.json] [--preset quick|default|depth|paper] [--samples N]
                     [--out DIR] [--seed S] [--alpha A] [--no-calibration]
                     [--calibration-runs R] [--device auto|cpu|cuda] [--threads N] [--quiet]

Exit status: 0 every check passed; 1 a check failed (an exact one, or an approximate one
beyond its declared error); 2 bad input (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import shlex
import sys

from theory import ModelSpec
from theory._argparse import OneLineParser, UsageError, interrupted, usage_error
from theory._guard import guarded
from theory._outputs import check_output_dir

from .job import run
from .presets import PRESETS
from .report import console_summary, write_report
from .sweep.cli import main as sweep_main


SMALL_SAMPLE = 30  # below this many networks the report warns that its errors are rough




def _positive_int(name: str, minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{name} must be an integer >= {minimum}, got {text!r}")
        return value

    return parse


def _alpha(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"alpha must be a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"alpha must be a number in (0, 1), got {text!r}")
    return value


def build_parser() -> argparse.ArgumentParser:
    presets = ", ".join(f"{p.name}: {p.samples} networks, {p.calibration_runs} calibration runs" for p in PRESETS.values())
    parser = OneLineParser(
        prog="python -m verify",
        error_prefix="verify",
        description="Theory against simulation for every tap of every layer of a random NoPE transformer: "
        "derive the first layer (blocks.0) and run the depth recursion, simulate, judge every check (Holm), measure the accuracy "
        "per layer, compare the paper's leading order, calibrate verify itself, and write report.md, "
        "results.json, summary.tex, report.tex and figures.",
        epilog="Exit status: 0 all checks passed, 1 a check failed, 2 bad input.",
    )
    parser.add_argument("--spec", help="ModelSpec JSON file (default: the preset's spec; for quick, default and "
                        "paper 3 layers with MLP at width 64, T = 64; for depth 6 layers at width 256, T = 256)")
    parser.add_argument("--preset", default="default", choices=list(PRESETS), help=f"work size ({presets})")
    parser.add_argument("--samples", type=_positive_int("--samples", 2), help="networks to simulate (overrides the preset)")
    parser.add_argument("--out", default="report", help="output directory (default: report/)")
    parser.add_argument("--seed", type=_positive_int("--seed", 0), default=0, help="random seed (default 0)")
    parser.add_argument("--alpha", type=_alpha, default=0.01, help="family-wise error rate of the checks (default 0.01)")
    parser.add_argument("--no-calibration", action="store_true", help="skip the calibration of verify")
    parser.add_argument("--calibration-runs", type=_positive_int("--calibration-runs", 1),
                        help="calibration runs (overrides the preset)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda (main simulation)")
    parser.add_argument("--threads", type=_positive_int("--threads", 1), default=1,
                        help="torch threads for the main simulation (default 1: robust on a shared 2-core CPU; "
                        "more is ~1.5x faster on an idle machine)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16"),
                        help="simulate's dtype for the simulation and the calibration (bfloat16: matrix products only)")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser


def _load_spec(path: str | None) -> ModelSpec | None:
    if path is None:
        return None  # the preset's spec (DEFAULT_SPEC unless the preset names one)
    return ModelSpec.load(path)


# The files the report writes at the top of --out (figures and derivation/ beside them).
REPORT_FILES = ("report.md", "results.json", "summary.tex", "report.tex")


def _prepare_out(path: str, spec_path: str | None) -> None:
    """Check --out before the work: a writable folder (created if missing) that holds no input."""
    try:
        _, note = check_output_dir(path, "--out", inputs=[spec_path], will_write=REPORT_FILES)
    except ValueError as err:
        raise UsageError(str(err)) from None
    if note:
        print(f"verify: {note}", file=sys.stderr)


@guarded("verify")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["sweep"]:  # python -m verify sweep ...: regime maps (verify.sweep, docs/sweep.md)
        return sweep_main(argv[1:])
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # a usage error (one line on stderr, status 2) or --help (0)
        return int(stop.code or 0)
    try:
        report = _run(args, argv)
    except UsageError as err:
        return usage_error("verify", err)
    except KeyboardInterrupt:
        return interrupted("verify")
    print(console_summary(report, args.out))
    _warnings(report)
    return 0 if report.passed else 1


def _run(args: argparse.Namespace, argv: list[str]):
    """Check the inputs, run the job, write the report; a user error is a `UsageError`."""
    try:
        spec = _load_spec(args.spec)
    except ValueError as err:
        raise UsageError(f"--spec: {err}") from None
    _prepare_out(args.out, args.spec)
    command = "python -m verify" + ("" if not argv else " " + " ".join(shlex.quote(a) for a in argv))
    try:
        report = run(spec, preset=args.preset, samples=args.samples, seed=args.seed, alpha=args.alpha,
                     calibration=not args.no_calibration, calibration_runs=args.calibration_runs,
                     device=args.device, progress=not args.quiet, threads=args.threads, command=command,
                     dtype=args.dtype)
    except ValueError as err:
        raise UsageError(str(err).splitlines()[0]) from None
    try:
        write_report(report, args.out)
    except OSError as err:
        raise UsageError(f"cannot write the report to {args.out!r}: {err}") from None
    return report


def _warnings(report) -> None:
    if report.samples < SMALL_SAMPLE:
        print(f"verify: warning: {report.samples} networks: standard errors from so few are rough "
              f"(z referred to Student's t); use at least {SMALL_SAMPLE}", file=sys.stderr)
    if report.calibration is not None and not report.calibration.ok:
        print("verify: warning: the calibration is outside its binomial bounds; treat z-scores with care",
              file=sys.stderr)
