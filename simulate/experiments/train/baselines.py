"""Baselines a trained byte-level model must beat, on the same split and the same scored bytes.

**n-gram models, interpolated Kneser-Ney** (Kneser & Ney 1995; the interpolated form of
Chen & Goodman 1999, "An empirical study of smoothing techniques for language modeling",
eq. 17, one absolute discount per order). For an order-``n`` model with history ``h`` of
``n - 1`` bytes and ``h'`` its last ``n - 2`` bytes::

    P_n(w | h) = max(c(h w) - D_n, 0) / c(h .) + D_n N1+(h .) / c(h .) * P_{n-1}(w | h')
    P_n(w | h) = P_{n-1}(w | h')                      when c(h .) = 0 (history never seen)
    P_0(w)     = 1 / 256                              (uniform over byte values)

``c`` is the raw count for the highest order and the *continuation count*
``N1+(. h w)`` (how many distinct bytes precede ``h w`` in the training text) for every
lower order (a byte whose history is shorter, ``k < n - 1`` bytes at the start of a window,
is scored by the order-``k + 1`` model: raw counts at its highest order ``k + 1``); ``c(h .) = sum_w c(h w)``; ``N1+(h .)`` is the number of distinct ``w`` with
``c(h w) > 0``; ``D_n = n1 / (n1 + 2 n2)`` (Ney, Essen & Kneser 1994) from the numbers
``n1``, ``n2`` of order-``n`` grams counted once and twice (with the same kind of count).
The model is fitted on the training bytes; every held-out byte is scored with the history
the model would have (the bytes before it inside the same scored window, so a byte at
context position ``j`` sees at most ``j`` bytes), so the n-gram and the transformer score
exactly the same bytes with the same contexts available.

Also the **add-one** unigram and bigram (`unigram_bits_per_byte`, `bigram_bits_per_byte`
in `corpus`) and **general-purpose compressors** of the standard library on the held-out
text alone (``lzma`` at preset 9 | extreme, ``bz2`` at level 9, ``zlib`` at level 9): bits
of the compressed stream per input byte; they learn only from the held-out text itself.

Implementation: an n-gram is the big-endian integer of its bytes (``uint64``, so
``n <= 8``); counts are ``np.unique`` over those keys and look-ups are ``np.searchsorted``
into the sorted keys.
"""

from __future__ import annotations

import bz2
import lzma
import math
import zlib

import numpy as np

MAX_ORDER = 8
COMPRESSORS = ("xz", "bz2", "zlib")


def _keys(data: np.ndarray, n: int) -> np.ndarray:
    """Big-endian integer of every n-gram ``data[i:i+n]`` (length ``len(data) - n + 1``)."""
    d = data.astype(np.uint64)
    out = np.zeros(max(0, d.size - n + 1), dtype=np.uint64)
    for j in range(n):
        out = (out << np.uint64(8)) | d[j:d.size - n + 1 + j]
    return out


class _Table:
    """Sorted unique keys with their counts; look-ups give 0 for a missing key."""

    def __init__(self, keys: np.ndarray, counts: np.ndarray):
        self.keys, self.counts = keys, counts

    @classmethod
    def of(cls, keys: np.ndarray) -> "_Table":
        u, c = np.unique(keys, return_counts=True)
        return cls(u, c.astype(np.float64))

    def get(self, query: np.ndarray) -> np.ndarray:
        if self.keys.size == 0:
            return np.zeros(query.shape, dtype=np.float64)
        i = np.minimum(np.searchsorted(self.keys, query), self.keys.size - 1)
        return np.where(self.keys[i] == query, self.counts[i], 0.0)


