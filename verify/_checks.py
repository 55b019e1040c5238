"""Checks: a theory number against a simulated statistic, judged by the theory's level.

Exact results are judged by ``z = (theory - sim) / se`` with ``se`` the Monte Carlo
standard error across independent networks (simulate's per-network errors) and a
two-sided normal p-value. Approximate results are allowed their declared relative error
``rel_tol |theory|`` first, and only the excess beyond it is judged the same way. Holm's
step-down procedure over every check of the run keeps the probability that a correct
theory fails *any* check at most ``alpha``, under any dependence between the checks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Iterable, Iterator, Sequence

from statistics import NormalDist

import numpy as np

from theory import Level

from ._theory import STANDARD_ERRORS, TheoryTable, quantities_of, relative_tolerance

DEFAULT_ALPHA = 0.01
# A statistic whose standard error is 0, undefined, or below float32 resolution of its
# natural scale (sum_sq at m = 1; the LayerNorm output's mean, and its variance when
# eps = 0, are fixed per network up to rounding) is deterministic: comparing it by a
# z-score would test rounding, not theory. It is compared to DETERMINISTIC_RTOL instead.
DETERMINISTIC_SE = 1e-6  # relative to the natural scale
DETERMINISTIC_RTOL = 1e-5


@dataclass(frozen=True)
class Comparison:
    """One theory number beside one simulated statistic (not yet judged)."""

    tap: str
    position: int
    quantity: str
    level: str
    theory: float
    sim: float
    se: float
    z: float
    assumption: str
    scale: float = math.nan  # natural scale: sd for a mean, the value itself otherwise
    units: int = 0  # independent units behind the standard error (0: unknown, normal law)

    @property
    def rel_error(self) -> float:
        """``theory / sim - 1``: how far the theory is from the simulation (same sign as z)."""
        return (self.theory - self.sim) / self.sim if self.sim else math.nan


@dataclass(frozen=True)
class Check:
    """A judged comparison.

    ``tolerance`` is the absolute ``|sim - theory|`` the check allowed:
    ``rel_tol |theory| + critical_z * se`` (``rel_tol`` = 0 for exact results,
    ``critical_z`` is Holm's threshold at the check's rank), or ``rel_tol * scale`` for
    deterministic statistics (``method``). ``assumption`` names what the step assumes
    (what a failure calls into question).
    """

    tap: str
    position: int
    quantity: str
    level: str
    theory: float
    sim: float
    se: float
    z: float
    p_value: float
    critical_z: float
    rel_tol: float
    tolerance: float
    passed: bool
    assumption: str
    method: str = "holm"  # "holm" (z-test, Holm-adjusted) or "deterministic" (rounding)

    @property
    def exact(self) -> bool:
        return self.level == Level.EXACT.value

    def to_dict(self) -> dict:
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
        return out

    def describe(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return (
            f"{verdict} {self.tap} m={self.position} {self.quantity} [{self.level}]: theory {self.theory:.6g}, "
            f"sim {self.sim:.6g} ± {self.se:.2g} (z = {self.z:+.2f}, allowed ±{self.tolerance:.2g})"
            + ("" if self.passed else f"; assumes: {self.assumption}")
        )


@dataclass(frozen=True)
class CheckSet(Sequence[Check]):
    """The judged checks of one run (a sequence of `Check`) and the family-wise ``alpha``."""

    checks: tuple[Check, ...]
    alpha: float
    label: str = "best"

    def __getitem__(self, i):
        return self.checks[i]

    def __len__(self) -> int:
        return len(self.checks)

    def __iter__(self) -> Iterator[Check]:
        return iter(self.checks)

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def exact_passed(self) -> bool:
        return all(c.passed for c in self.checks if c.exact)

    def for_tap(self, tap: str) -> list[Check]:
        return [c for c in self.checks if c.tap == tap]

    def by_tap(self) -> dict[str, dict]:
        """Per tap: level, number of checks, failures, largest |z|, verdict."""
        out: dict[str, dict] = {}
        for c in self.checks:
            row = out.setdefault(c.tap, {"level": c.level, "checks": 0, "failed": 0, "max_abs_z": 0.0})
            row["checks"] += 1
            row["failed"] += not c.passed
            if math.isfinite(c.z):
                row["max_abs_z"] = max(row["max_abs_z"], abs(c.z))
        for row in out.values():
            row["verdict"] = "pass" if row["failed"] == 0 else "fail"
        return out

    def to_list(self) -> list[dict]:
        return [c.to_dict() for c in self.checks]


# ------------------------------------------------------------------------------ rows
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
    for tap in table.taps:
        if tap not in simulation:
            continue
        stats = simulation[tap]
        assumption = "; ".join(table.assumptions.get(tap, ()))
        for quantity in quantities_of(tap):
            if quantity not in table.values[tap]:
                continue
            sim_values = getattr(stats, quantity)
            sim_se = getattr(stats, STANDARD_ERRORS[quantity])
            if sim_values is None:
                continue
            for m in wanted:
                i = stats.index(m)
                theory = table.value(tap, quantity, m)
                sim, se = float(sim_values[i]), float(sim_se[i])
                z = (theory - sim) / se if se > 0 and math.isfinite(se) else math.nan
                scale = math.sqrt(max(float(stats.var[i]), 0.0)) if quantity == "mean" else max(abs(theory), abs(sim))
                rows.append(Comparison(tap, m, quantity, table.levels[tap].value, theory, sim, se, z, assumption, scale,
                                       int(stats.n)))
    return rows


# ------------------------------------------------------------------------------ judging
_NORMAL = NormalDist()
# Below this many independent units the z-score is referred to Student's t (units - 1
# degrees of freedom); above it the two agree to < 1% in the tails verify uses.
T_BELOW = 200


def _t_sf(x: float, df: int) -> float:
    from scipy.stats import t

    return t.sf(x, df)


def _t_isf(p: float, df: int) -> float:
    from scipy.stats import t

    return t.isf(p, df)


def two_sided_p(z: float, units: int = 0) -> float:
    """``P(|T| >= |z|)``: T standard normal, or Student t with ``units - 1`` degrees of
    freedom when fewer than `T_BELOW` units stand behind the standard error (a z-score
    with an estimated SE from a few networks has heavier tails than the normal)."""
    if not math.isfinite(z):
        return math.nan
    if 1 < units < T_BELOW:
        return float(2.0 * _t_sf(abs(z), units - 1))
    return math.erfc(abs(z) / math.sqrt(2.0))


def _critical(p: float, units: int = 0) -> float:
    """The z (or t) exceeded with probability ``p`` (one tail)."""
    if 1 < units < T_BELOW:
        return float(_t_isf(p, units - 1))
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


def _deterministic(row: Comparison) -> bool:
    if not (row.se > 0 and math.isfinite(row.se)):
        return True
    return math.isfinite(row.scale) and row.se <= DETERMINISTIC_SE * row.scale


def judge(rows: Sequence[Comparison], alpha: float = DEFAULT_ALPHA, rel_tols: dict[str, float] | None = None, label: str = "best") -> CheckSet:
    """Judge comparisons with one Holm procedure over every check of the run.

    ``rel_tols`` maps a tap to its declared relative error (0 for exact results). A check
    tests ``H0: |E[sim] - theory| <= rel_tol |theory|`` with the excess
    ``z = max(0, |sim - theory| - rel_tol |theory|) / se``; for an exact result that is the
    usual two-sided z-test. Holm's procedure over all of them keeps the probability that a
    correct theory fails any check of the run at most ``alpha``. A check passes when its
    hypothesis is not rejected, i.e. (up to Holm's step-down order) when
    ``|sim - theory| <= rel_tol |theory| + critical_z se``, the ``tolerance`` recorded.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    rel_tols = rel_tols or {}
    tested = [i for i, r in enumerate(rows) if not _deterministic(r)]
    rts = {i: (0.0 if rows[i].level == Level.EXACT.value else float(rel_tols.get(rows[i].tap, 0.0))) for i in tested}
    excess = {i: max(0.0, abs(rows[i].sim - rows[i].theory) - rts[i] * abs(rows[i].theory)) / rows[i].se for i in tested}
    p_values = [two_sided_p(excess[i], rows[i].units) for i in tested]
    rejected, thresholds = holm(p_values, alpha) if tested else (np.zeros(0, bool), np.zeros(0))
    checks: list[Check | None] = [None] * len(rows)
    for j, i in enumerate(tested):
        r = rows[i]
        cz = _critical(thresholds[j] / 2.0, r.units)
        tol = rts[i] * abs(r.theory) + cz * r.se
        checks[i] = Check(r.tap, r.position, r.quantity, r.level, r.theory, r.sim, r.se, r.z, p_values[j], cz, rts[i],
                          tol, not bool(rejected[j]), r.assumption, "holm")
    for i, r in enumerate(rows):
        if checks[i] is None:  # deterministic statistic: equal up to float32 rounding
            scale = r.scale if math.isfinite(r.scale) and r.scale > 0 else max(abs(r.theory), abs(r.sim), 1e-30)
            tol = DETERMINISTIC_RTOL * scale
            checks[i] = Check(r.tap, r.position, r.quantity, r.level, r.theory, r.sim, r.se, math.nan, math.nan, math.nan,
                              DETERMINISTIC_RTOL, tol, abs(r.sim - r.theory) <= tol, r.assumption, "deterministic")
    return CheckSet(tuple(checks), alpha, label)


def compare(table: TheoryTable, simulation, *, alpha: float = DEFAULT_ALPHA, positions: Iterable[int] | None = None) -> CheckSet:
    """Judge a theory table against a simulation (see the module docstring for the rules).

    >>> import simulate
    >>> from theory import ModelSpec
    >>> from verify import theory_table
    >>> spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, ln_eps=0.0, sigma_embed=1.0)
    >>> sim = simulate.run(spec, taps=lambda t: t.startswith("blocks.0."), samples=200, seed=0, device="cpu", progress=False)
    >>> compare(theory_table(spec, [1, 2, 4]), sim).passed
    True
    """
    rows = comparisons(table, simulation, positions)
    rel_tols = {tap: relative_tolerance(table, tap) for tap in table.taps}
    return judge(rows, alpha, rel_tols, table.label)
