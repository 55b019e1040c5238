"""The theory side of a check: theory's `Prediction` at one level, at the checked positions.

A `TheoryTable` is a `theory.prediction.Prediction` -- tap -> `TapPrediction` with the
level (exact / asymptotic / approximate), the numbers per quantity over the query
positions, the stated error, the assumptions, the declared relative tolerance and the
source (``"derive"`` for the first-layer steps, ``"depth"`` for the kernel recursion) -- with
the label reports give it (``"best"``, ``"leading"`` or a formula mutant's name). verify
checks ``mean`` and ``var`` of one coordinate of every tap, and ``sum_sq`` =
E[sum_n a_mn^2] of the attention pattern (`quantities_of`); it holds the simulation to
the tolerance theory declares (`relative_tolerance`), never to a number of its own.

Formula mutants (`verify.checks.mutants`) are tables whose records carry other numbers
(`TheoryTable.with_values`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Iterator, Mapping

import numpy as np

from theory import Level, ModelSpec, predict
from theory._domain import layer_one_logit_variance
from theory.positions import check_positions
from theory.prediction import Prediction, TapPrediction

# Which statistic of a tap each check compares, and the name of its standard error in
# `simulate.TapStats`. The pattern's mean is 1/m by construction (rows sum to one) and
# its pooled var is sum_sq/m - 1/m^2, so sum_sq is the one informative quantity there.
QUANTITIES: dict[str, tuple[str, ...]] = {"attn.hook_pattern": ("sum_sq",)}
DEFAULT_QUANTITIES = ("mean", "var")
STANDARD_ERRORS = {"mean": "mean_se", "var": "var_se", "sum_sq": "sum_sq_se"}


def suffix_of(tap: str) -> str:
    """The tap's name without its layer (``blocks.2.attn.hook_z`` -> ``attn.hook_z``)."""
    return tap.split(".", 2)[-1]


def layer_of(tap: str) -> int:
    """The 0-based layer of a full tap name (``blocks.2.attn.hook_z`` -> 2)."""
    parts = tap.split(".", 2)
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else 0


def quantities_of(tap: str) -> tuple[str, ...]:
    """The quantities verify checks for a full tap name (``blocks.0.attn.hook_z``)."""
    return QUANTITIES.get(suffix_of(tap), DEFAULT_QUANTITIES)


def needs_depth(spec: ModelSpec) -> bool:
    """Whether ``spec`` has taps beyond the first layer's attention (more layers, or an MLP)."""
    return int(spec.n_layers) > 1 or not spec.attn_only


@dataclass(frozen=True)
class TheoryTable(Mapping[str, TapPrediction]):
    """Theory's prediction at one level for every tap of every layer, at the checked positions.

    A mapping tap -> `theory.prediction.TapPrediction` (``table[tap].level``,
    ``.values[quantity]`` over ``positions``, ``.error``, ``.assumptions``,
    ``.tolerance``, ``.source``), with ``label`` naming it in reports.

    >>> from theory import ModelSpec
    >>> t = theory_table(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, attn_only=True), [1, 4])
    >>> t.label, t.positions.tolist(), round(t.value("blocks.0.attn.hook_pattern", "sum_sq", 1), 12)
    ('best', [1, 4], 1.0)
    """

    prediction: Prediction
    label: str

    def __getitem__(self, tap: str) -> TapPrediction:
        return self.prediction[tap]

    def __iter__(self) -> Iterator[str]:
        return iter(self.prediction)

    def __len__(self) -> int:
        return len(self.prediction)

    @property
    def spec(self) -> ModelSpec:
        return self.prediction.spec

    @property
    def positions(self) -> np.ndarray:
        """The 1-based query positions every record is evaluated at (sorted, int64)."""
        return self.prediction.positions

    @property
    def taps(self) -> list[str]:
        return self.prediction.taps

    @property
    def n_layers(self) -> int:
        """Layers with at least one tap in the table."""
        return 1 + max((layer_of(t) for t in self.taps), default=0)

    def value(self, tap: str, quantity: str, position: int) -> float:
        """One number: ``quantity`` of ``tap`` at the 1-based ``position``."""
        return self[tap].at(position)[quantity]

    def with_values(self, label: str, changes: Mapping[str, Mapping[str, np.ndarray]]) -> "TheoryTable":
        """A copy labelled ``label`` whose records carry other numbers where ``changes``
        says (tap -> quantity -> array over the positions); levels, errors, assumptions
        and tolerances stay: a formula mutant."""
        records = tuple(r.with_values({**r.values, **changes[r.tap]}) if r.tap in changes else r
                        for r in self.prediction.records)
        return TheoryTable(dataclasses.replace(self.prediction, records=records, kernels={}), label)


def theory_table(spec: ModelSpec, positions, level: str = "best", *, progress=None) -> TheoryTable:
    """Theory's prediction (`theory.predict`) for every tap of every layer of ``spec`` at
    ``positions`` (1-based), labelled by ``level``.

    The first-layer attention taps come from the first-layer derivation, every other tap -- the
    MLP of layer 0, every tap of the deeper layers -- from the depth recursion, each with
    the level, assumptions and tolerance theory declares. ``progress`` (a callable taking
    one line) hears the depth recursion layer by layer.
    """
    if level not in ("best", "leading"):
        raise ValueError(f"level must be 'best' or 'leading', got {level!r}")
    pos = check_positions(positions, int(spec.seq_len))
    return TheoryTable(predict(spec, pos, level, progress=progress), level)


def relative_tolerance(table: TheoryTable, tap: str) -> float:
    """The relative error a check of ``tap`` allows: 0 for an exact result, else the
    tolerance theory declares for it (``table[tap].tolerance``)."""
    record = table[tap]
    if record.level == Level.EXACT:
        return 0.0
    if record.tolerance is None:
        raise ValueError(f"theory declares no tolerance for {tap} ({record.level.value}); verify cannot judge it")
    return float(record.tolerance)


# tau_bar^2, the mean logit variance of the first layer: theory's, re-exported.
logit_variance = layer_one_logit_variance


__all__ = ["TheoryTable", "theory_table", "relative_tolerance", "logit_variance", "quantities_of", "suffix_of",
           "layer_of", "needs_depth", "QUANTITIES", "STANDARD_ERRORS"]
