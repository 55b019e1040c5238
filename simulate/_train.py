"""Training a small byte-level NoPE language model (and a learned-position twin) on CPU.

One run trains, with the same budget (steps x batch x seq_len bytes), the same data order
and the same optimiser, a `NoPETransformer` with ``positional="none"`` and one with
``positional="learned"``. Per model ``DIR/<positional>/`` holds:

* ``init.pt``: the weights at step 0 (the initialisation the measurement compares with);
* ``checkpoint.pt``: model, AdamW state, step, the data generator's state, torch's RNG
  state, the loss curve so far and the run's fingerprint; written atomically every
  ``checkpoint_every`` steps, at the end and on Ctrl-C. Rerunning the same command resumes
  from it and continues the *same* curve: the losses are bit-identical to an uninterrupted
  run (same machine, same torch build, same thread count; tested).

Both files hold only tensors and plain containers (dicts, lists, strings, numbers) and are
read with ``torch.load(weights_only=True)`` (`read_checkpoint`), which rebuilds nothing else:
a crafted file that would run code is refused unread, and a resume compares the run's
fingerprint before it uses anything else in the checkpoint.

Objective: mean next-byte cross-entropy. Bits per byte = nats / ln 2. The held-out curve
is measured every ``eval_every`` steps on fixed held-out windows; the final number on
``final_eval_windows`` evenly spaced, non-overlapping held-out windows of ``seq_len + 1``
bytes (every position of a window counts, so contexts of 1..seq_len bytes are averaged).

Optimiser: AdamW (Loshchilov & Hutter 2019), betas (0.9, 0.95), weight decay on every
matrix (not on the final LayerNorm's gain and bias), linear warm-up then cosine decay to ``min_lr_ratio * lr``, gradient clipping at
norm 1 (the nanoGPT recipe).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pickle
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from theory import ModelSpec

from ._corpus import Corpus
from ._model import NoPETransformer
from ._seeding import derive_seed

STREAM_DATA = 0xDA7A
CHECKPOINT_VERSION = 1
POSITIONALS = ("none", "learned")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (the budget is step-based: ``steps``
    optimiser steps of ``batch_size`` windows of ``seq_len`` bytes, for every model)."""

    preset: str = "small"
    d_model: int = 128
    n_heads: int = 4
    n_layers: int = 4
    seq_len: int = 256
    batch_size: int = 16
    steps: int = 400
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 40
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_every: int = 50
    eval_windows: int = 32
    final_eval_windows: int = 512
    checkpoint_every: int = 50
    seed: int = 0
    positionals: tuple[str, ...] = POSITIONALS

    def __post_init__(self) -> None:
        for name in ("d_model", "n_heads", "n_layers", "seq_len", "batch_size", "steps", "eval_every",
                     "eval_windows", "final_eval_windows", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if not (self.lr > 0 and 0 <= self.min_lr_ratio <= 1 and self.warmup >= 0 and self.weight_decay >= 0 and self.grad_clip > 0):
            raise ValueError("lr and grad_clip must be > 0, min_lr_ratio in [0, 1], warmup and weight_decay >= 0")
        object.__setattr__(self, "positionals", tuple(self.positionals))
        bad = [p for p in self.positionals if p not in POSITIONALS]
        if bad or not self.positionals:
            raise ValueError(f"positionals must be a non-empty list of {', '.join(POSITIONALS)}; got {list(self.positionals)}")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})")

    def spec(self, positional: str) -> ModelSpec:
        """The model: GPT-2 conventions (std 0.02, output projections / sqrt(2 n_layers)), bytes."""
        return ModelSpec(
            d_model=self.d_model, n_heads=self.n_heads, n_layers=self.n_layers, seq_len=self.seq_len,
            vocab_size=256, output_scaling="gpt2", positional=positional,
        )

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["positionals"] = list(self.positionals)
        return d

    def fingerprint(self) -> dict:
        """What a checkpoint must share to be resumed (the budget may grow: ``steps`` and
        the evaluation sizes are left out)."""
        d = self.to_dict()
        for k in ("steps", "final_eval_windows", "positionals", "preset"):
            d.pop(k)
        return d


PRESETS = {
    # ~15-20 minutes on 2 shared CPU cores with 1 torch thread (measured: ~1.2 s per step).
    "small": TrainConfig(),
    # seconds: for tests and smoke runs
    "tiny": TrainConfig(preset="tiny", d_model=32, n_heads=2, n_layers=2, seq_len=32, batch_size=8, steps=30,
                        warmup=5, eval_every=10, eval_windows=4, final_eval_windows=16, checkpoint_every=10),
}


