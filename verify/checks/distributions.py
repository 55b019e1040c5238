"""Distribution checks: the whole law of one coordinate, not only its moments.

For the taps whose one-coordinate law `theory.law` gives exactly (the embedding, the
LayerNorm output, q/k/v, the logits), the simulation keeps a reservoir: one value per
network at a uniformly drawn coordinate, so a reservoir column holds independent draws of
that law. A Kolmogorov-Smirnov test compares them with the law's cdf; Holm's procedure
over the distribution checks of a run bounds their family-wise error by ``alpha``. Each
check carries the same `Verdict` as the moment checks (`verify.checks.judge`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _st

from theory import law
from theory.taps import PRE_SOFTMAX_TAPS

from .judge import Verdict
from .statistics import holm

LAW_TAPS = PRE_SOFTMAX_TAPS  # the taps theory.law covers
RESERVOIR_MAX = 2000  # draws per tap and position kept for the distribution checks


@dataclass(frozen=True, kw_only=True)
class DistributionCheck:
    """A Kolmogorov-Smirnov test of the reservoir of one tap at one position, and its `Verdict`.

    ``law`` describes the law tested (what the test assumes); ``verdict.threshold`` is
    Holm's level for the p-value over the distribution checks of the run. The paper's
    Gaussian picture for the same draws: ``gaussian_p_value``, the KS p-value against
    N(0, Var of the law); ``gaussian_distance``, the Kolmogorov distance
    ``D = sup |F_law - Phi|`` between the two laws; ``n_detect`` = (1.36/D)^2, the draws at
    which a 5% KS test against the Gaussian rejects about half the time.
    """

    tap: str
    position: int
    n: int
    ks_statistic: float
    law: str
    verdict: Verdict
    gaussian_p_value: float = math.nan
    gaussian_distance: float = math.nan
    n_detect: float = math.nan

    @property
    def passed(self) -> bool:
        return self.verdict.passed

    @property
    def p_value(self) -> float:
        return self.verdict.p_value

    @property
    def threshold(self) -> float:
        return self.verdict.threshold

    def to_dict(self) -> dict:
        """The check as results.json holds it."""
        return {"tap": self.tap, "position": self.position, "n": self.n, "ks_statistic": self.ks_statistic,
                "p_value": self.p_value, "threshold": self.threshold, "passed": self.passed, "law": self.law,
                "gaussian_p_value": self.gaussian_p_value, "gaussian_distance": self.gaussian_distance,
                "n_detect": self.n_detect}


def _law(spec, tap: str, position: int):
    try:
        return law(spec, tap, position)
    except NotImplementedError:
        return None


def distribution_checks(spec, simulation, position: int, alpha: float = 0.01) -> tuple[list[DistributionCheck], dict]:
    """KS tests of every law tap's reservoir at ``position`` against `theory.law`, with
    Holm's procedure over them at ``alpha``.

    Returns the checks and the laws used (by tap), for the figure.
    """
    tests, laws = [], {}
    for tap in LAW_TAPS:
        column = _reservoir(simulation, tap, position)
        law = _law(spec, tap, position) if column is not None else None
        if law is None or column.size < 2:
            continue
        tests.append(_ks_test(tap, int(position), column, law))
        laws[tap] = law
    rejected, thresholds = holm([t["p"] for t in tests], alpha) if tests else (np.zeros(0, bool), np.zeros(0))
    checks = []
    for t, reject, threshold in zip(tests, rejected, thresholds):
        p, distance = t.pop("p"), t["gaussian_distance"]
        checks.append(DistributionCheck(**t, verdict=Verdict(not bool(reject), p, float(threshold), "holm"),
                                        n_detect=(1.36 / distance) ** 2 if distance > 0 else math.inf))
    return checks, laws


def _reservoir(simulation, tap: str, position: int) -> np.ndarray | None:
    """The finite reservoir draws of ``tap`` at ``position`` (None when none were kept)."""
    if tap not in simulation or simulation[tap].reservoir is None:
        return None
    stats = simulation[tap]
    column = np.asarray(stats.reservoir[:, stats.index(position)], dtype=float)
    return column[np.isfinite(column)]


def _ks_test(tap: str, position: int, column: np.ndarray, law) -> dict:
    """The KS test of ``column`` against ``law`` and against the Gaussian of its variance."""
    result = _st.kstest(column, law.cdf)
    gauss = _st.norm(loc=float(law.mean()), scale=math.sqrt(float(law.var())))
    return {"tap": tap, "position": position, "n": column.size, "ks_statistic": float(result.statistic),
            "p": float(result.pvalue), "law": law.description,
            "gaussian_p_value": float(_st.kstest(column, gauss.cdf).pvalue), "gaussian_distance": gaussian_distance(law)}


def gaussian_distance(law, points: int = 801) -> float:
    """``sup |F_law - Phi|`` against the Gaussian of the law's mean and variance (0 if Gaussian)."""
    sd = math.sqrt(float(law.var()))
    if sd == 0:
        return 0.0
    lo, hi = law.support()
    x = np.linspace(max(lo, -8 * sd), min(hi, 8 * sd), points)
    return float(np.abs(law.cdf(x) - _st.norm(loc=float(law.mean()), scale=sd).cdf(x)).max())


def reservoir_size(samples: int) -> int:
    """Reservoir draws to keep per tap and position: one per network, at most `RESERVOIR_MAX`."""
    return int(min(samples, RESERVOIR_MAX))


__all__ = ["LAW_TAPS", "RESERVOIR_MAX", "DistributionCheck", "distribution_checks", "gaussian_distance",
           "reservoir_size"]
