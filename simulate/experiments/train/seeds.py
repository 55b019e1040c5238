"""Seed-to-seed spread: the same recipe, several seeds, compared at one training step.

    python -m simulate.experiments.train.seeds DIR [DIR ...] --step N [--positional none]
        [--sequences 256] [--windows 512] [--out FILE.json]

Each ``DIR`` is a run folder of ``python -m simulate train`` made with the same preset and a
different ``--seed`` and snapshots (``step_NNNNNN.pt``, or ``checkpoint.pt`` at the final step);
``--step`` picks the same step in every run (a run stopped early can be compared at any
step all the runs have reached; at a step before the end the learning rate has not finished
its decay, the same for every seed). For each run: held-out bits/byte on ``windows`` windows
(± se over documents) and, per layer, the slopes of ``ln Var(hook_attn_out)`` against ``ln m``
(all fit positions and ``m >= 16``) and the attention entropy / ln m (`measure.measure_model`);
then across the runs the mean and the sample standard deviation (ddof 1) of each number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from .cli import _read_corpus_cache
from .evaluation import evaluate_checkpoint, heldout_batch
from .files import load_model, read_checkpoint
from .measure import heldout_windows, measure_model


def _model_file(run: Path, positional: str, step: int) -> Path:
    snap = run / positional / f"step_{step:06d}.pt"
    if snap.exists():
        return snap
    ckpt = run / positional / "checkpoint.pt"
    if ckpt.exists() and read_checkpoint(ckpt).get("state", {}).get("step") == step:
        return ckpt
    raise ValueError(f"{str(run)!r} has no {positional} model at step {step} (no {snap.name})")


def compare(runs: list[Path], step: int, positional: str = "none", sequences: int = 256, windows: int = 512) -> dict:
    """The numbers of the module docstring, per run and across runs."""
    per_run = []
    for run in runs:
        _, corpus = _read_corpus_cache(run / "corpus.npz")
        path = _model_file(run, positional, step)
        model = load_model(path)
        batch, docs = heldout_batch(corpus, model.spec.seq_len + 1, windows)
        bpb = evaluate_checkpoint(path, batch, docs)
        ids, mdocs = heldout_windows(corpus, model.spec.seq_len, sequences)
        m = measure_model(model, ids, mdocs, curves=False)
        per_run.append({
            "run": str(run), "file": path.name, "bits_per_byte": bpb["bits_per_byte"], "bits_per_byte_se": bpb["bits_per_byte_se"],
            "slope": [l["taps"]["hook_attn_out"]["slope"] for l in m["layers"]],
            "slope_se": [l["taps"]["hook_attn_out"]["slope_se"] for l in m["layers"]],
            "slope_tail": [l["taps"]["hook_attn_out"]["slope_tail"] for l in m["layers"]],
            "slope_tail_se": [l["taps"]["hook_attn_out"]["slope_tail_se"] for l in m["layers"]],
            "entropy_over_ln_m": [l["entropy_over_ln_m"] for l in m["layers"]],
        })
    across = {}
    for key in ("bits_per_byte", "slope", "slope_tail", "entropy_over_ln_m"):
        x = np.array([r[key] for r in per_run], dtype=float)
        across[key] = {"mean": np.mean(x, axis=0).tolist(),
                       "sd": (np.std(x, axis=0, ddof=1) if len(runs) > 1 else np.full_like(np.mean(x, axis=0), np.nan)).tolist()}
    return {"step": step, "positional": positional, "runs": per_run, "across_runs": across}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m simulate.experiments.train.seeds", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+")
    p.add_argument("--step", type=int, required=True)
    p.add_argument("--positional", default="none")
    p.add_argument("--sequences", type=int, default=256)
    p.add_argument("--windows", type=int, default=512)
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    try:
        result = compare([Path(r) for r in args.runs], args.step, args.positional, args.sequences, args.windows)
    except ValueError as err:
        sys.stderr.write(f"seeds: error: {err}\n")
        return 2
    text = json.dumps(result, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    a = result["across_runs"]
    print(f"step {args.step}, {len(args.runs)} runs: bits/byte {a['bits_per_byte']['mean']:.3f} (sd {a['bits_per_byte']['sd']:.3f})")
    for l, (m, s, mt, st) in enumerate(zip(a["slope"]["mean"], a["slope"]["sd"], a["slope_tail"]["mean"], a["slope_tail"]["sd"])):
        print(f"layer {l}: slope {m:+.3f} (sd {s:.3f}), m >= 16 {mt:+.3f} (sd {st:.3f}), "
              f"entropy/ln m {a['entropy_over_ln_m']['mean'][l]:.3f} (sd {a['entropy_over_ln_m']['sd'][l]:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
