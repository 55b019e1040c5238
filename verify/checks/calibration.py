"""Calibration of verify itself: false alarms on exactly known quantities, power on mutants.

A verifier is only as good as its error rates. `calibrate` repeats a small simulation
with many seeds and measures

- the **false-alarm rate** of exact checks on quantities known exactly (embedding,
  LayerNorm, projections, logits): each run contributes one designated check (rotating
  through the family), judged unadjusted at ``alpha_check``; if the standard errors are
  honest, the number of rejections is Binomial(runs, alpha_check), and the count must
  fall inside that law's central 99% range. The rate over *all* those checks (correlated
  within a run, so its interval comes from the spread across runs), the mean and spread
  of their z-scores, and the family-wise rate with Holm at ``alpha`` (at most ``alpha``)
  are reported too;
- the **power**: how often each formula mutant (`verify.MUTANTS`) fails the full check
  family, at the same sample size, next to how often the correct theory does.

The runs use a small spec (GPT-2 initialisation at width 64, 16 positions, logit
variance ~0.26) so that hundreds of them fit in seconds, with one thread each (small
problems run faster without OpenMP's team).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from theory import ModelSpec
from theory.taps import PRE_SOFTMAX_TAPS

from .comparison import Comparison, comparisons
from .judge import DEFAULT_ALPHA, compare, judge
from .mutants import MUTANTS, Mutant
from .statistics import binomial_range, clopper_pearson
from .theory import TheoryTable, theory_table

CALIBRATION_SPEC = ModelSpec(
    d_model=64, n_heads=4, n_layers=1, seq_len=16, attn_only=True, sigma_q=0.09, sigma_k=0.09
)
CALIBRATION_POSITIONS = (1, 2, 4, 8, 16)
# Quantities known exactly whatever the spec: no softmax involved.
KNOWN_TAPS = PRE_SOFTMAX_TAPS
ALPHA_CHECK = 0.05


@dataclass
class Calibration:
    """What `calibrate` measured (see the module docstring); ``to_dict()`` for JSON."""

    spec: ModelSpec
    runs: int
    samples: int
    alpha: float
    alpha_check: float
    positions: tuple[int, ...]
    seeds: tuple[int, int]
    false_alarm: dict = field(default_factory=dict)
    all_known: dict = field(default_factory=dict)
    zscores: dict = field(default_factory=dict)
    family_wise: dict = field(default_factory=dict)
    power: dict = field(default_factory=dict)
    true_theory: dict = field(default_factory=dict)
    wall_time_s: float = 0.0

    @property
    def ok(self) -> bool:
        """False alarms within binomial bounds and family-wise rate not above them."""
        return bool(self.false_alarm.get("within_bounds")) and bool(self.family_wise.get("within_bounds"))

    def to_dict(self) -> dict:
        return {
            "spec": self.spec.to_dict(),
            "runs": self.runs,
            "samples": self.samples,
            "alpha": self.alpha,
            "alpha_check": self.alpha_check,
            "positions": list(self.positions),
            "seeds": list(self.seeds),
            "known_taps": list(KNOWN_TAPS),
            "false_alarm": self.false_alarm,
            "all_known_checks": self.all_known,
            "zscores": self.zscores,
            "family_wise": self.family_wise,
            "true_theory": self.true_theory,
            "power": self.power,
            "wall_time_s": self.wall_time_s,
            "ok": self.ok,
        }


def _known(rows: list[Comparison]) -> list[Comparison]:
    return [r for r in rows if r.tap in KNOWN_TAPS]


@dataclass
class _Tally:
    """What the runs of a calibration count."""

    designated_hits: int = 0
    designated_n: int = 0
    fractions: list[float] = field(default_factory=list)  # per run: share of known checks rejected
    all_hits: int = 0
    all_n: int = 0
    zs: list[float] = field(default_factory=list)
    fwer_hits: int = 0
    true_hits: int = 0
    detected: dict[str, int] = field(default_factory=dict)

    def add(self, run: int, table: TheoryTable, mutant_tables: Mapping[str, TheoryTable], sim, alpha: float,
            alpha_check: float) -> None:
        """Judge one run: its known exact checks (unadjusted and with Holm), the full family, the mutants."""
        known = judge(_known(comparisons(table, sim)), alpha)
        tested = [c for c in known if c.method == "holm"]
        if tested:
            z = np.array([c.z for c in tested])
            self.zs.extend(z.tolist())
            rejected = np.array([c.p_value for c in tested]) < alpha_check  # normal, or t below 200 networks
            self.all_hits += int(rejected.sum())
            self.all_n += len(z)
            self.fractions.append(float(rejected.mean()))
            self.designated_hits += bool(rejected[run % len(z)])  # one designated check per run, rotating
            self.designated_n += 1
        self.fwer_hits += not known.exact_passed
        self.true_hits += not compare(table, sim, alpha=alpha).passed
        for name, mt in mutant_tables.items():
            self.detected[name] += not compare(mt, sim, alpha=alpha).passed


def calibrate(
    spec: ModelSpec | None = None,
    runs: int = 300,
    samples: int = 600,
    *,
    alpha: float = DEFAULT_ALPHA,
    alpha_check: float = ALPHA_CHECK,
    seed: int = 0,
    positions=CALIBRATION_POSITIONS,
    mutants: Mapping[str, Mutant] | None = None,
    device: str = "cpu",
    threads: int | None = 1,
    progress: bool = False,
    table: TheoryTable | None = None,
    dtype: str = "float32",
) -> Calibration:
    """Measure the false-alarm rate and the power of the checks (module docstring).

    Run ``r`` simulates ``samples`` networks with seed ``seed + r``. Every number is
    reproducible from ``(spec, runs, samples, seed)``. ``table`` may pass the spec's
    best-level `TheoryTable` at ``positions`` when it is already derived. ``dtype`` is
    `simulate.run`'s (``"bfloat16"`` calibrates the bf16 matrix products).
    """
    import simulate  # torch is imported only when a simulation is asked for

    if runs < 1 or samples < 2:
        raise ValueError(f"calibration needs runs >= 1 and samples >= 2, got runs={runs}, samples={samples}")
    spec = spec or CALIBRATION_SPEC
    mutants = MUTANTS if mutants is None else mutants
    positions = tuple(int(p) for p in positions if int(p) <= int(spec.seq_len)) or (int(spec.seq_len),)
    t0 = time.perf_counter()
    if table is None:
        table = theory_table(spec, positions)
    elif table.spec != spec or table.positions.tolist() != sorted(set(positions)) or table.label != "best":
        raise ValueError("the theory table passed to calibrate is not the best level of this spec at these positions")
    mutant_tables = {name: mutate(table) for name, mutate in mutants.items()}
    tally = _Tally(detected={name: 0 for name in mutant_tables})
    last = 0.0
    for r in range(runs):
        sim = simulate.run(spec, taps=table.taps, samples=samples, seed=seed + r, positions=positions,
                           device=device, progress=False, threads=threads, dtype=dtype)
        tally.add(r, table, mutant_tables, sim, alpha, alpha_check)
        now = time.perf_counter() - t0
        if progress and (now - last > 0.5 or r + 1 == runs):
            last = now
            print(f"\rcalibration: run {r + 1}/{runs}  {now:5.1f} s", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return Calibration(
        spec=spec, runs=runs, samples=samples, alpha=alpha, alpha_check=alpha_check, positions=positions,
        seeds=(seed, seed + runs - 1), false_alarm=_false_alarm(tally, alpha_check),
        all_known=_all_known(tally, alpha_check), zscores=_zscores(tally.zs),
        family_wise=_family_wise(tally.fwer_hits, runs, alpha), power=_power(tally.detected, runs),
        true_theory=_rate(tally.true_hits, runs, "rejected"), wall_time_s=time.perf_counter() - t0,
    )


def _false_alarm(tally: _Tally, alpha_check: float) -> dict:
    """The designated checks' rejections against Binomial(runs, alpha_check)."""
    n, k = tally.designated_n, tally.designated_hits
    lo, hi = binomial_range(n, alpha_check)
    return {
        "alpha_check": alpha_check,
        "runs": n,
        "rejected": k,
        "rate": k / n if n else math.nan,
        "binomial_range_99": [lo, hi],
        "rate_range_99": [lo / max(n, 1), hi / max(n, 1)],
        "clopper_pearson_95": list(clopper_pearson(k, n)) if n else None,
        "within_bounds": bool(n and lo <= k <= hi),
    }


