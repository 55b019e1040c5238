"""``python -m simulate train``: train a byte-level NoPE model (and, if asked, a learned-position
twin), evaluate it beside n-gram and compressor baselines on the same held-out bytes, then
measure the variance of its activations against position, trained against init and along
training, with errors clustered by held-out document.

    python -m simulate train --preset base --out DIR [--corpus PATH] [--steps N] [--seed S]
        [--positional none,learned] [--autocast none|bfloat16] [--threads 1] [--sequences 256]
        [--groups 8] [--beyond 4] [--no-baselines] [--no-measure]
    python -m simulate train --measure-only --out DIR      # measure a finished run again

Writes into DIR: ``run.json`` (config, seeds, corpus hashes, baselines, results, and every
command that touched DIR, exactly as typed), ``commands.txt``, ``loss.png``, ``loss_per_position.png``,
``<positional>/init.pt``, ``checkpoint.pt`` and the snapshots ``step_NNNNNN.pt`` (see
`simulate.experiments.train.training`), ``corpus.npz`` (the stripped, split corpus and the
held-out pages' offsets, so a resume does not re-read the HTML), and ``measure/``
(``results.json``, ``report.md``, figures; see `simulate.experiments.train.measure`). Rerunning a command
resumes from the checkpoints. Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from theory._guard import guarded
from theory._outputs import atomic_path, check_output_dir

from theory._argparse import OneLineParser

from ...engine import versions
from .corpus import Corpus, CorpusError, bigram_bits_per_byte, load_corpus, unigram_bits_per_byte
from .figures import loss_figures
from .files import read_run_json
from .evaluation import baselines, heldout_batch
from .measure import measure_run
from .training import POSITIONALS, PRESETS, TrainConfig, final_evaluation, train_model


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(error_prefix="simulate train", prog="python -m simulate train",
                description="Train byte-level NoPE and learned-position models; measure variance against position.")
    p.add_argument("--preset", default="small", choices=sorted(PRESETS), help="model and budget (default small)")
    p.add_argument("--out", required=True, help="run directory (created; an existing run is resumed)")
    p.add_argument("--corpus", default=None,
                   help="a text file or a directory of .html/.txt files (default: Debian python3.11-doc's HTML)")
    p.add_argument("--holdout", type=float, default=0.05, help="held-out fraction (files of a directory), default 0.05")
    p.add_argument("--steps", type=int, default=None, help="optimiser steps per model (default: the preset's)")
    p.add_argument("--seed", type=int, default=None, help="seed of the initialisation and the data order (default 0)")
    p.add_argument("--positional", default=None, help="comma-separated models to train: none,learned,rope (default none,learned)")
    p.add_argument("--autocast", default=None, choices=("none", "bfloat16"),
                   help="training steps under bf16 autocast (weights and optimiser float32; default none)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: robust on a shared CPU)")
    p.add_argument("--sequences", type=int, default=256, help="held-out windows for the measurement (default 256)")
    p.add_argument("--groups", type=int, default=8,
                   help="errors are clustered by held-out document; for a single text file (byte split), the number of "
                        "contiguous held-out blocks that stand in for documents (default 8)")
    p.add_argument("--beyond", type=int, default=4,
                   help="also measure the NoPE attention output on windows this many times the training length (default 4; 0 skips)")
    p.add_argument("--no-baselines", action="store_true", help="skip the n-gram and compressor baselines (~30 s)")
    p.add_argument("--no-measure", action="store_true", help="train only")
    p.add_argument("--measure-only", action="store_true", help="measure the models of a finished run in --out")
    p.add_argument("--no-figures", action="store_true", help="skip the PNG figures (loss curve, measurement)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _config(args) -> TrainConfig:
    cfg = PRESETS[args.preset]
    changes = {}
    if args.steps is not None:
        changes["steps"] = args.steps
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.autocast is not None:
        changes["autocast"] = args.autocast
    if args.positional is not None:
        changes["positionals"] = tuple(p.strip() for p in args.positional.split(",") if p.strip())
        bad = [p for p in changes["positionals"] if p not in POSITIONALS]
        if bad or not changes["positionals"]:
            raise ValueError(f"--positional takes a comma-separated list of {', '.join(POSITIONALS)}; got {args.positional!r}")
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _read_corpus_cache(cache: Path) -> tuple[dict, Corpus]:
    """``corpus.npz``: two uint8 byte arrays and a JSON string saying where they came from.
    ``np.load`` keeps its default ``allow_pickle=False``, so an object array (a pickle) in a
    crafted file is refused, not unpickled; anything else wrong is one ValueError."""
    def unusable(why: str) -> ValueError:
        return ValueError(f"corpus cache {str(cache)!r} is unusable ({why}); delete it and rerun "
                          "(with the run's --corpus, if it had one) to rebuild it")

    try:
        with np.load(cache) as npz:
            arrays = {key: npz[key] for key in ("train", "heldout", "info")}
    except KeyError as err:
        raise unusable(f"no array {err.args[0]!r}") from None
    except Exception as err:  # noqa: BLE001 - not a zip, truncated, a pickle: the same remedy
        raise unusable(str(err) or type(err).__name__) from None
    try:
        info = json.loads(str(arrays["info"]))
    except json.JSONDecodeError:
        raise unusable("its info is not JSON") from None
    fields = {"requested": (str, type(None)), "holdout": (int, float), "source": str, "files": int, "heldout_files": int}
    if not (isinstance(info, dict) and all(isinstance(info.get(k), t) for k, t in fields.items())):
        raise unusable(f"its info is not an object with {', '.join(fields)}")
    for key in ("train", "heldout"):
        if arrays[key].dtype != np.uint8 or arrays[key].ndim != 1:
            raise unusable(f"{key!r} is not a 1-D array of bytes")
    starts = None
    if "heldout_starts" in info:  # the held-out pages' offsets (document ids of the windows)
        starts = np.asarray(info["heldout_starts"], dtype=np.int64)
        if starts.ndim != 1 or (starts.size and (starts[0] != 0 or np.any(np.diff(starts) < 0)
                                                 or starts[-1] > arrays["heldout"].size)):
            raise unusable("its held-out document offsets are not increasing offsets into the held-out text")
    return info, Corpus(arrays["train"], arrays["heldout"], info["source"], info["files"], info["heldout_files"], starts)


def _corpus(args, out: Path) -> Corpus:
    """The split corpus, cached in ``out/corpus.npz`` (keyed by source and holdout); with
    ``--measure-only`` and no ``--corpus``, the run's own cached corpus."""
    cache = out / "corpus.npz"
    source = str(Path(args.corpus).resolve()) if args.corpus else None
    if cache.exists():
        info, cached = _read_corpus_cache(cache)
        # a cache without the held-out pages' offsets (older runs) is rebuilt for a by-file split
        same = (info["requested"] == source and info["holdout"] == args.holdout
                and (cached.heldout_starts is not None or cached.heldout_files == 0))
        if same or (args.measure_only and args.corpus is None):
            return cached
    t0 = time.perf_counter()
    if not args.no_progress:  # progress only: a corpus that fails is then one error line alone
        print(f"[train] reading corpus {source or 'python3.11-doc HTML'} ...", file=sys.stderr)
    corpus = load_corpus(source, holdout=args.holdout)
    info = {"requested": source, "holdout": args.holdout, "source": corpus.source, "files": corpus.files,
            "heldout_files": corpus.heldout_files}
    if corpus.heldout_starts is not None:
        info["heldout_starts"] = [int(x) for x in corpus.heldout_starts]
    with atomic_path(cache) as tmp:
        np.savez(tmp, train=corpus.train, heldout=corpus.heldout, info=np.array(json.dumps(info)))
    print(f"[train] corpus: {corpus.train.size} training bytes, {corpus.heldout.size} held out "
          f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return corpus


def _record_command(out: Path, argv: list[str], threads: int) -> tuple[dict, dict]:
    path = out / "run.json"
    run = read_run_json(path) if path.exists() else {"commands": []}
    entry = {
        "command": shlex.join(["python", "-m", "simulate", "train", *argv]),
        "cwd": str(Path.cwd()),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch_threads": threads,
        "versions": versions(),
    }
    run["commands"].append(entry)
    with open(out / "commands.txt", "a", encoding="utf-8") as fh:
        fh.write(f"# {entry['started']}  (cwd {entry['cwd']}, {threads} torch thread(s))\n{entry['command']}\n")
    return run, entry


def _train_all(args, cfg: TrainConfig, out: Path, run: dict) -> dict:
    corpus = _corpus(args, out)
    run["config"] = cfg.to_dict()
    run["seeds"] = {"init": cfg.seed, "data_order": f"derive_seed({cfg.seed}, STREAM_DATA)",
                    "note": "init: NoPETransformer(spec, seed); data: one torch.Generator, the same for every model"}
    run["corpus"] = corpus.describe()
    if not args.no_baselines:
        if not args.no_progress:
            print("[train] baselines: Kneser-Ney n-grams of orders 1-7 on the training bytes, compressors ...",
                  file=sys.stderr)
        batch, docs = heldout_batch(corpus, cfg.seq_len + 1, cfg.final_eval_windows, args.groups)
        run["baselines"] = baselines(corpus, batch, docs)
    else:
        run["baselines"] = {"unigram_bits_per_byte": unigram_bits_per_byte(corpus.train, corpus.heldout),
                            "bigram_bits_per_byte": bigram_bits_per_byte(corpus.train, corpus.heldout)}
    _write(out, run)
    run.setdefault("models", {})
    for positional in cfg.positionals:
        summary = train_model(cfg, corpus, out, positional, progress=not args.no_progress)
        summary.update(final_evaluation(cfg, corpus, out, positional, args.groups))
        run["models"][positional] = summary
        _write(out, run)
        kn = run["baselines"].get("kneser_ney", {})
        grams = "; " + ", ".join(f"{n}-gram {s['bits_per_byte']:.3f}" for n, s in kn.items() if n in ("3", "4", "7")) if kn else ""
        print(f"[train] {positional}: held-out {summary['trained_bits_per_byte']:.3f} ± {summary['trained_bits_per_byte_se']:.3f} "
              f"bits/byte after {summary['steps']} steps ({summary['wall_s']:.0f} s); init {summary['init_bits_per_byte']:.3f}; "
              f"unigram {run['baselines']['unigram_bits_per_byte']:.3f}{grams} (Kneser-Ney, same bytes)", file=sys.stderr)
    if not args.no_figures:
        loss_figures(run, out)
    return run


def _write(out: Path, run: dict) -> None:
    tmp = out / "run.json.tmp"
    tmp.write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")
    tmp.replace(out / "run.json")


@guarded("simulate train")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser().parse_args(argv)
    try:
        if args.threads < 1 or args.sequences < 2 or args.groups < 2 or args.groups > args.sequences:
            raise ValueError("--threads must be >= 1, --sequences >= 2, and --groups in 2..--sequences")
        if args.beyond < 0 or args.beyond == 1:
            raise ValueError(f"--beyond must be 0 (skip) or a factor >= 2, got {args.beyond}")
        if args.measure_only and args.no_measure:
            raise ValueError("--measure-only and --no-measure exclude each other")
        cfg = _config(args)
        out = Path(args.out)
        if args.measure_only and not (out / "run.json").exists():
            raise ValueError(f"--measure-only needs a finished run in {str(out)!r} (no run.json there)")
        # a writable run folder (created if missing) that is not the corpus, checked before any work;
        # an existing run in it is resumed, so nothing there is announced as replaced
        out, _ = check_output_dir(out, "--out", inputs=[args.corpus])
        threads_before = torch.get_num_threads()
        torch.set_num_threads(args.threads)
        try:
            run, entry = _record_command(out, argv, args.threads)
            t0 = time.perf_counter()
            if not args.measure_only:
                run = _train_all(args, cfg, out, run)
            if not args.no_measure:
                corpus = _corpus(args, out)
                run["measurement"] = measure_run(out, corpus, sequences=args.sequences, groups=args.groups,
                                                 progress=not args.no_progress, with_figures=not args.no_figures,
                                                 beyond=args.beyond)
            if args.measure_only and not args.no_figures and run.get("models") and run.get("baselines"):
                loss_figures(run, out)  # redrawn: a run measured again gets the current figures
            entry["finished_after_s"] = round(time.perf_counter() - t0, 1)
            _write(out, run)
        finally:
            torch.set_num_threads(threads_before)
    except (ValueError, CorpusError) as err:
        sys.stderr.write(f"simulate train: error: {err}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("simulate train: interrupted; rerun the same command to resume from the last checkpoint\n")
        return 130
    print(f"[train] done -> {out}", file=sys.stderr)
    return 0
