"""Streaming statistics of taps, per position, in float64, with honest standard errors.

For each recorded *row* -- a tap's values (``"value"``), or for ``hook_pattern`` also the
per-head sum of squared weights (``"sum_sq"``) -- and each query position ``m``:

* one **summary per unit** (a unit is an independent network under the annealed measure,
  an independent sequence under the quenched one): the count ``c`` of values it
  contributes at ``m`` (coordinates, heads, keys ``n <= m``), their mean ``a_u`` and
  central moments ``M2_u, M3_u, M4_u`` (two passes, float64);
* **pooled** moments over all values, ``n, mean, M2, M3, M4``, merged block by block with
  the formulas of Chan, Golub & LeVeque (1979) and Pébay (2008);
* **across-unit** moments of ``a_u`` and ``b_u = M2_u / c + (a_u - shift)^2``, from which
  the standard errors come. Coordinates of one network are correlated (they share its
  weights), so a standard error from the pooled values would be too small; the spread of
  per-unit summaries is the honest one.

Merges happen in aligned blocks of `BLOCK` unit indices, so the floating-point result does
not depend on the chunk size, and a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from theory.taps import parse_tap

from .seeding import STREAM_RESERVOIR, derive_seed

BLOCK = 64

# The taps that hold a (T x T) matrix per head, of which only keys n <= m are values.
MASKED_TAPS = ("attn.hook_attn_scores", "attn.hook_pattern")


def tap_rows(tap: str) -> tuple[str, ...]:
    """The statistic rows a tap yields."""
    return ("value", "sum_sq") if parse_tap(tap)[0] == "attn.hook_pattern" else ("value",)


@dataclass
class RowValues:
    """Values of one row for a chunk of units: (U, P, C), valid where ``mask`` (P, C)."""

    values: torch.Tensor
    mask: torch.Tensor | None
    keys: int  # T (key axis length) for masked rows, else 0


def extract(tap: str, tensor: torch.Tensor, positions: torch.Tensor, quenched: bool) -> dict[str, RowValues]:
    """Rearrange a tap tensor (S, B, ...) into rows of shape (units, positions, values).

    ``positions`` holds 0-based query indices. Under the quenched measure the units are
    the sequences, so the network axis (S = 1) and the sequence axis merge.
    """
    suffix, _ = parse_tap(tap)
    if quenched:
        tensor = tensor.reshape(1, -1, *tensor.shape[2:]).transpose(0, 1)  # (S*B, 1, ...)
    S, B = tensor.shape[:2]
    T = tensor.shape[-1] if suffix in MASKED_TAPS else tensor.shape[2]
    every = len(positions) == T  # positions are sorted and unique: all of them, in order
    if suffix not in MASKED_TAPS:
        y = tensor.reshape(S, B, T, -1)
        y = y if every else y[:, :, positions]  # (S, B, P, C)
        return {"value": RowValues(y.transpose(1, 2).reshape(S, len(positions), -1), None, 0)}
    H = tensor.shape[2]
    y = tensor if every else tensor[:, :, :, positions, :]  # (S, B, H, P, T)
    P = len(positions)
    keys = torch.arange(T, device=tensor.device)
    mask = (keys.unsqueeze(0) <= positions.unsqueeze(1)).repeat(1, B * H)  # (P, B*H*T)
    rows = {"value": RowValues(y.permute(0, 3, 1, 2, 4).reshape(S, P, B * H * T), mask, T)}
    if suffix == "attn.hook_pattern":
        sum_sq = (y * y).sum(dim=-1)  # (S, B, H, P): E sum_n a_mn^2, masked weights are 0
        rows["sum_sq"] = RowValues(sum_sq.permute(0, 3, 1, 2).reshape(S, P, B * H), None, 0)
    return rows


def unit_moments(row: RowValues) -> tuple[torch.Tensor, ...]:
    """Per unit and position: mean, M2, M3, M4 of the valid values, (U, P) float64 each.

    Two passes (the mean, then central powers) in the tap's dtype, with torch's cascade
    summation along the coordinates: for float32 taps each moment carries a relative error
    near 1e-7, far below any Monte Carlo error; everything after this is float64.

    Units go through in blocks of about `MOMENT_BLOCK_BYTES` of values, so the five passes
    over a block's intermediates stay in the cache (each unit's numbers are reduced alone:
    the same bits for any block).
    """
    y = row.values  # (U, P, C)
    U = y.shape[0]
    per_unit = max(1, y[:1].numel() * y.element_size())
    step = max(1, MOMENT_BLOCK_BYTES // per_unit)
    if U <= step:
        return _unit_moments(y, row.mask)
    parts = [_unit_moments(y[i:i + step], row.mask) for i in range(0, U, step)]
    return tuple(torch.cat(t) for t in zip(*parts))


MOMENT_BLOCK_BYTES = 256 << 10  # a block of units' values: its intermediates fit a core's L2


def _unit_moments(y: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    """`unit_moments` of values (U, P, C) valid where ``mask`` (P, C), in one go."""
    row = RowValues(y, mask, 0)
    if row.mask is None:
        mean = y.mean(dim=-1)  # (U, P)
        dev = y - mean.unsqueeze(-1)
    else:
        count = row.mask.sum(dim=-1).to(y.dtype)  # (P,)
        y = y.masked_fill(~row.mask, 0.0)
        mean = y.sum(dim=-1) / count
        dev = (y - mean.unsqueeze(-1)).masked_fill(~row.mask, 0.0)
    dev2 = dev * dev
    m2 = dev2.sum(dim=-1)
    m3 = (dev2 * dev).sum(dim=-1)
    m4 = dev2.square_().sum(dim=-1)
    return tuple(t.double() for t in (mean, m2, m3, m4))


def row_counts(row: RowValues) -> np.ndarray:
    """Values one unit contributes at each position, (P,)."""
    if row.mask is None:
        return np.full(row.values.shape[1], float(row.values.shape[-1]))
    return row.mask.sum(dim=-1).double().cpu().numpy()


def reservoir_picks(row: RowValues, units: np.ndarray, seed: int) -> torch.Tensor:
    """One value per (unit, position), at a coordinate chosen by (seed, unit, position).

    The coordinate is uniform over the valid values, so a reservoir holds independent
    draws (one per unit) of the pooled one-coordinate law.
    """
    U, P, C = row.values.shape
    picks = torch.empty(U, P, dtype=torch.long)
    for j, unit in enumerate(units):
        gen = torch.Generator().manual_seed(derive_seed(seed, STREAM_RESERVOIR, int(unit)))
        picks[j] = torch.randint(1 << 62, (P,), generator=gen)
    picks = picks.to(row.values.device)
    if row.mask is None:
        flat = picks % C
    else:
        valid_keys = row.mask[:, : row.keys].sum(dim=-1)  # (P,) = m
        count = row.mask.sum(dim=-1)  # (P,) = B*H*m
        j = picks % count
        flat = (j // valid_keys) * row.keys + j % valid_keys
    return torch.gather(row.values, 2, flat.unsqueeze(-1)).squeeze(-1).double()  # (U, P)


def chunk_rows(taps: list[str], tensors: dict[str, torch.Tensor], positions: torch.Tensor, quenched: bool) -> list[RowValues]:
    """The statistic rows of a chunk's tap tensors: each tap's rows (`tap_rows`), taps in order."""
    return [row for tap in taps for row in extract(tap, tensors[tap], positions, quenched).values()]


def add_chunk(acc: "Accumulator", rows: list[RowValues], first: int, count: int, nonfinite: list[int], seed: int = 0) -> None:
    """Stream the rows of units ``first .. first+count-1`` into ``acc``.

    Each unit's moments (`unit_moments`) go in together; a unit with a NaN or an inf
    anywhere in its values is left out and its index appended to ``nonfinite``. Units below
    the accumulator's reservoir size also leave one raw value per row and position
    (`reservoir_picks`, seeded by ``seed``).
    """
    counts = [row_counts(row) for row in rows]
    moments = np.stack(
        [np.stack([m.cpu().numpy() for m in unit_moments(row)], axis=0) for row in rows], axis=2
    )  # (4, U, R, P)
    # a NaN or inf anywhere in a unit's values makes its mean or its M4 non-finite
    finite = np.isfinite(moments).all(axis=(0, 2, 3))  # (U,)
    units = np.arange(first, first + count)
    if not finite.all():
        nonfinite.extend(int(u) for u in units[~finite])
    acc.add(units[finite], moments[:, finite], np.stack(counts), first + count)
    if acc.reservoir_size and first < acc.reservoir_size:
        take = np.flatnonzero(finite & (units < acc.reservoir_size))
        if len(take):
            sel = torch.as_tensor(take, device=rows[0].values.device)
            picks = [
                reservoir_picks(RowValues(row.values[sel], row.mask, row.keys), units[take], seed).cpu().numpy()
                for row in rows
            ]
            acc.add_reservoir(units[take], np.stack(picks, axis=1))


def _pooled_merge(a: dict, b: dict) -> dict:
    """Chan/Pébay merge of pooled moments (arrays), ``a`` and ``b`` with counts ``n``."""
    na, nb = a["n"], b["n"]
    n = na + nb
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = b["mean"] - a["mean"]
        w = np.where(n > 0, nb / np.where(n > 0, n, 1), 0.0)
        mean = a["mean"] + delta * w
        prod = np.where(n > 0, na * nb / np.where(n > 0, n, 1), 0.0)  # na nb / n
        nn = np.where(n > 0, n, 1)
        m2 = a["m2"] + b["m2"] + delta**2 * prod
        m3 = a["m3"] + b["m3"] + delta**3 * prod * (na - nb) / nn + 3 * delta * (na * b["m2"] - nb * a["m2"]) / nn
        m4 = (
            a["m4"] + b["m4"]
            + delta**4 * prod * (na * na - na * nb + nb * nb) / nn**2
            + 6 * delta**2 * (na * na * b["m2"] + nb * nb * a["m2"]) / nn**2
            + 4 * delta * (na * b["m3"] - nb * a["m3"]) / nn
        )
    return {"n": n, "mean": mean, "m2": m2, "m3": m3, "m4": m4}


def _unit_merge(a: dict, b: dict) -> dict:
    """Chan merge of the bivariate (a_u, b_u) moments of two groups of units."""
    na, nb = a["units"], b["units"]
    n = na + nb
    if na == 0:
        return dict(b)
    if nb == 0:
        return dict(a)
    da = b["a"] - a["a"]
    db = b["b"] - a["b"]
    f = na * nb / n
    return {
        "units": n,
        "a": a["a"] + da * nb / n,
        "b": a["b"] + db * nb / n,
        "caa": a["caa"] + b["caa"] + da * da * f,
        "cab": a["cab"] + b["cab"] + da * db * f,
        "cbb": a["cbb"] + b["cbb"] + db * db * f,
    }


class Accumulator:
    """Streams per-unit summaries of several rows into pooled and across-unit moments.

    Arrays are (R, P): R rows (tap, kind) by P positions. Memory is flat in the number of
    samples: at most one pending block of per-unit summaries, plus the reservoirs.
    """

    def __init__(self, rows: list[tuple[str, str]], n_positions: int, reservoir: int = 0):
        self.rows = list(rows)
        R, P = len(self.rows), n_positions
        self.shape = (R, P)
        self.reservoir_size = int(reservoir)
        self.counts = np.zeros((R, P))  # values per unit
        zeros = lambda: np.zeros((R, P))  # noqa: E731
        self.pooled = {"n": zeros(), "mean": zeros(), "m2": zeros(), "m3": zeros(), "m4": zeros()}
        self.unit = {"units": 0, "a": zeros(), "b": zeros(), "caa": zeros(), "cab": zeros(), "cbb": zeros()}
        self.shift = zeros()
        self.has_shift = False
        self.blocks_done = 0  # blocks [0, BLOCK * blocks_done) are merged
        self.pending_index = np.zeros(0, dtype=np.int64)
        self.pending = np.zeros((4, 0, R, P))  # mean, M2, M3, M4 per pending unit
        self.reservoir = np.full((R, self.reservoir_size, P), np.nan)
        self.reservoir_filled = np.zeros(self.reservoir_size, dtype=bool)

    # ---------------------------------------------------------------- adding
    def add(self, units: np.ndarray, moments: np.ndarray, counts: np.ndarray, completed: int) -> None:
        """Add per-unit moments (4, U, R, P) of units ``units`` (sorted, finite only).

        ``completed``: every unit index below it has now been added (or rejected), so
        every block ending at or before it can be merged.
        """
        if len(units):
            self.counts = counts
        self.pending_index = np.concatenate([self.pending_index, units])
        self.pending = np.concatenate([self.pending, moments], axis=1)
        while BLOCK * (self.blocks_done + 1) <= completed:
            end = BLOCK * (self.blocks_done + 1)
            take = self.pending_index < end
            self._merge_block(self.pending[:, take])
            self.pending = self.pending[:, ~take]
            self.pending_index = self.pending_index[~take]
            self.blocks_done += 1

    def add_reservoir(self, units: np.ndarray, values: np.ndarray) -> None:
        """Values (U, R, P) for units whose index is below the reservoir size."""
        for j, unit in enumerate(units):
            if unit < self.reservoir_size:
                self.reservoir[:, unit] = values[j]
                self.reservoir_filled[unit] = True

    def _merge_block(self, block: np.ndarray) -> None:
        mean_u, m2_u, m3_u, m4_u = block  # each (k, R, P)
        k = mean_u.shape[0]
        if k == 0:
            return
        c = self.counts
        mean = mean_u.mean(axis=0)
        delta = mean_u - mean
        d2 = delta * delta
        pooled = {
            "n": k * c,
            "mean": mean,
            "m2": m2_u.sum(axis=0) + c * d2.sum(axis=0),
            "m3": (m3_u + 3 * delta * m2_u).sum(axis=0) + c * (d2 * delta).sum(axis=0),
            "m4": (m4_u + 4 * delta * m3_u + 6 * d2 * m2_u).sum(axis=0) + c * (d2 * d2).sum(axis=0),
        }
        self.pooled = _pooled_merge(self.pooled, pooled)
        if not self.has_shift:
            self.shift = mean.copy()
            self.has_shift = True
        a = mean_u - self.shift
        b = m2_u / c + a * a
        ma, mb = a.mean(axis=0), b.mean(axis=0)
        da, db = a - ma, b - mb
        unit = {"units": k, "a": ma, "b": mb, "caa": (da * da).sum(0), "cab": (da * db).sum(0), "cbb": (db * db).sum(0)}
        self.unit = _unit_merge(self.unit, unit)

    # ---------------------------------------------------------------- results
    def finalize(self) -> dict[str, np.ndarray]:
        """Statistics (R, P) so far; the accumulator itself is left unchanged."""
        clone = Accumulator.__new__(Accumulator)
        clone.__dict__ = {k: (dict(v) if isinstance(v, dict) else v) for k, v in self.__dict__.items()}
        clone._merge_block(clone.pending)
        pooled, unit = clone.pooled, clone.unit
        N = unit["units"]
        with np.errstate(invalid="ignore", divide="ignore"):
            n = pooled["n"]
            mean = pooled["mean"]
            if N >= 2:
                mean_se = np.sqrt(np.maximum(unit["caa"], 0) / (N - 1) / N)
                a = unit["a"]
                var_var = (unit["cbb"] - 4 * a * unit["cab"] + 4 * a * a * unit["caa"]) / (N - 1) / N
                var_se = np.sqrt(np.maximum(var_var, 0.0))
            else:
                mean_se = np.full(self.shape, np.nan)
                var_se = np.full(self.shape, np.nan)
            biased = pooled["m2"] / n
            # E[M2/n] = var - Var(pooled mean); adding mean_se^2 makes `var` unbiased.
            var = biased + (np.nan_to_num(mean_se) ** 2)
            kurtosis = np.where(pooled["m2"] > 0, n * pooled["m4"] / pooled["m2"] ** 2, np.nan)
            skewness = np.where(pooled["m2"] > 0, np.sqrt(n) * pooled["m3"] / pooled["m2"] ** 1.5, np.nan)
        # a statistic of no values is undefined, not 0: NaN here, null in JSON
        empty = n == 0
        undefined = lambda a: np.where(empty, np.nan, a)  # noqa: E731
        return {
            "units": np.full(self.shape, N),
            "n_values": n,
            "mean": undefined(mean),
            "mean_se": mean_se,
            "var": undefined(var),
            "var_se": var_se,
            "skewness": skewness,
            "kurtosis": kurtosis,
            "m2": undefined(pooled["m2"]),
            "m3": undefined(pooled["m3"]),
            "m4": undefined(pooled["m4"]),
        }

    def reservoir_values(self) -> np.ndarray:
        """(R, K', P): the reservoir rows filled so far, in unit order (non-finite units skipped)."""
        return self.reservoir[:, self.reservoir_filled]

    # ---------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {f"pooled_{k}": v for k, v in self.pooled.items()}
        state.update({f"unit_{k}": np.asarray(v) for k, v in self.unit.items()})
        state.update(
            counts=self.counts, shift=self.shift, has_shift=np.asarray(self.has_shift),
            blocks_done=np.asarray(self.blocks_done), pending_index=self.pending_index,
            pending=self.pending, reservoir=self.reservoir, reservoir_filled=self.reservoir_filled,
        )
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what `state_dict` gave. A state of other keys or shapes (a damaged or
        crafted checkpoint) is refused with a ValueError before anything changes: merged
        in, it would fail far from its cause, or broadcast silently."""
        ours = self.state_dict()
        missing = sorted(set(ours) - set(state))
        if missing:
            raise ValueError(f"the accumulator state lacks {', '.join(missing)}")
        for key, mine in ours.items():
            theirs = np.asarray(state[key])
            expected = list(np.shape(mine))
            # the pending block's length (axis 1 of pending, axis 0 of its index) varies
            if key in ("pending", "pending_index") and theirs.ndim == len(expected):
                axis = 1 if key == "pending" else 0
                expected[axis] = theirs.shape[axis]
            if list(theirs.shape) != expected or theirs.dtype.kind not in "biuf":
                raise ValueError(f"the accumulator's {key!r} is {theirs.dtype} of shape {theirs.shape}, "
                                 f"expected numbers of shape {tuple(expected)}")
        if np.shape(state["pending"])[1] != np.shape(state["pending_index"])[0]:
            raise ValueError("the accumulator's pending block and its index differ in length")
        self.pooled = {k: np.array(state[f"pooled_{k}"]) for k in self.pooled}
        self.unit = {k: np.array(state[f"unit_{k}"]) for k in self.unit}
        self.unit["units"] = int(self.unit["units"])
        self.counts = np.array(state["counts"])
        self.shift = np.array(state["shift"])
        self.has_shift = bool(state["has_shift"])
        self.blocks_done = int(state["blocks_done"])
        self.pending_index = np.array(state["pending_index"])
        self.pending = np.array(state["pending"])
        self.reservoir = np.array(state["reservoir"])
        self.reservoir_filled = np.array(state["reservoir_filled"])
