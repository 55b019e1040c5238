"""What the depth recursion carries through a block, and how each tap's result is labelled.

`Stream` holds the position kernels (T x T, positions 1..T) as the block's sublayers act
on them (`theory.block`: stream ``x``, branch ``h``): ``K = E[x_m . x_n]/d`` of the
residual stream, ``E`` the kernel of the normalised branch input (with ``nu2``, the
per-position ``E|e|^4/d^2``), ``branch`` the kernel a residual write adds to ``K``.

`Layer` says, for one layer at one level, how exact each kind's results are:

* ``best`` at layer 0 with eps = 0 every result is exact (the first-layer derivation; the MLP's
  per-position moments are one-dimensional Gaussian integrals);
* the LayerNorm opening the attention branch and the projections and logits after it are
  exact at layer 0 at the best level for any eps (Gaussian inputs);
* from layer 1 (the second layer) on everything is approximate: the Gaussian-channel closure and the
  neglected per-network fluctuation of the kernel (`CLOSURE`, `FLUCTUATION`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .._result import Level
from ..prediction import TapPrediction
from ..taps import tap_name
from ..tolerance import DEFAULT_TOLERANCE, depth_tolerance

# Assumptions shared by every approximate step (stated once, so verify can compare them).
CLOSURE = "residual channels i.i.d. Gaussian over positions given the kernel (NNGP closure)"
FLUCTUATION = ("per-network fluctuation of the kernel (and of the pre-activation Gram matrix) "
               "about its mean neglected, O(1/sqrt(d))")
# The best level's replacement of FLUCTUATION (`theory.depth_maps._gram`).
GRAM_FLUCTUATION = ("per-sample Gram fluctuation of the stream to second order (Wishart-form components: the "
                    "closure's 1/D, values over n_kv d_head, MLP over d_mlp; inherited through the norm at its "
                    "mean radii; softmax rows at the keys' effective dimension; with eps > 0 the norm's radius law widened by "
                    "the Gram diagonal and by the attention rows' per-network scale)")


@dataclass
class Stream:
    """The kernels of one block as the recursion walks its sublayers."""

    K: np.ndarray
    E: np.ndarray | None = None
    nu2: np.ndarray | None = None
    branch: np.ndarray | None = None
    branch_label: tuple[Level, str, tuple[str, ...]] | None = None  # of the branch's last tap
    branch_kind: str = ""  # the kind that computed ``branch`` (attention, mlp)
    opens: str = ""  # the kind of the sublayer after the current one (a norm is labelled by the branch it opens)
    block_assumptions: tuple[str, ...] = ()  # every branch's assumptions so far (the block output states them all)
    # per-network fluctuation of the keys' spread (`theory.depth_maps._fluctuation`): the relative
    # variance kappa_m of the stream's per-network key spread, and the attention branch's own part
    spread_rel_var: np.ndarray | None = None
    branch_spread_rel_var: np.ndarray | None = None
    # for the derived tolerances (`theory.tolerance.depth_tolerance`): residual writes so far, the
    # writes of one block, and the largest relative second-order softmax correction made so far
    # the per-sample fluctuation of the stream's Gram matrix (`theory.depth_maps._gram`, best level):
    # its Wishart-form components, their images after the last norm, the cosines' variance beyond the
    # closure's (T x T) there, and the current branch's (inherited parts, own sources)
    gram: list | None = None
    norm_images: list | None = None
    # the same components carried with their radial noise (`_gram.normalised_images`, ``radii=True``):
    # the view the softmax rows read (the keys' effective dimension)
    gram_pairs: list | None = None
    norm_images_pairs: list | None = None
    branch_gram_pairs: tuple | None = None
    cos_var_excess: np.ndarray | None = None
    branch_gram: tuple | None = None
    # the per-network fluctuation of each position's squared norm from the attention rows (best level,
    # `layernorm.radial_law`): the variance ``b_m`` written by attention (T,) and the variance of its
    # per-network scale (T,), in the stream's units squared; the current attention branch's own pair
    row_radial_mean: np.ndarray | None = None
    row_radial_var: np.ndarray | None = None
    branch_row_radial: tuple | None = None
    writes: int = 0
    writes_per_block: int = 1
    correction: float = 0.0


@dataclass
class Layer:
    """One layer of the recursion at one level: constants, labels, and where results go."""

    spec: object
    layer: int
    best: bool
    records: dict[str, TapPrediction]
    kernels: dict[str, np.ndarray]
    progress: Callable[[str], None] | None = None
    positions: np.ndarray = field(default=None)
    stream: Stream | None = None  # the block's kernels (set by `theory.depth`), read for the tolerances

    def __post_init__(self) -> None:
        T = int(self.spec.seq_len)
        self.positions = np.arange(1, T + 1)
        self.pos = self.positions.astype(float)
        self.zero = np.zeros(T)
        self.d = int(self.spec.d_model)
        self.eps = float(self.spec.ln_eps) if self.best else 0.0

    # --- how exact, and what is assumed
    @property
    def first(self) -> bool:
        return self.layer == 0

    @property
    def exact_here(self) -> bool:
        """The first layer (layer 0, `theory.derive`) is exact at eps = 0; the closure acts only from layer 1 on."""
        return self.first and self.best and self.eps == 0

    @property
    def closure(self) -> tuple[str, ...]:
        if self.first:
            return ()
        return (CLOSURE, GRAM_FLUCTUATION if self.best else FLUCTUATION)

    # --- results
    def put(self, suffix: str, level: Level, error: str, assumptions: tuple[str, ...], *,
            tolerance: tuple[float, str] | None = None, **quantities) -> None:
        """Record one tap's result at every position 1..T.

        The declared tolerance: 0 if exact; ``tolerance`` (value, source) if the map derived
        one; the leading level's stated default; otherwise `theory.tolerance.depth_tolerance`
        from the closure steps below the tap and the corrections made so far (``stream``).
        """
        name = tap_name(suffix, self.layer)
        if level == Level.EXACT:
            tolerance = (0.0, "exact")
        elif tolerance is None and not self.best:
            tolerance = (DEFAULT_TOLERANCE, "default (the leading level has no error estimate)")
        elif tolerance is None:
            stream = self.stream
            blocks = stream.writes / max(stream.writes_per_block, 1) if stream is not None else float(self.layer)
            tolerance = depth_tolerance(blocks, self.d, stream.correction if stream is not None else 0.0)
        self.records[name] = TapPrediction(
            tap=name, level=level, positions=self.positions, values=quantities, error=error,
            assumptions=assumptions, regime="all m" if self.first else "d >> 1 (Gaussian channels), tau^2 moderate",
            tolerance=tolerance[0], tolerance_source=tolerance[1], source="depth")

    def keep(self, suffix: str, K: np.ndarray) -> None:
        self.kernels[tap_name(suffix, self.layer)] = K.copy()

    def say(self, line: str) -> None:
        if self.progress:
            self.progress(line)
