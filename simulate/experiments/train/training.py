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

Both files hold only tensors and plain containers and are read without running anything
in them (`simulate.experiments.train.files`); a resume compares the run's fingerprint
before it uses anything else in the checkpoint.

Objective: mean next-byte cross-entropy. Bits per byte = nats / ln 2. The held-out curve
is measured every ``eval_every`` steps on fixed held-out windows; the final number on
``final_eval_windows`` evenly spaced, non-overlapping held-out windows of ``seq_len + 1``
bytes (every position of a window counts, so contexts of 1..seq_len bytes are averaged).

Optimiser: AdamW (Loshchilov & Hutter 2019), betas (0.9, 0.95), weight decay on every
matrix (not on the final LayerNorm's gain and bias), linear warm-up then cosine decay to
``min_lr_ratio * lr``, gradient clipping at norm 1 (the nanoGPT recipe).

Precision: ``autocast="bfloat16"`` runs each training step's forward under
``torch.autocast`` (bf16 matrix products; LayerNorm, softmax and the cross-entropy in float32,
torch's autocast lists); the weights, gradients and AdamW state stay float32 (mixed
precision), and every evaluation (the held-out curve and the final bits per byte) runs in
float32. ``"none"`` (the default) is float32 throughout and leaves the run's files as before.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from theory import ModelSpec

from ...engine import Progress, derive_seed
from .corpus import Corpus
from .evaluation import evaluate_checkpoint, heldout_batch
from .files import atomic_save, check_init, read_checkpoint, restore, run_difference
from .model import NoPETransformer

STREAM_DATA = 0xDA7A
CHECKPOINT_VERSION = 1
POSITIONALS = ("none", "learned", "rope")
DEFAULT_POSITIONALS = ("none", "learned")  # what a run trains unless told (`--positional`)
AUTOCASTS = ("none", "bfloat16")


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
    positionals: tuple[str, ...] = DEFAULT_POSITIONALS
    autocast: str = "none"
    snapshot_every: int = 0  # > 0: also keep the weights every this many steps (DIR/<pos>/step_NNNNNN.pt)

    def __post_init__(self) -> None:
        if self.autocast not in AUTOCASTS:
            raise ValueError(f"autocast must be one of {', '.join(AUTOCASTS)}, got {self.autocast!r}")
        for name in ("d_model", "n_heads", "n_layers", "seq_len", "batch_size", "steps", "eval_every",
                     "eval_windows", "final_eval_windows", "checkpoint_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.snapshot_every, bool) or not isinstance(self.snapshot_every, int) or self.snapshot_every < 0:
            raise ValueError(f"snapshot_every must be an integer >= 0 (0: no snapshots), got {self.snapshot_every!r}")
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
        if d["autocast"] == "none":  # float32 runs write (and fingerprint) what they always did
            d.pop("autocast")
        if not d["snapshot_every"]:  # likewise runs without snapshots
            d.pop("snapshot_every")
        return d

    def fingerprint(self) -> dict:
        """What a checkpoint must share to be resumed (the budget may grow: ``steps`` and
        the evaluation sizes are left out)."""
        d = self.to_dict()
        for k in ("steps", "final_eval_windows", "positionals", "preset"):
            d.pop(k)
        return d


PRESETS = {
    # issue 20's recipe: context 128, 2048 bytes a step (short windows, many steps: at this budget the held-out
    # loss per step was the same as with 256 x 16 bytes a step, at half the cost), bf16 autocast, 100 warm-up
    # steps then cosine decay, weights kept every 500 steps. 5000 steps = 10.2 M bytes.
    "base": TrainConfig(preset="base", seq_len=128, batch_size=16, steps=5000, warmup=100, eval_every=250,
                        checkpoint_every=250, autocast="bfloat16", snapshot_every=500),
    # the same recipe for 1000 steps (2.0 M bytes): seed spread and the learned-position twin
    "short": TrainConfig(preset="short", seq_len=128, batch_size=16, steps=1000, warmup=100, eval_every=100,
                         checkpoint_every=100, autocast="bfloat16", snapshot_every=250),
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


def autocast(cfg: TrainConfig) -> torch.autocast:
    """The training step's precision: ``torch.autocast`` to bfloat16, or disabled (float32)."""
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.autocast == "bfloat16")


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
    run = _Training(cfg, corpus, Path(out_dir) / positional, positional)
    last = stop_after if stop_after is not None else cfg.steps
    bar = Progress(cfg.steps, run.state["step"], progress, unit="steps", label=f"train {positional}")
    try:
        while run.state["step"] < min(cfg.steps, last):
            run.step()
            bar.update(run.state["step"], run.note())
    except KeyboardInterrupt:
        run.save()
        bar.close()
        raise
    if stop_after is not None and run.state["step"] % cfg.checkpoint_every:
        run.save()
    bar.update(run.state["step"], run.note(), force=True)
    bar.close()
    return run.summary()


class _Training:
    """One model's training: the model, AdamW, the data generator and the progress record,
    started afresh or resumed from ``dir/checkpoint.pt``."""

    def __init__(self, cfg: TrainConfig, corpus: Corpus, d: Path, positional: str):
        self.cfg, self.positional = cfg, positional
        self.spec = spec = cfg.spec(positional)
        d.mkdir(parents=True, exist_ok=True)
        self.ckpt_path, init_path = d / "checkpoint.pt", d / "init.pt"
        self.fingerprint = {"version": CHECKPOINT_VERSION, "config": cfg.fingerprint(), "spec": spec.to_dict(),
                            "corpus": {k: v for k, v in corpus.describe().items() if k.endswith("sha256")}}
        self.model = NoPETransformer(spec, seed=cfg.seed)
        if init_path.exists():
            check_init(init_path, spec, cfg.seed)
        else:
            atomic_save({"spec": spec.to_dict(), "model": self.model.state_dict(), "seed": cfg.seed}, init_path)
        self.opt = optimizer(self.model, cfg)
        self.gen = torch.Generator().manual_seed(derive_seed(cfg.seed, STREAM_DATA))
        self.state = {"step": 0, "train_loss": [], "eval": [], "wall_s": 0.0}
        if self.ckpt_path.exists():
            saved = read_checkpoint(self.ckpt_path)
            # the fingerprint first: nothing else in a checkpoint of another run is used
            if saved.get("fingerprint") != self.fingerprint:
                raise ValueError(
                    f"{str(self.ckpt_path)!r} is a checkpoint of a different run (differs in: "
                    f"{run_difference(saved.get('fingerprint'), self.fingerprint)}); use another --out or delete it"
                )
            self.state = restore(saved, self.ckpt_path, self.model, self.opt, self.gen)
        self.train = torch.from_numpy(corpus.train)
        T = cfg.seq_len
        if self.train.numel() <= T + 1:
            raise ValueError(f"training text has {self.train.numel()} bytes, fewer than one window of {T + 1}")
        self.eval_batch = windows(corpus.heldout, T + 1, cfg.eval_windows)
        self.offsets = torch.arange(T + 1)
        self.t0 = time.perf_counter()
        self.wall_before = self.state["wall_s"]
        self.last_eval = self.state["eval"][-1]["loss"] if self.state["eval"] else None
        self.model.train()

    def step(self) -> None:
        """One optimiser step on a random batch; the held-out loss and a checkpoint when due."""
        cfg, state, model, opt = self.cfg, self.state, self.model, self.opt
        T, B = cfg.seq_len, cfg.batch_size
        step = state["step"]
        for group in opt.param_groups:
            group["lr"] = learning_rate(cfg, step)
        starts = torch.randint(self.train.numel() - T - 1, (B,), generator=self.gen)
        batch = self.train[starts.unsqueeze(1) + self.offsets].long()  # (B, T+1)
        with autocast(cfg):
            loss = model.loss(batch[:, :-1], batch[:, 1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        state["step"] = step + 1
        state["train_loss"].append(loss.item())
        if state["step"] % cfg.eval_every == 0 or state["step"] == cfg.steps:
            self.last_eval = evaluate(model, self.eval_batch)
            state["eval"].append({"step": state["step"], "loss": self.last_eval})
            model.train()
        state["wall_s"] = self.wall_before + time.perf_counter() - self.t0
        if state["step"] % cfg.checkpoint_every == 0 or state["step"] == cfg.steps:
            self.save()
        if cfg.snapshot_every and (state["step"] % cfg.snapshot_every == 0 or state["step"] == cfg.steps):
            atomic_save({"spec": self.spec.to_dict(), "model": self.model.state_dict(), "seed": cfg.seed,
                         "step": state["step"]}, self.ckpt_path.with_name(f"step_{state['step']:06d}.pt"))

    def save(self) -> None:
        atomic_save({
            "fingerprint": self.fingerprint, "spec": self.spec.to_dict(), "config": self.cfg.to_dict(),
            "model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
            "data_generator": self.gen.get_state(), "torch_rng": torch.get_rng_state(), "state": self.state,
        }, self.ckpt_path)

    def note(self) -> str:
        """The progress bar's note: the last training loss and held-out loss, in bits per byte."""
        losses = self.state["train_loss"]
        loss = f"loss {losses[-1] / math.log(2):.3f} bpb" if losses else ""
        held = f" held-out {self.last_eval / math.log(2):.3f}" if self.last_eval is not None else ""
        return loss + held

    def summary(self) -> dict:
        self.model.eval()
        state, cfg = self.state, self.cfg
        return {
            "positional": self.positional,
            "spec": self.spec.to_dict(),
            "steps": state["step"],
            "tokens_seen": state["step"] * cfg.batch_size * cfg.seq_len,
            "parameters": self.model.n_params(),
            "wall_s": round(state["wall_s"], 1),
            "train_loss": state["train_loss"],
            "eval": state["eval"],
            "done": state["step"] >= cfg.steps,
        }


def final_evaluation(cfg: TrainConfig, corpus: Corpus, out_dir: str | Path, positional: str,
                     blocks: int | None = None) -> dict:
    """Held-out bits/byte of the trained model and of its initialisation, with errors over
    held-out documents and the loss per context position (`evaluation`)."""
    d = Path(out_dir) / positional
    batch, docs = heldout_batch(corpus, cfg.seq_len + 1, cfg.final_eval_windows, blocks)
    out = {"windows": int(batch.shape[0]), "bytes_scored": int(batch.shape[0] * cfg.seq_len),
           "documents": int(np.unique(docs).size)}
    for which, path in (("trained", d / "checkpoint.pt"), ("init", d / "init.pt")):
        s = evaluate_checkpoint(path, batch, docs)
        out[f"{which}_bits_per_byte"] = s["bits_per_byte"]
        out[f"{which}_bits_per_byte_se"] = s["bits_per_byte_se"]
        if which == "trained":
            out["per_position"], out["per_position_se"] = s["per_position"], s["per_position_se"]
            out["context_bands"] = s["context_bands"]
    return out