def _all_known(tally: _Tally, alpha_check: float) -> dict:
    """Every known check: the rejection rate, its 99% interval from the spread across runs."""
    frac = np.array(tally.fractions)
    spread = float(frac.std(ddof=1) / math.sqrt(len(frac))) if len(frac) > 1 else math.nan
    interval = [float(frac.mean() - 2.576 * spread), float(frac.mean() + 2.576 * spread)] if len(frac) > 1 else None
    return {
        "checks": tally.all_n,
        "rejected": tally.all_hits,
        "rate": tally.all_hits / tally.all_n if tally.all_n else math.nan,
        "interval_99": interval,
        "within_bounds": bool(interval and interval[0] <= alpha_check <= interval[1]),
    }


def _zscores(zs: list[float]) -> dict:
    za = np.array(zs)
    return {
        "n": int(za.size),
        "mean": float(za.mean()) if za.size else math.nan,
        "sd": float(za.std(ddof=1)) if za.size > 1 else math.nan,
        "frac_abs_gt_1.96": float(np.mean(np.abs(za) > 1.96)) if za.size else math.nan,
        "frac_abs_gt_2.576": float(np.mean(np.abs(za) > 2.576)) if za.size else math.nan,
    }


def _family_wise(hits: int, runs: int, alpha: float) -> dict:
    """Runs with any known check rejected by Holm: at most the 99% upper bound of Binomial(runs, alpha)."""
    _, hi = binomial_range(runs, alpha)
    return {"alpha": alpha, "runs": runs, "rejected": hits, "rate": hits / runs, "upper_99": hi,
            "clopper_pearson_95": list(clopper_pearson(hits, runs)), "within_bounds": hits <= hi}


def _rate(hits: int, runs: int, key: str) -> dict:
    return {"runs": runs, key: hits, "rate": hits / runs, "clopper_pearson_95": list(clopper_pearson(hits, runs))}


def _power(detected: Mapping[str, int], runs: int) -> dict:
    return {name: _rate(k, runs, "detected") for name, k in detected.items()}


__all__ = ["CALIBRATION_SPEC", "CALIBRATION_POSITIONS", "KNOWN_TAPS", "ALPHA_CHECK", "Calibration", "calibrate"]
