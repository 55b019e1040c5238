"""The main job: derive, simulate, compare, calibrate -- and the `Report` it produces.

The theory checked is the layer-1 derivation (`theory.derive`) for the attention taps of
layer 1 and the depth recursion (`theory.depth.predict`) for every other tap of every
layer; `Report.depth_accuracy` sums the checks up per layer and `Report.depth_findings`
says where the error grows with depth and which assumptions the deeper layers add.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from theory import ModelSpec, derive

from ._calibration import CALIBRATION_POSITIONS, CALIBRATION_SPEC, Calibration, calibrate
from ._checks import DEFAULT_ALPHA, CheckSet, Comparison, comparisons, compare, critical_z
from ._depth import depth_accuracy, depth_findings
from ._distributions import LAW_TAPS, DistributionCheck, distribution_checks, reservoir_size
from ._mutants import MUTANTS, expected_shift
from ._theory import TheoryTable, layer_of, logit_variance, needs_depth, suffix_of, theory_table

CALIBRATION_SEED_OFFSET = 1_000_003  # calibration seeds: seed + offset + run
PARALLEL_MIN_WORK = 20_000  # calibration networks (runs x samples) worth a second process

# The main job's spec: three full pre-LN blocks (attention and GELU MLP) at width 64, GPT-2
# small's initialisation (sigma 0.02, ln_eps 1e-5) except sigma_q = sigma_k = 0.09, the
# calibration spec's, for a logit variance of ~0.26 where the softmax is visibly non-uniform
# (at sigma 0.02 and width 64 the logits would be ~100x smaller than GPT-2's).
DEFAULT_SPEC = ModelSpec(d_model=64, n_heads=4, n_layers=3, seq_len=64, sigma_q=0.09, sigma_k=0.09)
# `--preset depth`: GPT-2 small's initialisation, six blocks at width 256, T = 256.
DEPTH_SPEC = ModelSpec(d_model=256, n_heads=4, n_layers=6, seq_len=256)
# GPT-2 small's width and initialisation, one attention layer, 256 positions (the layer-1 job).
LAYER1_SPEC = ModelSpec(n_layers=1, seq_len=256, attn_only=True)


@dataclass(frozen=True)
class Preset:
    """How much work a run does. The calibration runs at the main sample size, capped at
    ``calibration_samples`` when given (power is measured at the run's sample size, up to
    that cap)."""

    name: str
    samples: int
    calibration_runs: int
    per_octave: int  # recorded positions per doubling of m (plus 1 and T)
    calibration_samples: int | None = None
    description: str = ""
    spec: ModelSpec | None = None  # the spec a run without --spec uses (None: DEFAULT_SPEC)


PRESETS: dict[str, Preset] = {
    "quick": Preset("quick", 96, 60, 2, description="a smoke test"),
    "default": Preset("default", 2000, 300, 2, calibration_samples=1000,
                      description="the main job: 3 layers with MLP at width 64, T = 64; ~2-3 min on 2 CPU cores"),
    "depth": Preset("depth", 600, 100, 2, calibration_samples=1000, spec=DEPTH_SPEC,
                    description="6 layers with MLP at width 256, T = 256 (GPT-2 init); a GPU or a long CPU run"),
    "paper": Preset("paper", 4000, 1000, 4, description="tight error bars for figures; meant for a GPU or a long run"),
}


def positions_for(seq_len: int, per_octave: int = 2) -> list[int]:
    """Log-spaced query positions 1..seq_len (``per_octave`` per doubling), always with 1 and T.

    >>> positions_for(16)
    [1, 2, 3, 4, 6, 8, 11, 16]
    """
    seq_len = int(seq_len)
    steps = int(math.floor(per_octave * math.log2(seq_len))) if seq_len > 1 else 0
    pos = {int(round(2 ** (k / per_octave))) for k in range(steps + 1)} | {1, seq_len}
    return sorted(p for p in pos if 1 <= p <= seq_len)


@dataclass
class Report:
    """Everything one `run` produced; `verify.write_report` turns it into files."""

    spec: ModelSpec
    preset: str
    samples: int
    seed: int
    alpha: float
    positions: list[int]
    checks: CheckSet
    best: TheoryTable
    leading: TheoryTable
    leading_rows: list[Comparison]
    simulation: Any  # simulate.SimulationResult
    mutants: dict[str, dict]
    calibration: Calibration | None
    timings: dict[str, float] = field(default_factory=dict)
    command: str = ""
    distributions: list[DistributionCheck] = field(default_factory=list)
    laws: dict = field(default_factory=dict)  # tap -> theory.Law used by the distribution checks

    @property
    def passed(self) -> bool:
        """Every moment check and every distribution check passed."""
        return self.checks.passed and all(d.passed for d in self.distributions)

    @property
    def exact_passed(self) -> bool:
        return self.checks.exact_passed and all(d.passed for d in self.distributions)

    @property
    def logit_variance(self) -> float:
        ln = self.best.values.get("blocks.0.ln1.hook_normalized", {}).get("var")
        return logit_variance(self.spec, float(ln[0]) if ln is not None else None)

    def best_rel_error(self, tap: str, position: int, quantity: str = "var") -> float:
        """(theory - sim)/sim of the best level's check at ``(tap, position, quantity)``."""
        for c in self.checks:
            if c.tap == tap and c.position == position and c.quantity == quantity and c.sim:
                return (c.theory - c.sim) / c.sim
        return math.nan

    @property
    def layers(self) -> int:
        """Layers the checks cover."""
        return self.best.n_layers

    def depth_accuracy(self) -> list[dict]:
        """Per layer and tap kind: largest |theory/sim - 1| over positions, its z and SE,
        largest |z|, declared tolerance, failures, and the leading order's largest error
        (`verify._depth.depth_accuracy`)."""
        return depth_accuracy(self.checks, self.leading_rows, self.best)

    def depth_findings(self) -> list[dict]:
        """For each main tap kind: does the error grow with depth, and which assumptions
        the deeper layer adds (`verify._depth.depth_findings`)."""
        return depth_findings(self.depth_accuracy())

    def leading_deviations(self) -> list[dict]:
        """The paper's leading order against the simulation, row by row, with a flag
        ``significant`` (|z| above the Bonferroni critical value at ``alpha``)."""
        crit = critical_z(self.alpha, len(self.leading_rows))
        out = []
        for r in self.leading_rows:
            finite = math.isfinite(r.z)
            out.append({
                "tap": r.tap, "position": r.position, "quantity": r.quantity, "theory": r.theory, "sim": r.sim,
                "se": r.se, "z": r.z if finite else None,
                "rel_error": r.rel_error if math.isfinite(r.rel_error) else None,
                "significant": bool(finite and abs(r.z) > crit),
            })
        return out

    def leading_summary(self, taps=("blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid",
                                    "blocks.0.attn.hook_pattern", "blocks.0.ln1.hook_normalized",
                                    "blocks.0.attn.hook_q", "blocks.0.attn.hook_attn_scores")) -> list[dict]:
        """Per tap: the leading order's relative error at the last position and its largest
        significant relative error over positions (variances; sum_sq for the pattern)."""
        rows = [r for r in self.leading_deviations() if r["quantity"] in ("var", "sum_sq") and r["rel_error"] is not None]
        out = []
        last = max(self.positions)
        for tap in taps:
            mine = [r for r in rows if r["tap"] == tap]
            if not mine:
                continue
            at_last = next((r for r in mine if r["position"] == last), mine[-1])
            worst = max(mine, key=lambda r: abs(r["rel_error"]))
            significant = [r for r in mine if r["significant"]]
            out.append({
                "tap": tap, "quantity": at_last["quantity"], "position": at_last["position"],
                "leading": at_last["theory"], "sim": at_last["sim"], "se": at_last["se"],
                "rel_error": at_last["rel_error"], "z": at_last["z"],
                "worst_position": worst["position"], "worst_rel_error": worst["rel_error"],
                "significant_positions": [r["position"] for r in significant],
            })
        return out


