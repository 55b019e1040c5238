"""``python -m simulate probe``: position probes in frozen random models (issue #8).

Bad input exits with status 2 and a one-line message on stderr, never a traceback.
See docs/probe.md.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time

import torch

from theory import ModelSpec
from theory._guard import guarded

from theory._argparse import OneLineParser, interrupted, usage_error
from theory._outputs import check_output_dir

from ...engine import resolve_device
from .experiment import (DEFAULT_FULL_TAPS, DEFAULT_VOCAB, POSITIONALS, PROBE_TAPS, ProbeConfig, default_spec, paper_spec,
                         probe_experiment, with_sigma)
from .probes import PROBES
from .report import PROBE_OUTPUTS, write_outputs

DEFAULT_SIGMAS = "0.01,0.02,0.05,0.1"


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(error_prefix="simulate probe", prog="python -m simulate probe",
                description="Probe absolute position from the hidden states of frozen random transformers, "
                            "with and without positional embeddings.")
    p.add_argument("--preset", default=None, choices=("paper",),
                   help="paper: d 768, 12 heads, 12 layers, T 256, all five variants, 3 networks of 48 sequences, "
                        "scalar and cosine probes at every tap, ridge at layer 0 and the last layer (docs/probe.md)")
    p.add_argument("--spec", default=None, help="ModelSpec JSON (default: d_model 128, 4 heads, 4 layers, "
                   "context 128, GPT-2's sigmas 0.02, vocabulary 50257)")
    p.add_argument("--positional", default=",".join(POSITIONALS),
                   help=f"comma-separated variants among {','.join(POSITIONALS)}, or 'spec' (the spec's own, e.g. a per-layer "
                        "schedule) (default: the five)")
    p.add_argument("--probes", default=",".join(PROBES), help=f"comma-separated among {','.join(PROBES)} (default: all)")
    p.add_argument("--taps", default=",".join(PROBE_TAPS),
                   help=f"comma-separated taps probed at every layer, among {','.join(PROBE_TAPS)} (default: all)")
    p.add_argument("--full-taps", default=",".join(DEFAULT_FULL_TAPS),
                   help="where the full-state probes (linear, mlp, full) run: tap suffixes (every layer) or full names "
                        f"(default {','.join(DEFAULT_FULL_TAPS)})")
    p.add_argument("--sequences", type=int, default=256, help="sequences per network (default 256: 5/8 train, 1/8 validation, 1/4 test)")
    p.add_argument("--networks", type=int, default=3, help="frozen random networks per variant (error bars)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seq-len", type=int, default=None, help="override the spec's context length")
    p.add_argument("--vocab-size", default=None,
                   help=f"token vocabulary (ids uniform); default: the spec's, else {DEFAULT_VOCAB}; 'none' = Gaussian inputs")
    p.add_argument("--sigma", type=float, default=None, help="set every init std (sigma_embed and all weights) of the spec")
    p.add_argument("--sigmas", default=DEFAULT_SIGMAS,
                   help=f"NoPE init-scale sweep, comma-separated sigmas (default {DEFAULT_SIGMAS}; 'none' to skip)")
    p.add_argument("--sweep-probes", default="linear,variance_only,theory", help="probes of the sigma sweep")
    p.add_argument("--mlp-epochs", type=int, default=60, help="most epochs of the MLP probes (early stopping on validation MAE)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: robust on a shared CPU)")
    p.add_argument("--device", default="cpu", help="where the forward passes run: cpu | cuda | auto")
    p.add_argument("--dtype", default="float32", help="the frozen forward's matrix products: float32 | bfloat16 "
                   "(bf16 matrix units; norms, softmax and features stay float32) | float16 (CUDA)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="run even when the estimated memory or time exceeds the limits (see docs/simulate.md)")
    p.add_argument("--out", required=True, help="output folder (results.json, report.md, tables, figures)")
    return p


def _names(text: str, allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [n for n in names if n not in allowed]
    if bad or not names:
        raise ValueError(f"{what}: {', '.join(map(repr, bad)) or 'nothing given'}; choose among {', '.join(allowed)}")
    return names


def _floats(text: str, what: str) -> tuple[float, ...]:
    if text.strip().lower() in ("none", ""):
        return ()
    out = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{what}: {part.strip()!r} is not a number") from None
        if not value > 0:
            raise ValueError(f"{what}: sigmas must be > 0, got {part.strip()}")
        out.append(value)
    return tuple(out)


PAPER = {"sequences": 48, "networks": 3, "probes": "linear,variance_only,theory,cosine", "sigmas": "none",
         "full_taps": ("blocks.0.hook_attn_out", "blocks.0.hook_resid_post", "blocks.11.hook_resid_post")}


def _full_taps(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    for n in names:
        suffix = n.split(".", 2)[2] if n.startswith("blocks.") and n.count(".") >= 2 else n
        if suffix not in PROBE_TAPS:
            raise ValueError(f"--full-taps: {n!r}; give tap suffixes among {', '.join(PROBE_TAPS)} or full names")
    return names


def build_config(args) -> ProbeConfig:
    if args.preset == "paper":
        if args.spec:
            raise ValueError("--preset paper sets the spec; drop --spec")
        spec = paper_spec()
        defaults = _parser().parse_args(["--out", "x"])
        for key in ("sequences", "networks", "probes", "sigmas"):
            if getattr(args, key) == getattr(defaults, key):
                setattr(args, key, PAPER[key])
        if args.full_taps == defaults.full_taps:
            args.full_taps = ",".join(PAPER["full_taps"])
    else:
        spec = ModelSpec.load(args.spec) if args.spec else default_spec()
    changes = {}
    if args.seq_len is not None:
        if args.seq_len < 2:
            raise ValueError(f"--seq-len must be an integer >= 2, got {args.seq_len}")
        changes["seq_len"] = args.seq_len
    if args.vocab_size is not None:
        if args.vocab_size.lower() in ("none", "null"):
            changes["vocab_size"] = None
        else:
            try:
                changes["vocab_size"] = int(args.vocab_size)
            except ValueError:
                raise ValueError(f"--vocab-size must be a positive integer or 'none', got {args.vocab_size!r}") from None
    elif spec.vocab_size is None and args.spec:
        changes["vocab_size"] = DEFAULT_VOCAB
    spec = spec.replace(**changes) if changes else spec
    if args.sigma is not None:
        if not args.sigma > 0:
            raise ValueError(f"--sigma must be > 0, got {args.sigma}")
        spec = with_sigma(spec, args.sigma)
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    return ProbeConfig(
        spec=spec,
        positionals=_names(args.positional, POSITIONALS + ("spec",), "--positional"),
        probes=_names(args.probes, PROBES, "--probes"),
        sequences=args.sequences,
        networks=args.networks,
        seed=args.seed,
        sigmas=_floats(args.sigmas, "--sigmas"),
        sweep_probes=_names(args.sweep_probes, PROBES, "--sweep-probes"),
        taps=_names(args.taps, PROBE_TAPS, "--taps"),
        full_taps=_full_taps(args.full_taps),
        mlp_epochs=args.mlp_epochs,
        device=args.device,
        dtype=args.dtype,
    )


@guarded("simulate probe")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    threads_before = torch.get_num_threads()
    try:
        cfg = build_config(args)
        resolve_device(cfg.device)
        # checked before the work: a bad --out never costs the run, the spec is never overwritten
        out, note = check_output_dir(args.out, "--out", inputs=[args.spec], will_write=PROBE_OUTPUTS)
        if note:
            print(f"simulate probe: {note}", file=sys.stderr)
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        results, curves = probe_experiment(cfg, progress=not args.no_progress, force=args.force)
        wall = time.perf_counter() - t0
        command = "python -m simulate probe " + " ".join(shlex.quote(a) for a in argv)
        try:
            written = write_outputs(results, curves, out, command=command, wall_s=wall)
        except OSError as err:
            raise ValueError(f"cannot write to {args.out!r}: {err.strerror}") from None
    except ValueError as err:
        return usage_error("simulate probe", err)
    except KeyboardInterrupt:
        return interrupted("simulate probe")
    finally:
        torch.set_num_threads(threads_before)
    print(f"simulate probe: {wall:.0f} s; wrote {', '.join(written)} to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
