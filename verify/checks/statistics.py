"""The statistics of the checks: p-values, critical values, Holm's procedure, binomial ranges.

A check's z-score ``(theory - sim) / se`` uses a Monte Carlo standard error estimated from
the independent networks of a run. With many networks it is referred to the standard
normal; below `T_BELOW` networks to Student's t with ``units - 1`` degrees of freedom (an
estimated SE from few networks gives heavier tails). Holm's step-down procedure (Holm 1979)
over every check of a run bounds the family-wise error by ``alpha`` under any dependence.
The calibration of verify (`verify.checks.calibration`) judges its counts of false alarms
by binomial ranges and Clopper-Pearson intervals.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Sequence

import numpy as np
from scipy import stats as _st

_NORMAL = NormalDist()
# Below this many independent units the z-score is referred to Student's t (units - 1
# degrees of freedom); above it the two agree to < 1% in the tails verify uses.
T_BELOW = 200


def two_sided_p(z: float, units: int = 0) -> float:
    """``P(|T| >= |z|)``: T standard normal, or Student t with ``units - 1`` degrees of
    freedom when fewer than `T_BELOW` units stand behind the standard error (a z-score
    with an estimated SE from a few networks has heavier tails than the normal)."""
    if not math.isfinite(z):
        return math.nan
    if 1 < units < T_BELOW:
        return float(2.0 * _st.t.sf(abs(z), units - 1))
    return math.erfc(abs(z) / math.sqrt(2.0))


def critical_value(p: float, units: int = 0) -> float:
    """The z (or t, below `T_BELOW` units) exceeded with probability ``p`` (one tail)."""
    if 1 < units < T_BELOW:
        return float(_st.t.isf(p, units - 1))
    return normal_isf(p)


def normal_isf(p: float) -> float:
    """``z`` with ``P(N(0,1) > z) = p``."""
    return -_NORMAL.inv_cdf(p) if 0.0 < p < 1.0 else (math.inf if p <= 0.0 else -math.inf)


def critical_z(alpha: float, tests: int = 1) -> float:
    """The two-sided normal critical value at level ``alpha / tests`` (Bonferroni)."""
    return normal_isf(alpha / (2.0 * max(tests, 1)))


def holm(p_values: Sequence[float], alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Holm's step-down procedure (Holm 1979).

    Returns ``(rejected, thresholds)``: sort the p-values ascending, compare the i-th
    smallest (0-based) with ``alpha / (K - i)``, and reject until the first one that is
    not below its threshold. The family-wise error rate is at most ``alpha`` under any
    dependence. ``thresholds[j]`` is the level that p-value ``j`` was compared with.

    >>> holm([0.001, 0.04, 0.03], 0.05)[0].tolist()
    [True, False, False]
    """
    p = np.asarray(p_values, dtype=float)
    k = len(p)
    order = np.argsort(p, kind="stable")
    thresholds = np.empty(k)
    rejected = np.zeros(k, dtype=bool)
    still = True
    for rank, j in enumerate(order):
        thresholds[j] = alpha / (k - rank)
        if still and p[j] <= thresholds[j]:
            rejected[j] = True
        else:
            still = False
    return rejected, thresholds


# Central probability of the binomial acceptance range of the calibration's counts.
BOUNDS = 0.99


def binomial_range(n: int, p: float, coverage: float = BOUNDS) -> tuple[int, int]:
    """Central ``coverage`` range of Binomial(n, p): counts outside it are surprising."""
    tail = (1.0 - coverage) / 2.0
    return int(_st.binom.ppf(tail, n, p)), int(_st.binom.isf(tail, n, p))


def clopper_pearson(k: int, n: int, coverage: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion k/n."""
    tail = (1.0 - coverage) / 2.0
    lo = 0.0 if k == 0 else float(_st.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(_st.beta.isf(tail, k + 1, n - k))
    return lo, hi


__all__ = ["T_BELOW", "two_sided_p", "critical_value", "normal_isf", "critical_z", "holm", "BOUNDS",
           "binomial_range", "clopper_pearson"]
