"""Command line: ``python -m simulate run|bench|probe|train ...``.

``run`` and ``bench`` are parsed here; ``probe`` and ``train`` own their parsers in
``simulate/experiments/probe/cli.py`` and ``simulate/experiments/train/cli.py``, each with
a ``main(argv) -> int``. Every parser is `theory._argparse.OneLineParser`.

Bad input exits with status 2 and a one-line message on stderr, never a traceback; a run
whose every sample gave NaN/inf writes its (null) result and exits with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import warnings

from theory import ModelSpec
from theory._argparse import OneLineParser, interrupted, usage_error
from theory._guard import guarded
from theory._outputs import check_output_file
from theory.positions import check_positions

from .engine import NothingUsableWarning, bench, format_table, run


def _int_list(text: str, what: str) -> list[int]:
    """``"64,768"`` or ranges ``"1-16"`` / ``"1..16"``, in the order given (``--widths``)."""
    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part[1:] or ".." in part:
            lo, hi = part.replace("..", "-").split("-", 1)
            try:
                out.extend(range(int(lo), int(hi) + 1))
            except ValueError:
                raise ValueError(f"{what}: {part!r} is not a range like 1-16") from None
            continue
        try:
            out.append(int(part))
        except ValueError:
            raise ValueError(f"{what}: {part!r} is not an integer") from None
    if not out:
        raise ValueError(f"{what}: give a comma-separated list such as 1,2,4,8")
    return out


# Subcommands whose parsers live in their own modules: name -> (module, its --help line).
_DELEGATED = {
    "probe": ("simulate.experiments.probe.cli", "probe frozen random models for position (python -m simulate probe --help)"),
    "train": ("simulate.experiments.train.cli",
              "train a byte-level NoPE language model and measure it (python -m simulate train --help)"),
}


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(error_prefix="simulate", prog="python -m simulate", description="Monte Carlo simulation of random NoPE transformers.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    r = sub.add_parser("run", help="simulate taps of a spec and write statistics as JSON (+ .npz)")
    r.add_argument("--spec", required=True, help="ModelSpec JSON file")
    r.add_argument("--samples", required=True, type=int, help="independent networks (annealed) or sequences (quenched)")
    r.add_argument("--seed", required=True, type=int)
    r.add_argument("--taps", default=None, help="comma-separated full tap names (default: every tap)")
    r.add_argument("--positions", default=None, help="1-based query positions, e.g. 1,2,4,8 or 1-64 (default: all)")
    r.add_argument("--measure", default="annealed", choices=("annealed", "quenched"))
    r.add_argument("--chunk-size", type=int, default=None)
    r.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    r.add_argument("--dtype", default="float32", choices=("float32", "float64", "bfloat16", "float16"),
                   help="float32 | float64 | bfloat16 (matrix products only; float16 on CUDA)")
    r.add_argument("--method", default="auto", choices=("auto", "explicit", "gram"))
    r.add_argument("--batch", type=int, default=1, help="sequences per network (annealed)")
    r.add_argument("--reservoir", type=int, default=0, help="raw values kept per position (in the .npz)")
    r.add_argument("--checkpoint", default=None, help="checkpoint file; an existing one is resumed")
    r.add_argument("--checkpoint-every", type=float, default=10.0, help="seconds between checkpoints")
    r.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    r.add_argument("--no-progress", action="store_true")
    r.add_argument("--force", action="store_true",
                   help="run even when the estimated memory or time exceeds the limits (see docs/simulate.md)")
    r.add_argument("--out", required=True, help="result JSON path (arrays go beside it as .npz)")

    # probe and train parse their own arguments (main() hands them over before this parser
    # runs); they are declared here so that --help lists them and a wrong name is told all four.
    for name, (_, text) in _DELEGATED.items():
        sub.add_parser(name, help=text, add_help=False).add_argument("args", nargs=argparse.REMAINDER)

    b = sub.add_parser("bench", help="time the engine against a per-network loop and the matmul ceiling")
    b.add_argument("--json", action="store_true",
                   help="print {d64: {engine, loop, ceiling, float32: {...}, bfloat16: {...}}, ..., peak, gpt2_small, "
                        "machine} as JSON")
    b.add_argument("--widths", default="64,768", help="model widths d (default 64,768)")
    b.add_argument("--seq-len", type=int, default=256)
    b.add_argument("--seconds", type=float, default=3.0, help="time per measurement (split over the rounds)")
    b.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    b.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    b.add_argument("--threads", type=int, default=None, help="torch threads for all (default: torch's choice)")
    b.add_argument("--dtypes", default="float32,bfloat16",
                   help="comma-separated dtypes to time (float32, bfloat16; float16 on CUDA)")
    b.add_argument("--gpt2-seq-len", type=int, default=None,
                   help="T of the 12-layer GPT-2-small forward per network (default: --seq-len; 0: skip it)")
    return parser


def _check_outputs(args) -> None:
    """Check --out, the .npz beside it and --checkpoint before any work (a result is never
    lost to a bad path); say on stderr which existing files will be replaced."""
    out, note = check_output_file(args.out, "--out", inputs=[args.spec], suffix=".json")
    _, npz_note = check_output_file(out.with_suffix(".npz"), "--out (its .npz)", inputs=[args.spec])
    notes = [note, npz_note]
    if args.checkpoint is not None:
        # an existing checkpoint is resumed, not replaced: only the input and output clash matters
        check_output_file(args.checkpoint, "--checkpoint", inputs=[args.spec, out, out.with_suffix(".npz")])
    for line in filter(None, notes):
        print(f"simulate: {line}", file=sys.stderr)


def _run(args) -> int:
    spec = ModelSpec.load(args.spec)
    taps = [t.strip() for t in args.taps.split(",") if t.strip()] if args.taps else None
    # the one position validator; "1..16" is read as the range 1-16, as it always was here
    positions = check_positions(args.positions.replace("..", "-"), spec.seq_len, name="--positions") if args.positions else None
    _check_outputs(args)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NothingUsableWarning)  # said below, in one line
        result = run(
            spec, taps=taps, samples=args.samples, seed=args.seed, positions=positions,
            measure=args.measure, device=args.device, dtype=args.dtype, chunk_size=args.chunk_size,
            method=args.method, batch=args.batch, reservoir=args.reservoir, checkpoint=args.checkpoint,
            checkpoint_every=args.checkpoint_every, threads=args.threads, progress=False if args.no_progress else "auto",
            force=args.force,
        )
    try:
        result.save(args.out)
    except OSError as err:
        raise ValueError(f"cannot write {args.out!r}: {err.strerror}") from None
    n = result.meta["samples"] - result.meta["nonfinite_samples"]
    unit = result.meta["unit"]
    if n <= 0:  # the result is written (its statistics null), but the run produced nothing usable
        print(
            f"simulate: error: nothing usable: all {result.meta['samples']} {unit}s gave NaN/inf (overflow, or a "
            f"LayerNorm of zero variance with ln_eps = 0: check the sigmas and ln_eps, or try --dtype float64); "
            f"every statistic in {_short(args.out)} is null",
            file=sys.stderr,
        )
        return 1
    print(f"simulate: {n} {unit}s, {len(result.taps)} taps -> {args.out}", file=sys.stderr)
    return 0


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else "..." + text[-(limit - 3):]


def _bench(args) -> int:
    widths = _int_list(args.widths, "--widths")
    if args.seq_len < 1 or args.rounds < 1 or args.seconds <= 0 or (args.threads is not None and args.threads < 1):
        raise ValueError("--seq-len, --rounds and --threads must be >= 1 and --seconds > 0")
    if any(w < 1 for w in widths):
        raise ValueError("--widths must be positive integers")
    dtypes = [t.strip() for t in args.dtypes.split(",") if t.strip()]
    if not dtypes or any(t not in ("float32", "bfloat16", "float16") for t in dtypes):
        raise ValueError(f"--dtypes: give float32, bfloat16 or float16, comma-separated; got {args.dtypes!r}")
    gpt2 = args.seq_len if args.gpt2_seq_len is None else args.gpt2_seq_len
    if gpt2 < 0:
        raise ValueError("--gpt2-seq-len must be >= 0 (0 skips the GPT-2-small forward)")
    results = bench(widths=widths, seq_len=args.seq_len, seconds=args.seconds, device=args.device, threads=args.threads,
                    rounds=args.rounds, dtypes=dtypes, gpt2_seq_len=gpt2)
    print(json.dumps(results) if args.json else format_table(results))
    return 0




@guarded("simulate")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _DELEGATED:
        return importlib.import_module(_DELEGATED[argv[0]][0]).main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        return _run(args) if args.command == "run" else _bench(args)
    except ValueError as err:
        return usage_error("simulate", err)
    except KeyboardInterrupt:
        return interrupted("simulate", "a --checkpoint run resumes from its last checkpoint")


if __name__ == "__main__":
    sys.exit(main())
