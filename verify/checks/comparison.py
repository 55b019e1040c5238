"""A comparison: one theory number beside one simulated statistic, not yet judged.

`comparisons` pairs every number of a `TheoryTable` with the statistic of the same tap,
quantity and position of a `simulate.SimulationResult`, with the Monte Carlo standard
error across independent networks and the z-score ``(theory - sim) / se``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from .theory import STANDARD_ERRORS, TheoryTable, quantities_of


@dataclass(frozen=True)
class Comparison:
    """One theory number beside one simulated statistic (not yet judged).

    ``assumption`` names what the theory step assumes (what a failure calls into
    question); ``scale`` is the statistic's natural scale (the sd for a mean, the value
    itself otherwise); ``units`` the independent networks behind ``se`` (0: unknown,
    referred to the normal law).
    """

    tap: str
    position: int
    quantity: str
    level: str
    theory: float
    sim: float
    se: float
    z: float
    assumption: str = ""
    scale: float = math.nan
    units: int = 0

    @property
    def rel_error(self) -> float:
        """``theory / sim - 1``: how far the theory is from the simulation (same sign as z)."""
        return (self.theory - self.sim) / self.sim if self.sim else math.nan


def comparisons(table: TheoryTable, simulation, positions: Iterable[int] | None = None) -> list[Comparison]:
    """Pair every theory number with the simulated statistic of the same tap and position.

    Taps the simulation did not record are skipped; positions default to those both
    sides have. ``simulation`` is a `simulate.SimulationResult`.
    """
    sim_positions = set(int(p) for p in simulation.positions)
    wanted = [int(p) for p in table.positions if int(p) in sim_positions]
    if positions is not None:
        keep = {int(p) for p in positions}
        wanted = [p for p in wanted if p in keep]
    rows = []
    for tap, record in table.items():
        if tap in simulation:
            rows += _rows_of(record, simulation[tap], wanted)
    return rows


def _rows_of(record, stats, positions: list[int]) -> list[Comparison]:
    """The comparisons of one tap: each checked quantity at each position."""
    assumption = "; ".join(record.assumptions)
    rows = []
    for quantity in quantities_of(record.tap):
        if quantity not in record.values:
            continue
        sim_values = getattr(stats, quantity)
        if sim_values is None:
            continue
        sim_se = getattr(stats, STANDARD_ERRORS[quantity])
        for m in positions:
            i = stats.index(m)
            theory = record.at(m)[quantity]
            sim, se = float(sim_values[i]), float(sim_se[i])
            z = (theory - sim) / se if se > 0 and math.isfinite(se) else math.nan
            scale = math.sqrt(max(float(stats.var[i]), 0.0)) if quantity == "mean" else max(abs(theory), abs(sim))
            rows.append(Comparison(tap=record.tap, position=m, quantity=quantity, level=record.level.value,
                                   theory=theory, sim=sim, se=se, z=z, assumption=assumption, scale=scale,
                                   units=int(stats.n)))
    return rows


__all__ = ["Comparison", "comparisons"]
