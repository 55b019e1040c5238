"""Drawing a chunk of samples: a static plan of standard normals per sample, filled in place.

On a CPU the random generator, not the matrix products, is the bottleneck (measured:
drawing the weights with ``torch.randn`` costs about as much as the whole forward pass),
so each sample draws *all* its normals with one call into a preallocated row of a
buffer, from its own generator (seeded by the run seed and the sample index), and the
samples of a chunk are split across worker threads (torch releases the GIL while it
fills). The plan -- which projection draws its weights ``W`` and which draws the
Gram-path normals ``G`` -- depends only on the spec and the options, never on the data or
the chunk, so the numbers of a sample never depend on the chunk size.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import torch

from theory import ModelSpec

from .projections import Projections, projection_kinds, projection_shape
from .seeding import network_generator, sample_generator


@dataclass(frozen=True)
class Entry:
    key: str | tuple[int, str]  # "x", "pos" or (layer, kind)
    form: str  # "x", "W", "G" or "P" (a learned position table)
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class DrawPlan:
    """The normals one sample draws, laid out in one flat row."""

    entries: tuple[Entry, ...]
    rows: int  # B * T rows of the input
    vocab_ids: bool  # whether the sample also draws token ids (after its normals)

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries)


def use_gram(spec: ModelSpec, kind: str, rows: int, method: str) -> bool:
    """Whether the Gram fast path draws this projection (annealed only).

    It draws R x d_out normals and costs ~2 R^2 (d_in + d_out) FLOPs instead of
    d_in x d_out normals and 2 R d_in d_out FLOPs: a gain exactly when R < d_in.
    """
    if method == "explicit":
        return False
    if method == "gram":
        return True
    return rows < projection_shape(spec, kind)[1]  # "auto": rows < d_in


def sample_plan(spec: ModelSpec, rows: int, *, with_weights: bool, method: str) -> DrawPlan:
    """Plan of a sample: its inputs (and, annealed, its network's weights or G's).

    ``with_weights=False`` is the quenched measure: the network is drawn once, apart, and
    a sample draws only its inputs (only token ids when the vocabulary is finite).
    """
    entries: list[Entry] = []
    offset = 0

    def add(key, form, shape):
        nonlocal offset
        entries.append(Entry(key, form, tuple(shape), offset))
        offset += math.prod(shape)

    # Inputs: x_m ~ N(0, sigma_embed^2 I). With a vocabulary, the rows of the (fresh or
    # frozen) embedding table that the ids select; annealed, row m is drawn at the first
    # position where its id appears, which is the table's law restricted to the used rows.
    if with_weights or spec.vocab_size is None:
        add("x", "x", (rows, spec.d_model))
    if with_weights:
        for layer in range(spec.n_layers):
            for kind in projection_kinds(spec, layer):
                d_out, d_in = projection_shape(spec, kind)
                if use_gram(spec, kind, rows, method):
                    add((layer, kind), "G", (rows, d_out))
                else:
                    add((layer, kind), "W", (d_out, d_in))
        if spec.positional == "learned":  # the network's own position table (GPT-2's wpe)
            add("pos", "P", (spec.seq_len, spec.d_model))
    return DrawPlan(tuple(entries), rows, spec.vocab_size is not None)


def default_workers(device: torch.device) -> int:
    """Threads that fill buffers: one per core on a CPU (torch fills without the GIL)."""
    if device.type != "cpu":
        return 1
    return max(1, min(torch.get_num_threads(), os.cpu_count() or 1))


def weight_span(plan: DrawPlan) -> tuple[int, int]:
    """``(start, stop)`` of the plan's weight and Gram normals (forms W and G) in a row.

    The inputs come first and a learned position table last (`sample_plan`), so the normals
    that enter the matrix products are one contiguous span; (0, 0) when there are none.
    """
    spans = [(e.offset, e.offset + e.size) for e in plan.entries if e.form in ("W", "G")]
    return (spans[0][0], spans[-1][1]) if spans else (0, 0)


class Drawer:
    """Fills a chunk's buffers from per-sample generators, reusing the buffers.

    ``low_dtype`` (bfloat16/float16): each worker also rounds its sample's weight and Gram
    normals (`weight_span`) into a buffer of that dtype right after drawing them, while the
    row is in cache (one contiguous conversion per sample instead of a strided one per
    projection and chunk later). The normals are still drawn in ``dtype`` (float32), so the
    rounded values are exactly ``draws.to(low_dtype)``: the networks of the float32 run.
    (torch's own bfloat16 ``randn`` is slower on a CPU -- 217 against 291 M normals/s on one
    AVX512 thread -- and differs from the rounded float32 draws in the last < 16 values of a
    call whose length is no multiple of 16, where its remainder loop draws differently.)
    """

    def __init__(self, plan: DrawPlan, seed: int, device: torch.device, dtype: torch.dtype, workers: int,
                 low_dtype: torch.dtype | None = None):
        self.plan = plan
        self.seed = seed
        self.device = device
        self.dtype = dtype
        self.workers = workers
        self.low_dtype = low_dtype
        self.span = weight_span(plan)
        self._pool = ThreadPoolExecutor(workers) if workers > 1 else None
        self._buffer: torch.Tensor | None = None
        self._low: torch.Tensor | None = None
        self._low_view: torch.Tensor | None = None
        self._ids: torch.Tensor | None = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    @property
    def low(self) -> torch.Tensor | None:
        """The last chunk's rounded weight normals (count, span) in ``low_dtype``, or None."""
        return self._low_view

    def draw(self, first: int, count: int, vocab_size: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Normals (count, total) and ids (count, rows) of samples first .. first+count-1
        (and, with ``low_dtype``, `low`: their weight normals rounded)."""
        start, stop = self.span
        rounding = self.low_dtype is not None and stop > start
        if self._buffer is None or self._buffer.shape[0] < count:
            self._buffer = torch.empty(count, self.plan.total, device=self.device, dtype=self.dtype)
            if rounding:
                self._low = torch.empty(count, stop - start, device=self.device, dtype=self.low_dtype)
            if self.plan.vocab_ids:
                self._ids = torch.empty(count, self.plan.rows, device=self.device, dtype=torch.long)
        buffer = self._buffer[:count]
        low = self._low[:count] if rounding else None
        self._low_view = low
        ids = self._ids[:count] if self.plan.vocab_ids else None

        def fill(which: range) -> None:
            for j in which:
                gen = sample_generator(self.seed, first + j, self.device)
                torch.randn(self.plan.total, generator=gen, out=buffer[j])
                if low is not None:
                    low[j].copy_(buffer[j, start:stop])  # rounded once, while the row is in cache
                if ids is not None:
                    torch.randint(vocab_size, (self.plan.rows,), generator=gen, out=ids[j])

        if self._pool is None or count == 1:
            fill(range(count))
        else:
            list(self._pool.map(fill, [range(w, count, self.workers) for w in range(self.workers)]))
        return buffer, ids


def first_occurrence(ids: torch.Tensor) -> torch.Tensor:
    """For ids (S, R): index of the first position holding the same id, (S, R)."""
    same = ids.unsqueeze(-1) == ids.unsqueeze(-2)  # (S, R, R)
    return same.to(torch.uint8).argmax(dim=-1)


def unpack(
    spec: ModelSpec,
    plan: DrawPlan,
    buffer: torch.Tensor,
    ids: torch.Tensor | None,
    table: torch.Tensor | None = None,
    low: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """Views into a chunk's buffer: inputs (S, R, d) scaled, and the projection draws.

    ``table`` is the frozen embedding table of a quenched run with a finite vocabulary;
    ``low`` the weight and Gram normals already rounded (`Drawer.low`, the span
    `weight_span`): the projection draws are then views into it.
    """
    S = buffer.shape[0]
    if table is not None:
        return table[ids], {}
    x = None
    draws = {}
    start = weight_span(plan)[0]
    for e in plan.entries:
        if low is not None and e.form in ("W", "G"):
            view = low[:, e.offset - start:e.offset - start + e.size].view(S, *e.shape)
        else:
            view = buffer[:, e.offset:e.offset + e.size].view(S, *e.shape)
        if e.form == "x":
            x = view
        else:
            draws[e.key] = (e.form, view)
    if ids is not None:
        x = torch.gather(x, 1, first_occurrence(ids).unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    return x.mul_(spec.sigma_embed), draws  # in place: the buffer is redrawn for every chunk


def draw_network(spec: ModelSpec, seed: int, device: torch.device, dtype: torch.dtype,
                 matmul_dtype: torch.dtype | None = None) -> tuple[Projections, torch.Tensor | None]:
    """The one frozen network of a quenched run: explicit weights (S = 1), embedding table
    (drawn in ``dtype``; the weights rounded once to ``matmul_dtype`` when given)."""
    gen = network_generator(seed, device)
    draws = {}
    for layer in range(spec.n_layers):
        for kind in projection_kinds(spec, layer):
            shape = projection_shape(spec, kind)
            draws[(layer, kind)] = ("W", torch.randn(1, *shape, generator=gen, device=device, dtype=dtype))
    table = None
    if spec.vocab_size is not None:
        table = torch.randn(spec.vocab_size, spec.d_model, generator=gen, device=device, dtype=dtype) * spec.sigma_embed
    if spec.positional == "learned":  # drawn last: the other draws stay those of positional "none"
        draws["pos"] = ("P", torch.randn(1, spec.seq_len, spec.d_model, generator=gen, device=device, dtype=dtype))
    return Projections(spec, draws, matmul_dtype=matmul_dtype), table
