"""Distribution checks: the whole law of one coordinate, not only its moments.

For the taps whose one-coordinate law `theory.law` gives exactly (the embedding, the
LayerNorm output, q/k/v, the logits), the simulation keeps a reservoir: one value per
network at a uniformly drawn coordinate, so a reservoir column holds independent draws of
that law. A Kolmogorov-Smirnov test compares them with the law's cdf; Holm's procedure
over the distribution checks of a run bounds their family-wise error by ``alpha``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

from ._checks import holm

LAW_TAPS = (
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_attn_scores",
)
RESERVOIR_MAX = 2000  # draws per tap and position kept for the distribution checks


@dataclass(frozen=True)
class DistributionCheck:
    """A Kolmogorov-Smirnov test of the reservoir of one tap at one position."""

    tap: str
    position: int
    n: int
    ks_statistic: float
    p_value: float
    threshold: float  # Holm's level for this p-value
    passed: bool
    law: str  # the law's description (what the test assumes)

    def to_dict(self) -> dict:
        return asdict(self)


def _law(spec, tap: str, position: int):
    from theory import law

    try:
        return law(spec, tap, position)
    except NotImplementedError:
        return None


def distribution_checks(spec, simulation, position: int, alpha: float = 0.01) -> tuple[list[DistributionCheck], dict]:
    """KS tests of every law tap's reservoir at ``position`` against `theory.law`.

    Returns the checks and the laws used (by tap), for the figure.
    """
    rows, laws = [], {}
    for tap in LAW_TAPS:
        if tap not in simulation:
            continue
        stats = simulation[tap]
        if stats.reservoir is None:
            continue
        column = np.asarray(stats.reservoir[:, stats.index(position)], dtype=float)
        column = column[np.isfinite(column)]
        law = _law(spec, tap, position)
        if law is None or column.size < 2:
            continue
        result = _st.kstest(column, law.cdf)
        rows.append((tap, column.size, float(result.statistic), float(result.pvalue), law.description))
        laws[tap] = law
    rejected, thresholds = holm([r[3] for r in rows], alpha) if rows else (np.zeros(0, bool), np.zeros(0))
    checks = [
        DistributionCheck(tap, int(position), n, d, p, float(thresholds[i]), not bool(rejected[i]), description)
        for i, (tap, n, d, p, description) in enumerate(rows)
    ]
    return checks, laws


def reservoir_size(samples: int) -> int:
    return int(min(samples, RESERVOIR_MAX))


def _grid(law, column: np.ndarray, points: int = 400) -> np.ndarray:
    lo, hi = np.quantile(column, [0.001, 0.999])
    lo_s, hi_s = law.support()
    lo, hi = max(lo, lo_s), min(hi, hi_s)
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        sd = float(np.std(column)) or 1.0
        lo, hi = -4 * sd, 4 * sd
    return np.linspace(lo, hi, points)
