"""The held-out evaluation of a trained model: bits per byte, its loss per context position,
and the baselines on the same bytes, every error clustered by held-out document.

**Windows.** ``count`` evenly spaced, non-overlapping held-out windows of ``seq_len + 1``
bytes (`window_starts`); bytes ``1..seq_len`` of each are scored, byte ``j`` with the ``j``
bytes before it in its window as context (context position ``j = 1..seq_len``). A window
belongs to the held-out document its first byte lies in (`Corpus.documents`).

**Numbers.** Bits per byte = mean next-byte cross-entropy / ln 2 over all scored bytes, and
per context position ``j`` the mean over windows; each with the cluster-robust (CR1)
standard error over documents (`clustered.clustered_mean`). The same windows and positions
are scored by interpolated Kneser-Ney n-grams of orders 1-7 fitted on the training bytes
(`baselines.KneserNey`), the add-one unigram and bigram, and (on the whole held-out text)
the standard library's compressors. "Loss falls with context" is read off the per-position
curve: its mean over ``j`` in [1, 4], [5, 16], [17, 64], [65, T] with clustered errors.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from .baselines import KneserNey, compressor_bits_per_byte
from .clustered import clustered_mean
from .corpus import Corpus, bigram_bits_per_byte, unigram_bits_per_byte
from .files import load_model

NGRAM_ORDERS = tuple(range(1, 8))
CONTEXT_BANDS = ((1, 4), (5, 16), (17, 64), (65, None))


def window_starts(size: int, length: int, count: int) -> np.ndarray:
    """Offsets of ``count`` evenly spaced, non-overlapping windows of ``length`` bytes in a
    text of ``size`` bytes (fewer if the text is short)."""
    n_max = size // length
    if n_max < 1:
        raise ValueError(f"held-out text has {size} bytes, fewer than one window of {length}")
    count = min(count, n_max)
    return (np.arange(count) * (n_max // count)) * length


def heldout_batch(corpus: Corpus, length: int, count: int, blocks: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """The windows (N, length) as int64 ids and their document ids (N,)."""
    starts = window_starts(corpus.heldout.size, length, count)
    ids = torch.from_numpy(np.stack([corpus.heldout[s:s + length] for s in starts]).astype(np.int64))
    docs = corpus.documents(starts) if blocks is None else corpus.documents(starts, blocks)
    return ids, docs


@torch.no_grad()
def per_position_loss(model, batch: torch.Tensor, chunk: int = 16) -> np.ndarray:
    """Next-byte cross-entropy (nats) of bytes 1..T of each window (N, T+1): (N, T)."""
    model.eval()
    out = []
    for i in range(0, batch.shape[0], chunk):
        w = batch[i:i + chunk]
        logits = model(w[:, :-1])  # (B, T, V)
        out.append(torch.nn.functional.cross_entropy(logits.transpose(1, 2), w[:, 1:], reduction="none").double().numpy())
    return np.concatenate(out)


def summarise(bits: np.ndarray, docs: np.ndarray) -> dict:
    """Bits per byte, per context position and per context band, with errors over documents,
    from per-window, per-position bits (N, T)."""
    total, total_se = clustered_mean(bits.mean(axis=1), docs)
    pos, pos_se = clustered_mean(bits, docs)
    T = bits.shape[1]
    bands = []
    for lo, hi in CONTEXT_BANDS:
        hi = T if hi is None else min(hi, T)
        if lo > T:
            continue
        m, se = clustered_mean(bits[:, lo - 1:hi].mean(axis=1), docs)
        bands.append({"from": lo, "to": hi, "bits_per_byte": float(m), "se": float(se)})
    return {"bits_per_byte": float(total), "bits_per_byte_se": float(total_se),
            "per_position": pos.tolist(), "per_position_se": pos_se.tolist(), "context_bands": bands}


def baselines(corpus: Corpus, batch: torch.Tensor, docs: np.ndarray, orders=NGRAM_ORDERS) -> dict:
    """Every baseline on the scored bytes of ``batch`` (N, T+1), with per-position curves for
    the n-grams; compressors and add-one models as single numbers (see the module docstring)."""
    w = batch.numpy().astype(np.uint8)
    out = {"unigram_bits_per_byte": unigram_bits_per_byte(corpus.train, corpus.heldout),
           "bigram_bits_per_byte": bigram_bits_per_byte(corpus.train, corpus.heldout),
           "smoothing": "interpolated Kneser-Ney (Chen & Goodman 1999), one discount n1/(n1+2 n2) per order",
           "kneser_ney": {}}
    for n in orders:
        out["kneser_ney"][str(n)] = summarise(KneserNey(corpus.train, int(n)).per_position(w), docs)
    out["compressors"] = compressor_bits_per_byte(corpus.heldout)
    out["compressors_on"] = "the whole held-out text, alone (no training bytes)"
    return out


def evaluate_checkpoint(path: str | Path, batch: torch.Tensor, docs: np.ndarray) -> dict:
    """`summarise` of the model in ``path`` on ``batch``."""
    return summarise(per_position_loss(load_model(path), batch) / math.log(2), docs)


def baseline_table(base: dict, models: dict) -> list[str]:
    """Markdown rows: each model's bits/byte (± se over documents) beside every baseline."""
    rows = ["| model | held-out bits/byte | ± se (documents) | contexts 1-4 | 5-16 | 17-64 | 65-T |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]

    def row(name: str, s: dict) -> str:
        bands = " | ".join(f"{b['bits_per_byte']:.3f}" for b in s["context_bands"])
        return f"| {name} | {s['bits_per_byte']:.3f} | {s['bits_per_byte_se']:.3f} | {bands} |"

    for name, s in models.items():
        rows.append(row(f"**{name}**", s))
    for n, s in base.get("kneser_ney", {}).items():
        rows.append(row(f"Kneser-Ney {n}-gram", s))
    rows.append(f"| add-one unigram / bigram | {base['unigram_bits_per_byte']:.3f} / {base['bigram_bits_per_byte']:.3f} | | | | | |")
    comp = base.get("compressors", {})
    if comp:
        rows.append("| xz / bz2 / zlib (held-out text alone) | " + " / ".join(f"{comp[k]:.3f}" for k in ("xz", "bz2", "zlib"))
                    + " | | | | | |")
    return rows
