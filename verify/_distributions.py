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

from theory.taps import PRE_SOFTMAX_TAPS

from ._checks import holm

LAW_TAPS = PRE_SOFTMAX_TAPS  # the taps theory.law covers
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
    # The paper's Gaussian picture for the same draws: KS against N(0, Var of the law),
    # the Kolmogorov distance D = sup |F_law - Phi| between the two laws, and
    # n_detect = (1.36/D)^2, the draws at which a 5% KS test against the Gaussian
    # rejects about half the time.
    gaussian_p_value: float = math.nan
    gaussian_distance: float = math.nan
    n_detect: float = math.nan

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
        gauss = _st.norm(loc=float(law.mean()), scale=math.sqrt(float(law.var())))
        gaussian_p = float(_st.kstest(column, gauss.cdf).pvalue)
        distance = gaussian_distance(law)
        rows.append((tap, column.size, float(result.statistic), float(result.pvalue), law.description,
                     gaussian_p, distance))
        laws[tap] = law
    rejected, thresholds = holm([r[3] for r in rows], alpha) if rows else (np.zeros(0, bool), np.zeros(0))
    checks = [
        DistributionCheck(tap, int(position), n, d, p, float(thresholds[i]), not bool(rejected[i]), description,
                          gp, dist, (1.36 / dist) ** 2 if dist > 0 else math.inf)
        for i, (tap, n, d, p, description, gp, dist) in enumerate(rows)
    ]
    return checks, laws


def gaussian_distance(law, points: int = 801) -> float:
    """``sup |F_law - Phi|`` against the Gaussian of the law's mean and variance (0 if Gaussian)."""
    sd = math.sqrt(float(law.var()))
    if sd == 0:
        return 0.0
    lo, hi = law.support()
    x = np.linspace(max(lo, -8 * sd), min(hi, 8 * sd), points)
    return float(np.abs(law.cdf(x) - _st.norm(loc=float(law.mean()), scale=sd).cdf(x)).max())


def law_quantiles(law, probabilities: np.ndarray, column: np.ndarray) -> np.ndarray:
    """Quantiles of ``law`` by inverting its cdf on a fine grid (scipy's generic ppf is slow)."""
    sd = math.sqrt(float(law.var())) or 1.0
    lo, hi = law.support()
    span = max(float(np.max(np.abs(column))) if column.size else 0.0, 10 * sd)
    x = np.linspace(max(lo, -span), min(hi, span), 1001)  # plotting accuracy; the cdf can be costly
    cdf = np.maximum.accumulate(np.asarray(law.cdf(x), dtype=float))
    keep = np.concatenate([[True], np.diff(cdf) > 0])
    return np.interp(probabilities, cdf[keep], x[keep])


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
