"""`Sampler`: units ``first .. first+count-1`` drawn and run through the network, in one call.

The one sequence draw -> unpack -> forward that `run`, `activations` and the experiments
share. A *unit* is an independent network under the annealed measure (fresh weights and
``batch`` sequences each) or a sequence of the one frozen network under the quenched
measure (drawn from the seed's network stream). Unit ``i`` draws from its own generator
``(seed, i)`` (`simulate.engine.seeding`), so its numbers never depend on how units are
grouped into chunks.
"""

from __future__ import annotations

import torch

from theory import ModelSpec

from .arguments import matmul_dtype, stream_dtype
from .draw import Drawer, draw_network, sample_plan, unpack
from .forward_pass import forward
from .projections import Projections


class Sampler:
    """Draws chunks of units of ``spec`` and returns their taps (see the module docstring).

    ``method`` chooses how annealed projections are drawn (``"auto"``, ``"explicit"``,
    ``"gram"``); ``workers`` threads fill the random buffers. Use as a context manager, or
    call `close`. ``dtype`` bfloat16/float16 runs the matrix products in it and the rest in
    float32; the normals are drawn in float32 (``draw_dtype``, by default the stream's) and
    rounded once, so a bfloat16 run sees the networks of the float32 run, rounded.
    ``draw_dtype=torch.float32`` with ``dtype=torch.float64`` runs those very networks in
    float64 (the reference of the bfloat16 error test).
    """

    def __init__(self, spec: ModelSpec, *, seed: int, measure: str = "annealed", method: str = "auto",
                 batch: int = 1, device: torch.device, dtype: torch.dtype, workers: int = 1,
                 draw_dtype: torch.dtype | None = None):
        self.spec, self.batch = spec, batch
        self.stream, self.matmul = stream_dtype(dtype), matmul_dtype(dtype)
        draw_dtype = self.stream if draw_dtype is None else draw_dtype
        self.quenched = measure == "quenched"
        self.plan = sample_plan(spec, batch * spec.seq_len, with_weights=not self.quenched, method=method)
        self.network = self.table = None
        if self.quenched:
            self.network, self.table = draw_network(spec, seed, device, draw_dtype, self.matmul)
            if draw_dtype != self.stream:
                self.network = self.network.to(self.stream)  # the float32 draws, run in float64
                self.table = None if self.table is None else self.table.to(self.stream)
        # the weight normals are rounded by the drawing threads (when they enter bf16 products)
        rounded = self.matmul if draw_dtype == self.stream else None
        self.drawer = Drawer(self.plan, seed, device, draw_dtype, workers, low_dtype=rounded)

    def taps(self, first: int, count: int, record: list[str]) -> dict[str, torch.Tensor]:
        """The taps ``record`` of units ``first .. first+count-1``: (count, batch, ...)
        annealed, (1, count, ...) quenched (one network, ``count`` sequences)."""
        spec = self.spec
        buffer, ids = self.drawer.draw(first, count, spec.vocab_size)
        if buffer.dtype != self.stream:
            buffer = buffer.to(self.stream)  # the float64 reference of float32 draws
        x, draws = unpack(spec, self.plan, buffer, ids, self.table, low=self.drawer.low)
        if self.quenched:
            x = x.reshape(1, count, spec.seq_len, spec.d_model)  # (1, count, T, d): one network
            project = self.network
        else:
            x = x.reshape(count, self.batch, spec.seq_len, spec.d_model)  # (count, B, T, d): `count` networks
            project = Projections(spec, draws, matmul_dtype=self.matmul)
        with torch.no_grad():
            return forward(spec, x, project, record=record)

    @property
    def gram_projections(self) -> list[str]:
        """The projection kinds drawn by the Gram path (annealed), sorted."""
        return sorted({f"{e.key[1]}" for e in self.plan.entries if e.form == "G"})

    def close(self) -> None:
        self.drawer.close()

    def __enter__(self) -> "Sampler":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