class KneserNey:
    """Interpolated Kneser-Ney byte n-gram model of order ``order`` (1..8) fitted on ``train``
    (see the module docstring for the formula and its source)."""

    def __init__(self, train: np.ndarray, order: int):
        if isinstance(order, bool) or not isinstance(order, int) or not 1 <= order <= MAX_ORDER:
            raise ValueError(f"order must be an integer in 1..{MAX_ORDER}, got {order!r}")
        train = np.asarray(train, dtype=np.uint8)
        if train.size < order + 1:
            raise ValueError(f"training text has {train.size} bytes, too few for an order-{order} model")
        self.order = order
        # per order n: (gram table, history totals, history types, discount) with raw counts
        # ("raw") and with continuation counts ("cont", n < order)
        self.levels: dict[str, list] = {"raw": [None] * (order + 1), "cont": [None] * (order + 1)}
        for n in range(order, 0, -1):
            self.levels["raw"][n] = self._level(_Table.of(_keys(train, n)))
            if n < order:  # continuation counts: distinct left extensions of each n-gram
                upper = self.levels["raw"][n + 1][0].keys
                self.levels["cont"][n] = self._level(_Table.of(upper & np.uint64((1 << (8 * n)) - 1)))

    @staticmethod
    def _level(table: _Table) -> tuple:
        n1, n2 = float(np.sum(table.counts == 1)), float(np.sum(table.counts == 2))
        discount = n1 / (n1 + 2 * n2) if n1 + n2 > 0 else 0.5
        hist = table.keys >> np.uint64(8)
        u, first = np.unique(hist, return_index=True)
        totals = np.add.reduceat(table.counts, first) if table.keys.size else np.zeros(0)
        types = np.diff(np.append(first, table.keys.size)).astype(np.float64)
        return table, _Table(u, totals), _Table(u, types), discount

    def log2prob(self, history: np.ndarray, target: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``log2 P(target | history)`` per row: ``history`` (N, order - 1) bytes (the most recent
        last), ``lengths`` how many of them are available (0..order - 1; the rest are ignored)."""
        target = np.asarray(target).astype(np.uint64)
        N = target.size
        p = np.full(N, 1.0 / 256)
        hist_key = np.zeros(N, dtype=np.uint64)
        for n in range(1, self.order + 1):  # from the unigram up; order n uses n - 1 history bytes
            if n > 1:
                byte = history[:, history.shape[1] - (n - 1)].astype(np.uint64)
                hist_key = hist_key | (byte << np.uint64(8 * (n - 2)))
            usable = lengths >= n - 1
            top = (n == self.order) | (lengths == n - 1)  # the highest order this row reaches: raw counts
            q = np.empty(N)
            seen = np.zeros(N, dtype=bool)
            for kind, rows in (("raw", top), ("cont", ~top)):
                level = self.levels[kind][n]
                if level is None or not rows.any():
                    continue
                table, totals_t, types_t, D = level
                totals, types = totals_t.get(hist_key[rows]), types_t.get(hist_key[rows])
                count = table.get((hist_key[rows] << np.uint64(8)) | target[rows])
                with np.errstate(invalid="ignore", divide="ignore"):
                    q[rows] = np.maximum(count - D, 0.0) / totals + D * types / totals * p[rows]
                seen[rows] = totals > 0
            p = np.where(usable & seen, q, p)
        return np.log2(p)

    def bits_per_byte(self, windows: np.ndarray) -> float:
        """Mean ``-log2 P`` of bytes 1..T of every window (N, T+1), each with the history
        inside its window (`per_position` averaged)."""
        return float(self.per_position(windows).mean())

    def per_position(self, windows: np.ndarray) -> np.ndarray:
        """``-log2 P`` of byte ``j`` of each window given bytes ``0..j-1`` of it, (N, T)."""
        w = np.asarray(windows, dtype=np.uint8)
        N, T1 = w.shape
        k = self.order - 1
        pad = np.concatenate([np.zeros((N, k), dtype=np.uint8), w], axis=1)  # (N, k + T + 1)
        out = np.empty((N, T1 - 1))
        for j in range(1, T1):  # target w[:, j], history w[:, j-k:j]
            hist = pad[:, j:j + k]  # columns k + j - k .. k + j - 1 of pad = w[j-k .. j-1]
            lengths = np.full(N, min(j, k))
            out[:, j - 1] = -self.log2prob(hist, w[:, j], lengths)
        return out


def ngram_baselines(train: np.ndarray, windows: np.ndarray, orders=range(1, 8)) -> dict:
    """Held-out bits/byte of interpolated Kneser-Ney models of each order on ``windows``
    (N, T+1) scored like the model (bytes 1..T, history inside the window):
    ``{"kn_<n>": bits}``. Each order is its own model (its highest order uses raw counts)."""
    out = {}
    for n in orders:
        out[f"kn_{n}"] = KneserNey(train, int(n)).bits_per_byte(windows)
    return out


def compressor_bits_per_byte(data: np.ndarray) -> dict:
    """Bits of the compressed stream per input byte, ``xz`` (lzma preset 9e), ``bz2`` (9),
    ``zlib`` (9), on ``data`` alone."""
    raw = np.asarray(data, dtype=np.uint8).tobytes()
    if not raw:
        raise ValueError("no bytes to compress")
    sizes = {
        "xz": len(lzma.compress(raw, preset=9 | lzma.PRESET_EXTREME)),
        "bz2": len(bz2.compress(raw, 9)),
        "zlib": len(zlib.compress(raw, 9)),
    }
    return {k: 8.0 * v / len(raw) for k, v in sizes.items()}


def nats_to_bits(x: float) -> float:
    return x / math.log(2)
