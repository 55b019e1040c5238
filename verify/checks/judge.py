"""Judging: a comparison becomes a `Check` with a `Verdict`, by the theory's level.

Exact results are judged by ``z = (theory - sim) / se`` with ``se`` the Monte Carlo
standard error across independent networks (simulate's per-network errors) and a
two-sided p-value. Approximate results are allowed their declared relative error
``rel_tol |theory|`` first, and only the excess beyond it is judged the same way. Holm's
step-down procedure over every check of the run keeps the probability that a correct
theory fails *any* check at most ``alpha``, under any dependence between the checks.

`Verdict` is the one outcome type of every test verify makes: the moment checks here and
the distribution (Kolmogorov-Smirnov) checks of `verify.checks.distributions` both carry
one. What differs is what was tested, so each check type holds its own evidence beside
it: a `Check` a `Comparison` and the allowance it was given, a `DistributionCheck` the KS
statistic and the law.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np

from theory import Level
from theory._tables import html_table, pandas_module, text_table

from .comparison import Comparison, comparisons
from .statistics import critical_value, holm, two_sided_p
from .theory import TheoryTable, relative_tolerance

DEFAULT_ALPHA = 0.01
# A statistic whose standard error is 0, undefined, or below float32 resolution of its
# natural scale (sum_sq at m = 1; the LayerNorm output's mean, and its variance when
# eps = 0, are fixed per network up to rounding) is deterministic: comparing it by a
# z-score would test rounding, not theory. It is compared to DETERMINISTIC_RTOL instead.
DETERMINISTIC_SE = 1e-6  # relative to the natural scale
DETERMINISTIC_RTOL = 1e-5


@dataclass(frozen=True)
class Verdict:
    """The outcome of one test of a run (a moment check or a distribution check).

    ``p_value`` of the test (NaN when nothing was tested: a deterministic statistic),
    ``threshold`` the Holm level it was compared with (NaN likewise), ``method``
    ``"holm"`` (a test within Holm's procedure) or ``"deterministic"`` (equality up to
    float32 rounding), ``passed`` whether the hypothesis that the theory holds stands.
    """

    passed: bool
    p_value: float = math.nan
    threshold: float = math.nan
    method: str = "holm"


def _from(part: str, name: str) -> property:
    return property(lambda self: getattr(getattr(self, part), name), doc=f"``{part}.{name}``")


@dataclass(frozen=True, kw_only=True)
class Check:
    """A judged comparison: the `Comparison`, its `Verdict` and the allowance it was given.

    ``tolerance`` is the absolute ``|sim - theory|`` the check allowed:
    ``rel_tol |theory| + critical_z * se`` (``rel_tol`` = 0 for exact results,
    ``critical_z`` Holm's critical value at the check's rank), or ``rel_tol * scale``
    for deterministic statistics (``method``). The comparison's fields (``tap``,
    ``position``, ``quantity``, ``level``, ``theory``, ``sim``, ``se``, ``assumption``,
    ``rel_error``) and the verdict's (``passed``, ``p_value``, ``method``) read through.
    """

    comparison: Comparison
    verdict: Verdict
    critical_z: float = math.nan
    rel_tol: float = 0.0
    tolerance: float = math.nan

    tap = _from("comparison", "tap")
    position = _from("comparison", "position")
    quantity = _from("comparison", "quantity")
    level = _from("comparison", "level")
    theory = _from("comparison", "theory")
    sim = _from("comparison", "sim")
    se = _from("comparison", "se")
    assumption = _from("comparison", "assumption")
    rel_error = _from("comparison", "rel_error")
    passed = _from("verdict", "passed")
    p_value = _from("verdict", "p_value")
    method = _from("verdict", "method")

    @property
    def z(self) -> float:
        """The comparison's z-score; NaN for a deterministic statistic (nothing was tested)."""
        return math.nan if self.method == "deterministic" else self.comparison.z

    @property
    def judged_z(self) -> float:
        """The statistic Holm's procedure tested, signed like ``z``: the excess of
        ``|theory - sim|`` over the relative tolerance, in standard errors,
        ``sign(z) max(0, |theory - sim| - rel_tol |theory|) / se`` (``z`` itself for exact results)."""
        if not math.isfinite(self.z):
            return math.nan
        excess = max(0.0, abs(self.theory - self.sim) - self.rel_tol * abs(self.theory)) / self.se
        return math.copysign(excess, self.z)

    @property
    def exact(self) -> bool:
        return self.level == Level.EXACT.value

    def to_dict(self) -> dict:
        """The check as results.json holds it (non-finite numbers as None)."""
        out = {name: getattr(self, name) for name in (
            "tap", "position", "quantity", "level", "theory", "sim", "se", "z", "p_value", "critical_z", "rel_tol",
            "tolerance", "passed", "assumption", "method")}
        return {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in out.items()}

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
        """Per tap: level, number of checks, failures, largest ``|z|``, verdict."""
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

    def to_dataframe(self):
        """A pandas DataFrame, one row per check (the columns of `Check.to_dict`)."""
        return pandas_module().DataFrame(self.to_list())

    def _table(self) -> tuple[list[str], list[list]]:
        columns = ["tap", "level", "checks", "failed", "max |z|", "verdict"]
        return columns, [[tap, row["level"], str(row["checks"]), str(row["failed"]), row["max_abs_z"], row["verdict"]]
                         for tap, row in self.by_tap().items()]

    def _caption(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict}: {len(self.checks) - len(self.failed)}/{len(self.checks)} checks passed "
                f"(theory: {self.label}; Holm family-wise alpha {self.alpha:g})")

    def __repr__(self) -> str:
        failed = "".join(f"\n  {c.describe()}" for c in self.failed[:5])
        more = f"\n  ... {len(self.failed) - 5} more failures" if len(self.failed) > 5 else ""
        return f"CheckSet({self._caption()})\n" + text_table(*self._table()) + failed + more

    def _repr_html_(self) -> str:
        return html_table(*self._table(), caption=self._caption())