def optimizer(model: NoPETransformer, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW, weight decay on the matrices (embeddings included, as nanoGPT), none on the final
    LayerNorm's gain and bias."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_lr_ratio * lr`` at ``steps``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def windows(data: np.ndarray, length: int, count: int) -> torch.Tensor:
    """``count`` evenly spaced, non-overlapping windows of ``length`` bytes (fewer if the data is short)."""
    n_max = data.size // length
    if n_max < 1:
        raise ValueError(f"held-out text has {data.size} bytes, fewer than one window of {length}")
    count = min(count, n_max)
    starts = (np.arange(count) * (n_max // count)) * length
    return torch.from_numpy(np.stack([data[s:s + length] for s in starts]).astype(np.int64))


@torch.no_grad()
def evaluate(model: NoPETransformer, batch: torch.Tensor, chunk: int = 16) -> float:
    """Mean next-byte loss (nats) over windows (N, T+1)."""
    total, count = 0.0, 0
    for i in range(0, batch.shape[0], chunk):
        w = batch[i:i + chunk]
        total += float(model.loss(w[:, :-1], w[:, 1:])) * w.shape[0]
        count += w.shape[0]
    return total / count


class _Bar:
    """A one-line progress bar on stderr."""

    def __init__(self, label: str, total: int, start: int, enabled: bool):
        self.label, self.total, self.start, self.enabled = label, total, start, enabled
        self.t0 = time.perf_counter()
        self.last = -1.0

    def update(self, step: int, loss: float, heldout: float | None, force: bool = False) -> None:
        now = time.perf_counter() - self.t0
        if not self.enabled or (not force and now - self.last < 1.0):
            return
        self.last = now
        rate = now / max(step - self.start, 1)
        fill = int(30 * step / self.total)
        held = f" held-out {heldout / math.log(2):.3f}" if heldout is not None else ""
        sys.stderr.write(
            f"\r[train {self.label}] |{'#' * fill}{'.' * (30 - fill)}| {step}/{self.total}"
            f" loss {loss / math.log(2):.3f} bpb{held}  {rate:.2f} s/step eta {rate * (self.total - step):.0f}s "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# What to do about a file in a run folder that cannot be used, by its name: a deleted
# init.pt is rebuilt from the seed (the initialisation is deterministic), a deleted
# checkpoint.pt restarts that model from step 0.
_REMEDY = {
    "init.pt": "delete it and rerun the train command to rebuild it from the seed",
    "checkpoint.pt": "delete it to train that model from step 0, or use another --out",
}


def read_checkpoint(path: str | Path) -> dict:
    """The dict in an ``init.pt`` or ``checkpoint.pt``, read without running any code from it.

    ``torch.load(weights_only=True)`` rebuilds tensors and plain containers only; a pickle
    that asks for any other object (``os.system``, a class with ``__reduce__``) is refused
    before anything in it runs. Our files need nothing more: the AdamW state and the
    generator states are tensors, ints, floats and tuples. Every way a file can be unusable
    (absent, foreign, truncated, garbage) is one ValueError naming the file and the remedy.
    """
    path = Path(path)
    remedy = _REMEDY.get(path.name, "delete it")
    if not path.is_file():
        raise ValueError(f"no checkpoint at {str(path)!r}")
    # torch.save writes a zip archive. A raw pickle, a truncated file or garbage has no zip
    # directory and is refused here, before any unpickler sees it.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not a checkpoint (not a torch zip archive: truncated or foreign); {remedy}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message is a page of advice ending in "weights_only=False": wrong here
        raise ValueError(
            f"{str(path)!r} holds more than tensors and plain data, or is damaged; it was refused "
            f"without running anything in it; {remedy}"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged archive fails in many ways; one message for all
        raise ValueError(f"{str(path)!r} is damaged ({type(err).__name__}); {remedy}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} is not a checkpoint of simulate train (it holds a {type(data).__name__}); {remedy}")
    return data


def load_model(path: str | Path) -> NoPETransformer:
    """The model an ``init.pt`` (the initialisation) or a ``checkpoint.pt`` holds, in eval mode."""
    path = Path(path)
    state = read_checkpoint(path)
    remedy = _REMEDY.get(path.name, "delete it")
    try:
        spec = ModelSpec.from_dict(state["spec"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} holds no valid model spec ({err}); {remedy}") from None
    model = NoPETransformer(spec, seed=0)
    try:
        model.load_state_dict(state["model"])
    except KeyError:
        raise ValueError(f"{str(path)!r} holds no model weights; {remedy}") from None
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{str(path)!r} does not fit this version of NoPETransformer ({_last_line(err)})") from None
    model.eval()
    return model


def _last_line(err: Exception) -> str:
    """The gist of torch's multi-line error messages (their last line), for a one-line error."""
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else type(err).__name__


def read_run_json(path: str | Path) -> dict:
    """A run folder's ``run.json`` (the record `simulate._train_cli` keeps: config, corpus,
    models, every command), or one ValueError naming it. JSON runs no code; this checks the
    parts that are appended to or listed (``commands``, ``models``)."""
    path = Path(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read {str(path)!r}: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); it is the run's record: repair it or move it "
                         "aside (a new one is started)") from None
    commands = run.get("commands") if isinstance(run, dict) else None
    if not (isinstance(commands, list) and all(isinstance(c, dict) and isinstance(c.get("command"), str) for c in commands)
            and isinstance(run.get("models", {}), dict)
            and all(isinstance(m, dict) for m in run.get("models", {}).values())):
        raise ValueError(f"{str(path)!r} is not the record of a simulate train run (no list of commands); "
                         "use another --out or move it aside")
    return run


def _difference(theirs, ours: dict) -> str:
    """Which parts of two run fingerprints differ, e.g. ``config.lr, corpus``."""
    if not isinstance(theirs, dict):
        return "it has no run fingerprint"
    out = []
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return ", ".join(out)


def _check_init(path: Path, spec: ModelSpec, seed: int) -> None:
    """An existing ``init.pt`` must be the initialisation of this model and seed."""
    saved = read_checkpoint(path)
    if saved.get("spec") != spec.to_dict() or saved.get("seed") != seed:
        raise ValueError(
            f"{str(path)!r} is the initialisation of a different model or seed; use another --out or delete it"
        )


def _is_progress(state) -> bool:
    """``state`` has the shape `train_model` keeps: ``step`` losses so far, the held-out
    points, the wall time (the loop appends to and formats these, so they are checked)."""
    if not isinstance(state, dict) or set(state) != {"step", "train_loss", "eval", "wall_s"}:
        return False
    step, losses, evals = state["step"], state["train_loss"], state["eval"]
    return (type(step) is int and step >= 0 and isinstance(losses, list) and len(losses) == step
            and all(type(x) is float for x in losses) and isinstance(state["wall_s"], float)
            and isinstance(evals, list)
            and all(isinstance(e, dict) and type(e.get("step")) is int and type(e.get("loss")) is float for e in evals))


def _restore(saved: dict, path: Path, model: NoPETransformer, opt: torch.optim.Optimizer,
             gen: torch.Generator) -> dict:
    """Load a checkpoint whose fingerprint matched into model, optimiser and generators and
    return its progress record (checked first: the training loop appends to it)."""
    def damaged(why: str) -> ValueError:
        return ValueError(f"{str(path)!r} is damaged ({why}); {_REMEDY['checkpoint.pt']}")

    state = saved.get("state")
    if not _is_progress(state):
        raise damaged("its progress record is not step, train_loss, eval and wall_s")
    kinds = {"model": dict, "optimizer": dict, "data_generator": torch.Tensor, "torch_rng": torch.Tensor}
    wrong = [key for key, kind in kinds.items() if not isinstance(saved.get(key), kind)]
    if wrong:
        raise damaged(f"no valid {', '.join(wrong)}")
    try:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["data_generator"])
        torch.set_rng_state(saved["torch_rng"])
    # what torch raises for contents of the right type but the wrong make-up
    except (KeyError, IndexError, AttributeError, RuntimeError, TypeError, ValueError) as err:
        raise damaged(_last_line(err)) from None
    return state


def train_model(
    cfg: TrainConfig,
    corpus: Corpus,
    out_dir: str | Path,
    positional: str,
    *,
    progress: bool = True,
    stop_after: int | None = None,
) -> dict:
    """Train (or resume) one model; returns its summary (curve, final held-out loss).

    ``stop_after``: stop (with a checkpoint) once this many steps are done -- an
    interruption, for tests of resuming.
    """
    if positional not in POSITIONALS:
        raise ValueError(f"positional must be one of {', '.join(POSITIONALS)}, got {positional!r}")
    spec = cfg.spec(positional)
    d = Path(out_dir) / positional
    d.mkdir(parents=True, exist_ok=True)
    ckpt_path, init_path = d / "checkpoint.pt", d / "init.pt"
    fingerprint = {"version": CHECKPOINT_VERSION, "config": cfg.fingerprint(), "spec": spec.to_dict(),
                   "corpus": {k: v for k, v in corpus.describe().items() if k.endswith("sha256")}}

    model = NoPETransformer(spec, seed=cfg.seed)
    if init_path.exists():
        _check_init(init_path, spec, cfg.seed)
    else:
        _atomic_save({"spec": spec.to_dict(), "model": model.state_dict(), "seed": cfg.seed}, init_path)
    opt = optimizer(model, cfg)
    gen = torch.Generator().manual_seed(derive_seed(cfg.seed, STREAM_DATA))
    state = {"step": 0, "train_loss": [], "eval": [], "wall_s": 0.0}
    if ckpt_path.exists():
        saved = read_checkpoint(ckpt_path)
        # the fingerprint first: nothing else in a checkpoint of another run is used
        if saved.get("fingerprint") != fingerprint:
            raise ValueError(
                f"{str(ckpt_path)!r} is a checkpoint of a different run (differs in: "
                f"{_difference(saved.get('fingerprint'), fingerprint)}); use another --out or delete it"
            )
        state = _restore(saved, ckpt_path, model, opt, gen)

    train = torch.from_numpy(corpus.train)
    T, B = cfg.seq_len, cfg.batch_size
    if train.numel() <= T + 1:
        raise ValueError(f"training text has {train.numel()} bytes, fewer than one window of {T + 1}")
    eval_batch = windows(corpus.heldout, T + 1, cfg.eval_windows)
    offsets = torch.arange(T + 1)

    def save() -> None:
        _atomic_save({
            "fingerprint": fingerprint, "spec": spec.to_dict(), "config": cfg.to_dict(),
            "model": model.state_dict(), "optimizer": opt.state_dict(),
            "data_generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "state": state,
        }, ckpt_path)

    bar = _Bar(positional, cfg.steps, state["step"], progress)
    t0 = time.perf_counter()
    wall_before = state["wall_s"]
    last_eval = state["eval"][-1]["loss"] if state["eval"] else None
    model.train()
    try:
        while state["step"] < cfg.steps and (stop_after is None or state["step"] < stop_after):
            step = state["step"]
            for group in opt.param_groups:
                group["lr"] = learning_rate(cfg, step)
            starts = torch.randint(train.numel() - T - 1, (B,), generator=gen)
            batch = train[starts.unsqueeze(1) + offsets].long()  # (B, T+1)
            loss = model.loss(batch[:, :-1], batch[:, 1:])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            state["step"] = step + 1
            state["train_loss"].append(loss.item())
            if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
                last_eval = evaluate(model, eval_batch)
                state["eval"].append({"step": state["step"], "loss": last_eval})
                model.train()
            state["wall_s"] = wall_before + time.perf_counter() - t0
            if state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.steps:
                save()
            bar.update(state["step"], state["train_loss"][-1], last_eval)
    except KeyboardInterrupt:
        save()
        bar.close()
        raise
    if stop_after is not None and state["step"] % cfg.checkpoint_every:
        save()
    bar.update(state["step"], state["train_loss"][-1] if state["train_loss"] else float("nan"), last_eval, force=True)
    bar.close()
    model.eval()
    return {
        "positional": positional,
        "spec": spec.to_dict(),
        "steps": state["step"],
        "tokens_seen": state["step"] * B * T,
        "parameters": model.n_params(),
        "wall_s": round(state["wall_s"], 1),
        "train_loss": state["train_loss"],
        "eval": state["eval"],
        "done": state["step"] >= cfg.steps,
    }


def final_evaluation(cfg: TrainConfig, corpus: Corpus, out_dir: str | Path, positional: str) -> dict:
    """Held-out bits/byte of the trained model and of its initialisation."""
    d = Path(out_dir) / positional
    batch = windows(corpus.heldout, cfg.seq_len + 1, cfg.final_eval_windows)
    out = {"windows": int(batch.shape[0]), "bytes_scored": int(batch.shape[0] * cfg.seq_len)}
    for which, path in (("trained", d / "checkpoint.pt"), ("init", d / "init.pt")):
        out[f"{which}_bits_per_byte"] = evaluate(load_model(path), batch) / math.log(2)
    return out
