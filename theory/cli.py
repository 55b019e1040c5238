"""Command line: ``python -m theory derive|predict``.

    python -m theory derive [--spec SPEC.json] [--symbolic d_model,sigma_q,...] [--format text|latex|json]
    python -m theory predict [--spec SPEC.json] [--positions 1,2,8,256] [--level best|leading] [--layers all|0,3] [--json] [--force]
    python -m theory latex [--spec SPEC.json] [--symbolic d_model,...] [--notation NOTATION.json] [--depth] --out DIR
    python -m theory spec --from-hf CONFIG.json [--set seq_len=256,...] [--out SPEC.json]

Bad input exits with status 2 and a one-line message on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ._argparse import OneLineParser, UsageError, usage_error
from ._guard import guarded
from ._hf_config import read_hf_config
from ._facade import LATEX_OUTPUTS, Notation, write
from ._outputs import check_output_dir
from .derive import derive, predict
from .positions import check_positions
from .spec import SYMBOL_NAMES, ModelSpec
from .steps import LEVELS


CliError = UsageError  # a user error: one line (theory._argparse), exit status 2


def _load_spec(path: str | None) -> ModelSpec:
    if path is None:
        return ModelSpec()
    return ModelSpec.load(path)


def _parse_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise CliError(f"{what} must be a comma-separated list, got {text!r}")
    return items


DEFAULT_POSITIONS = (1, 2, 8, 256)


def _parse_positions(text: str | None, seq_len: int) -> list[int]:
    """``--positions``; by default those of `DEFAULT_POSITIONS` that exist, and the last one (seq_len)."""
    if text is None:
        return sorted({m for m in DEFAULT_POSITIONS if m <= seq_len} | {seq_len})
    try:
        return check_positions(text, seq_len, name="--positions").tolist()
    except ValueError as err:
        raise CliError(str(err)) from None


def _build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m theory", description="Derive and predict the theory of a random NoPE transformer, layer by layer.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    d = sub.add_parser("derive", help="print every first-layer (blocks.0) step's law, level and assumptions")
    d.add_argument("--spec", help="ModelSpec JSON file (default: GPT-2 small)")
    d.add_argument("--symbolic", default="", help=f"fields to make symbolic, from: {','.join(SYMBOL_NAMES)}")
    d.add_argument("--format", choices=("text", "latex", "json"), default="text")

    p = sub.add_parser("predict", help="numbers for every tap of every layer at query positions m")
    p.add_argument("--spec", help="ModelSpec JSON file (default: GPT-2 small)")
    p.add_argument("--positions", help="1-based query positions, e.g. 1,2,8,256 (default: those of 1,2,8,256 "
                   "within seq_len, and seq_len)")
    p.add_argument("--level", choices=LEVELS, default="best")
    p.add_argument("--layers", default="all", help="0-based layers to print, e.g. 0,5 (default: all)")
    p.add_argument("--json", action="store_true", help="print JSON (the default output is a table)")
    p.add_argument("--force", action="store_true", help="skip the memory and time guards (T x T kernels; "
                   "default limits: 80%% of available RAM, one day)")

    t = sub.add_parser("latex", help="write derivation.tex, one snippet per step and notation.json into --out")
    t.add_argument("--spec", help="ModelSpec JSON file (default: GPT-2 small)")
    t.add_argument("--symbolic", default="", help=f"fields to make symbolic, from: {','.join(SYMBOL_NAMES)}")
    t.add_argument("--notation", help='JSON object mapping our symbols to yours, e.g. {"sigma_q": "\\\\sigma_{Q}", "d_model": "D"} (JSON escapes the backslash)')
    t.add_argument("--depth", action="store_true", help="add the depth recursion (every layer; a table of predictions for numeric specs) and write depth.tex")
    t.add_argument("--out", required=True, help="directory to write into (created if missing)")
    h = sub.add_parser("spec", help="write the ModelSpec of a Hugging Face config.json (and say what it did not understand)")
    h.add_argument("--from-hf", required=True, metavar="CONFIG.json", help="a Hugging Face config of the GPT-2, Llama, "
                   "Qwen2/Qwen3, SmolLM3 or Llama-4-text families")
    h.add_argument("--set", default="", metavar="FIELD=VALUE,...", help="override fields after reading, e.g. "
                   "seq_len=256,n_layers=4 (values are JSON: numbers, true/false, null)")
    h.add_argument("--out", help="write the spec JSON here (default: print it)")
    return parser


def _overrides(text: str) -> dict:
    """``--set a=1,b=true`` as a dict of JSON values (a bare word is a string)."""
    out = {}
    for item in _parse_list(text, "--set") if text else []:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--set takes FIELD=VALUE pairs separated by commas, got {item!r}")
        try:
            out[name.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[name.strip()] = value.strip()
    return out


def _spec(args) -> str:
    reading = read_hf_config(args.from_hf, **_overrides(args.set))
    spec = ModelSpec.from_dict(reading.fields)
    print(f"theory: {reading.summary()}".replace("\n", "\ntheory: "), file=sys.stderr)
    if args.out:
        target = Path(args.out)
        check_output_dir(target.resolve().parent, "--out", inputs=[args.from_hf], will_write=[target.name])
        if target.resolve() == Path(args.from_hf).resolve():
            raise CliError(f"--out {args.out!r} is the config being read; give another file")
        try:
            spec.save(args.out)
        except OSError as err:
            raise CliError(f"cannot write {args.out}: {err.strerror}") from None
        return f"wrote {args.out}"
    return spec.to_json()


def _latex(args) -> str:
    notation = Notation.load(args.notation) if args.notation else Notation()
    spec = _load_spec(args.spec)
    if args.symbolic:
        spec = spec.symbolic(*_parse_list(args.symbolic, "--symbolic"))
    # checked before the derivation: a bad --out never costs the work, an input is never overwritten
    out, note = check_output_dir(args.out, "--out", inputs=[args.spec, args.notation], will_write=LATEX_OUTPUTS)
    if note:
        print(f"theory: {note}", file=sys.stderr)
    try:
        written = write(derive(spec), out, notation, depth=args.depth)
    except OSError as err:
        raise CliError(f"cannot write into {args.out}: {err.strerror}") from None
    steps = [k for k in written if k.startswith("blocks.")]
    return "\n".join([
        f"wrote {written['document']}  (pdflatex it twice: numbered equations and references)",
        f"      {written['body']}  (\\input into a paper; needs amsmath, amssymb, booktabs)",
        f"      {len(steps)} step snippets in {out / 'steps'}",
        f"      {written['notation']}",
    ] + ([f"      {written['depth']}  (the depth recursion, also inside the document)"] if "depth" in written else []))


def _derive(args) -> str:
    spec = _load_spec(args.spec)
    if args.symbolic:
        spec = spec.symbolic(*_parse_list(args.symbolic, "--symbolic"))
    derivation = derive(spec)
    if args.format == "latex":
        return derivation.latex()
    if args.format == "json":
        return json.dumps(derivation.to_dict(), indent=2)
    return derivation.text()


def _predict(args) -> str:
    spec = _load_spec(args.spec)
    if spec.is_symbolic:
        raise CliError(f"predict needs numbers for every spec field; symbolic: "
                       f"{', '.join(f for f in SYMBOL_NAMES if not isinstance(getattr(spec, f), (int, float)))}"
                       " (theory derive takes symbolic specs)")
    layers = None
    if args.layers != "all":
        try:
            layers = [int(t) for t in _parse_list(args.layers, "--layers")]
        except ValueError:
            raise CliError(f"--layers must be 'all' or 0-based integers separated by commas, got {args.layers!r}") from None
    result = predict(spec, _parse_positions(args.positions, int(spec.seq_len)), args.level, layers=layers,
                     progress=lambda line: print(f"theory: {line}", file=sys.stderr), force=args.force)
    if args.json:
        return json.dumps(result.to_dict(), indent=2)
    lines = [f"{'tap':34s} {'m':>6s}  quantities ({result.measure} measure, level {result.level})  [result level]"]
    for record in result.records:
        for m in record.positions:
            shown = "  ".join(f"{k}={v:.6g}" for k, v in record.at(m).items())
            lines.append(f"{record.tap:34s} {int(m):>6d}  {shown}  [{record.level.value}]")
    return "\n".join(lines)


@guarded("theory")
def main(argv: list[str] | None = None) -> int:
    try:
        args = _build_parser().parse_args(argv)
    except SystemExit as stop:  # a usage error (one line on stderr, status 2) or --help (0)
        return int(stop.code or 0)
    try:
        output = {"derive": _derive, "predict": _predict, "latex": _latex, "spec": _spec}[args.command](args)
    except ValueError as err:  # UsageError included
        return usage_error("theory", err)
    print(output)
    return 0