def _stage(message: str, progress: bool) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def run(
    spec: ModelSpec | None = None,
    preset: str = "default",
    samples: int | None = None,
    seed: int = 0,
    *,
    alpha: float = DEFAULT_ALPHA,
    calibration: bool = True,
    calibration_runs: int | None = None,
    positions=None,
    device: str = "auto",
    progress: bool = False,
    parallel: bool | None = None,
    threads: int | None = 1,
    command: str = "",
) -> Report:
    """The main job: the theory of every tap of every layer of ``spec`` at both levels
    (layer-1 attention from `theory.derive`, the rest from `theory.depth.predict`),
    simulate it, judge every check, compare the paper's leading order, apply the formula
    mutants to the same simulation, and calibrate the checks (small spec, many seeds).

    Defaults: the preset's spec, else `DEFAULT_SPEC` (three blocks with MLP at width 64,
    T = 64), the ``"default"`` preset, seed 0. With ``parallel`` the calibration
    runs in a second process while the main simulation runs (both single-threaded);
    ``None`` does so when the calibration is large enough to pay for the process.
    ``threads`` is torch's thread count for the main simulation (None: torch's default).
    One thread is the robust default on a small shared CPU: a team of two stalls whenever
    another process holds a core (measured ~10x slower); on an idle machine, or with the
    calibration off, more threads are ~1.5x faster.
    """
    import simulate
    from theory._domain import check_domain, check_structure

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    p = PRESETS[preset]
    spec = spec or p.spec or DEFAULT_SPEC
    if spec.is_symbolic:
        raise ValueError("verify needs a numeric spec (every field a number)")
    # theory's one domain check, at both levels, before any simulation (d_model = 2 once cost 41 s first)
    check_domain(spec, evaluate=True, level="best")
    check_structure(spec)  # derive runs too: it refuses sigma_embed = 0
    samples = p.samples if samples is None else samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    simulate.resolve_device(device)  # a bad device is an input error: say so before any work
    pos = list(positions) if positions is not None else positions_for(int(spec.seq_len), p.per_octave)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    _stage("verify: deriving layer 1 (sympy) ...", progress)
    derivation = derive(spec)
    depth_best = depth_leading = None
    if needs_depth(spec):
        from theory.depth import predict

        _stage(f"verify: depth recursion over {spec.n_layers} layer(s), T = {spec.seq_len} ...", progress)
        say = (lambda line: _stage("  " + line, progress)) if progress else None
        depth_best = predict(spec, "best", progress=say)
        depth_leading = predict(spec, "leading")
    best = theory_table(spec, pos, "best", derivation, depth_best)
    leading = theory_table(spec, pos, "leading", derivation, depth_leading)
    timings["theory_s"] = time.perf_counter() - t

    # The calibration (many small single-threaded runs) goes to a second process while the
    # main simulation runs here, single-threaded too: both cores busy, and no OpenMP team
    # to stall when another process holds a core (which slows torch's 2-thread team ~10x).
    runs = p.calibration_runs if calibration_runs is None else calibration_runs
    # At the main sample size, at most the preset's calibration size (runs x samples is the cost).
    cal_samples = min(p.calibration_samples, samples) if p.calibration_samples else samples
    cal_kwargs = dict(runs=runs, samples=cal_samples, alpha=alpha, seed=seed + CALIBRATION_SEED_OFFSET, device="cpu")
    if parallel is None:  # a second process costs a few seconds of imports: only for real work
        parallel = runs * cal_samples >= PARALLEL_MIN_WORK
    pool = future = None
    if calibration and parallel:
        # Derived here (sympy is warm), so that the worker only imports and simulates.
        cal_kwargs["table"] = theory_table(CALIBRATION_SPEC, CALIBRATION_POSITIONS)
        try:
            pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            future = pool.submit(calibrate, **cal_kwargs)
            _stage(f"verify: calibrating in a second process ({runs} runs x {cal_samples} networks, small spec)", progress)
        except (OSError, RuntimeError):  # no subprocesses here: calibrate afterwards
            pool = future = None
    t_cal = time.perf_counter()

    t = time.perf_counter()
    _stage(f"verify: simulating {samples} networks (d_model={spec.d_model}, T={spec.seq_len}, seed {seed}) ...", progress)
    try:
        sim = simulate.run(spec, taps=best.taps, samples=samples, seed=seed, positions=pos, device=device,
                           progress=progress, threads=threads, reservoir=reservoir_size(samples))
    except BaseException:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        raise
    timings["simulation_s"] = time.perf_counter() - t

    # One family-wise error for the whole run: alpha is split between the moment checks and
    # the distribution checks in proportion to their numbers (Bonferroni across the two
    # families, Holm within each), so a correct theory fails anything with probability <= alpha.
    n_laws = sum(1 for tap in LAW_TAPS if tap in sim and sim[tap].reservoir is not None)
    n_moments = len(comparisons(best, sim))
    alpha_laws = alpha * n_laws / (n_laws + n_moments) if n_laws else 0.0
    checks = compare(best, sim, alpha=alpha - alpha_laws)
    t = time.perf_counter()
    distributions, laws = distribution_checks(spec, sim, max(pos), alpha_laws) if n_laws else ([], {})
    timings["distributions_s"] = time.perf_counter() - t
    leading_rows = comparisons(leading, sim)
    mutants = {}
    for name, mutate in MUTANTS.items():
        mt = mutate(best)
        judged = compare(mt, sim, alpha=alpha)
        mutants[name] = {
            "detected": not judged.passed,
            "failed_checks": len(judged.failed),
            "max_expected_shift_se": expected_shift(best, mt, checks),
        }

    cal = None
    if calibration:
        if future is not None:
            _stage("verify: waiting for the calibration ...", progress)
            try:
                cal = future.result()
            finally:
                pool.shutdown()
        else:
            _stage(f"verify: calibrating ({runs} runs x {cal_samples} networks, small spec) ...", progress)
            cal = calibrate(**cal_kwargs, progress=progress)
        timings["calibration_s"] = time.perf_counter() - t_cal
    timings["total_s"] = time.perf_counter() - t_all
    return Report(spec=spec, preset=preset, samples=samples, seed=seed, alpha=alpha, positions=pos, checks=checks,
                  best=best, leading=leading, leading_rows=leading_rows, simulation=sim, mutants=mutants,
                  calibration=cal, timings=timings, command=command, distributions=distributions, laws=laws)