# ------------------------------------------------------------------------------ judging
def is_deterministic(row: Comparison) -> bool:
    """Whether ``row``'s statistic is fixed per network up to rounding (see `DETERMINISTIC_SE`)."""
    if not (row.se > 0 and math.isfinite(row.se)):
        return True
    return math.isfinite(row.scale) and row.se <= DETERMINISTIC_SE * row.scale


def _tested(rows: Sequence[Comparison], rel_tols: list[float], alpha: float) -> list[Check]:
    """Holm's procedure over the excess z-scores ``max(0, |sim - theory| - rel_tol |theory|) / se``."""
    excess = [max(0.0, abs(r.sim - r.theory) - rt * abs(r.theory)) / r.se for r, rt in zip(rows, rel_tols)]
    p_values = [two_sided_p(x, r.units) for x, r in zip(excess, rows)]
    rejected, thresholds = holm(p_values, alpha) if rows else (np.zeros(0, bool), np.zeros(0))
    checks = []
    for r, rt, p, reject, level in zip(rows, rel_tols, p_values, rejected, thresholds):
        cz = critical_value(level / 2.0, r.units)
        checks.append(Check(comparison=r, verdict=Verdict(not bool(reject), p, float(level), "holm"),
                            critical_z=cz, rel_tol=rt, tolerance=rt * abs(r.theory) + cz * r.se))
    return checks


def _deterministic(row: Comparison) -> Check:
    """Equality up to float32 rounding: ``|sim - theory| <= DETERMINISTIC_RTOL * scale``."""
    scale = row.scale if math.isfinite(row.scale) and row.scale > 0 else max(abs(row.theory), abs(row.sim), 1e-30)
    tol = DETERMINISTIC_RTOL * scale
    return Check(comparison=row, verdict=Verdict(abs(row.sim - row.theory) <= tol, method="deterministic"),
                 rel_tol=DETERMINISTIC_RTOL, tolerance=tol)


def judge(rows: Sequence[Comparison], alpha: float = DEFAULT_ALPHA, rel_tols: dict[str, float] | None = None,
          label: str = "best") -> CheckSet:
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
    tested = [i for i, r in enumerate(rows) if not is_deterministic(r)]
    allowed = [0.0 if rows[i].level == Level.EXACT.value else float(rel_tols.get(rows[i].tap, 0.0)) for i in tested]
    checks: list[Check | None] = [None] * len(rows)
    for i, check in zip(tested, _tested([rows[i] for i in tested], allowed, alpha)):
        checks[i] = check
    checks = [c if c is not None else _deterministic(r) for c, r in zip(checks, rows)]
    return CheckSet(tuple(checks), alpha, label)


def compare(table: TheoryTable, simulation, *, alpha: float = DEFAULT_ALPHA,
            positions: Iterable[int] | None = None) -> CheckSet:
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


__all__ = ["DEFAULT_ALPHA", "Verdict", "Check", "CheckSet", "judge", "compare", "is_deterministic"]
