"""The main job: derive, simulate, compare, calibrate -- and the `Report` it produces.

The theory checked is theory's prediction (`theory.predict`): the first-layer derivation for
the attention taps of layer 0 (``blocks.0``) and the depth recursion for every other tap of every layer; `Report.depth_accuracy` sums the checks up per layer and `Report.depth_findings`
says where the error grows with depth and which assumptions the deeper layers add.
`verify.write_report` turns a `Report` into files.
"""

from __future__ import annotations

import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from theory import ModelSpec
from theory._domain import check_domain, check_structure
from theory.positions import check_positions

from .checks.calibration import CALIBRATION_POSITIONS, CALIBRATION_SPEC, Calibration, calibrate
from .checks.comparison import Comparison, comparisons
from .checks.depth import depth_accuracy, depth_findings
from .checks.distributions import LAW_TAPS, DistributionCheck, distribution_checks, reservoir_size
from .checks.judge import DEFAULT_ALPHA, CheckSet, compare
from .checks.mutants import MUTANTS, attention_residual, expected_shift
from .checks.statistics import critical_z
from .checks.theory import TheoryTable, logit_variance, theory_table
from .presets import DEFAULT_SPEC, PRESETS, Preset, positions_for

CALIBRATION_SEED_OFFSET = 1_000_003  # calibration seeds: seed + offset + run
PARALLEL_MIN_WORK = 20_000  # calibration networks (runs x samples) worth a second process


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
        """``tau_bar^2``, the mean logit variance of the first layer."""
        return logit_variance(self.spec)

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
        """Per layer and tap kind: largest ``|theory/sim - 1|`` over positions, its z and SE,
        largest ``|z|``, declared tolerance, failures, and the leading order's largest error
        (`verify.checks.depth.depth_accuracy`)."""
        return depth_accuracy(self.checks, self.leading_rows, self.best)

    def depth_findings(self) -> list[dict]:
        """For each main tap kind: does the error grow with depth, and which assumptions
        the deeper layer adds (`verify.checks.depth.depth_findings`)."""
        return depth_findings(self.depth_accuracy())

    def leading_deviations(self) -> list[dict]:
        """The paper's leading order against the simulation, row by row, with a flag
        ``significant`` (``|z|`` above the Bonferroni critical value at ``alpha``)."""
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

    def summary_taps(self) -> tuple[str, ...]:
        """The first-layer taps the leading-order summary follows, in this order."""
        return ("blocks.0.attn.hook_z", "blocks.0.hook_attn_out", attention_residual(self.spec),
                "blocks.0.attn.hook_pattern", "blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q",
                "blocks.0.attn.hook_attn_scores")

    def leading_summary(self, taps=None) -> list[dict]:
        """Per tap (default `summary_taps`): the leading order's relative error at the last
        position and its largest significant relative error over positions (variances;
        sum_sq for the pattern)."""
        rows = [r for r in self.leading_deviations() if r["quantity"] in ("var", "sum_sq") and r["rel_error"] is not None]
        out = []
        last = max(self.positions)
        for tap in taps or self.summary_taps():
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
    dtype: str = "float32",
) -> Report:
    """The main job: the theory of every tap of every layer of ``spec`` at both levels
    (`theory.predict`: first-layer attention from the derivation, the rest from the depth recursion),
    simulate it, judge every check, compare the paper's leading order, apply the formula
    mutants to the same simulation, and calibrate the checks (small spec, many seeds).

    Defaults: the preset's spec, else `DEFAULT_SPEC` (three blocks with MLP at width 64,
    T = 64), the ``"default"`` preset, seed 0. With ``parallel`` the calibration
    runs in a second process while the main simulation runs (both single-threaded);
    ``None`` does so when the calibration is large enough to pay for the process.
    ``threads`` is torch's thread count for the main simulation (None: torch's default).
    One thread is the robust default on a small shared CPU: a team of two stalls whenever
    another process holds a core (measured ~10x slower); on an idle machine, or with the
    calibration off, more threads are ~1.5x faster. ``dtype`` is `simulate.run`'s, for the
    main simulation and the calibration alike (``"bfloat16"``: the matrix products in bf16).
    """
    import simulate  # deferred: torch is imported only when a simulation is asked for

    spec, p, samples = _checked_inputs(spec, preset, samples, seed, threads, device)
    pos = check_positions(positions, int(spec.seq_len)).tolist() if positions is not None \
        else positions_for(int(spec.seq_len), p.per_octave)
    timings: dict[str, float] = {}
    t_all = time.perf_counter()

    t = time.perf_counter()
    best, leading = _theory(spec, pos, progress)
    timings["theory_s"] = time.perf_counter() - t

    calibrator = _Calibrator(p, samples, seed, alpha, calibration_runs, progress, dtype) if calibration else None
    if calibrator is not None:
        calibrator.start(parallel)
    t = time.perf_counter()
    _stage(f"verify: simulating {samples} networks (d_model={spec.d_model}, T={spec.seq_len}, seed {seed}) ...", progress)
    try:
        sim = simulate.run(spec, taps=best.taps, samples=samples, seed=seed, positions=pos, device=device,
                           progress=progress, threads=threads, reservoir=reservoir_size(samples), dtype=dtype)
    except BaseException:
        if calibrator is not None:
            calibrator.cancel()
        raise
    timings["simulation_s"] = time.perf_counter() - t

    t = time.perf_counter()
    checks, distributions, laws = _judge(spec, best, sim, alpha, max(pos))
    timings["distributions_s"] = time.perf_counter() - t
    mutants = _mutants(best, sim, checks, alpha)
    cal = None
    if calibrator is not None:
        cal = calibrator.result()
        timings["calibration_s"] = calibrator.seconds()
    timings["total_s"] = time.perf_counter() - t_all
    return Report(spec=spec, preset=preset, samples=samples, seed=seed, alpha=alpha, positions=pos, checks=checks,
                  best=best, leading=leading, leading_rows=comparisons(leading, sim), simulation=sim, mutants=mutants,
                  calibration=cal, timings=timings, command=command, distributions=distributions, laws=laws)


def _checked_inputs(spec, preset, samples, seed, threads, device) -> tuple[ModelSpec, Preset, int]:
    """The spec, preset and sample size of a run; ValueError for bad input, before any work."""
    import simulate  # deferred: torch is imported only when a simulation is asked for

    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}; got {preset!r}")
    p = PRESETS[preset]
    spec = spec or p.spec_for(simulate.resolve_device(device).type) or DEFAULT_SPEC  # the real shapes on a GPU
    if spec.is_symbolic:
        raise ValueError("verify needs a numeric spec (every field a number)")
    # theory's one domain check, at both levels, before any simulation (d_model = 2 once cost 41 s first)
    check_domain(spec, evaluate=True, level="best")
    check_structure(spec)  # the first-layer derivation refuses sigma_embed = 0
    samples = p.samples if samples is None else samples
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise ValueError(f"samples must be an integer >= 2, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
    simulate.resolve_device(device)  # a bad device is an input error: say so before any work
    return spec, p, samples


def _theory(spec: ModelSpec, pos: list[int], progress: bool) -> tuple[TheoryTable, TheoryTable]:
    """The best and the leading level's tables (`theory.predict`)."""
    _stage(f"verify: theory of {spec.n_layers} layer(s) at {len(pos)} positions, T = {spec.seq_len} ...", progress)
    say = (lambda line: _stage("  " + line, progress)) if progress else None
    return theory_table(spec, pos, "best", progress=say), theory_table(spec, pos, "leading")


def _judge(spec: ModelSpec, best: TheoryTable, sim, alpha: float, position: int):
    """The moment checks and the distribution checks (at ``position``) of a run.

    One family-wise error for the whole run: alpha is split between the moment checks and
    the distribution checks in proportion to their numbers (Bonferroni across the two
    families, Holm within each), so a correct theory fails anything with probability <= alpha.
    """
    n_laws = sum(1 for tap in LAW_TAPS if tap in sim and sim[tap].reservoir is not None)
    n_moments = len(comparisons(best, sim))
    alpha_laws = alpha * n_laws / (n_laws + n_moments) if n_laws else 0.0
    checks = compare(best, sim, alpha=alpha - alpha_laws)
    distributions, laws = distribution_checks(spec, sim, position, alpha_laws) if n_laws else ([], {})
    return checks, distributions, laws


def _mutants(best: TheoryTable, sim, checks: CheckSet, alpha: float) -> dict[str, dict]:
    """Each formula mutant of the best table, judged against the same simulation."""
    out = {}
    for name, mutate in MUTANTS.items():
        mt = mutate(best)
        judged = compare(mt, sim, alpha=alpha)
        out[name] = {"detected": not judged.passed, "failed_checks": len(judged.failed),
                     "max_expected_shift_se": expected_shift(best, mt, checks)}
    return out


class _Calibrator:
    """The calibration of a run (many small single-threaded runs of `CALIBRATION_SPEC`).

    It goes to a second process while the main simulation runs here, single-threaded too:
    both cores busy, and no OpenMP team to stall when another process holds a core (which
    slows torch's 2-thread team ~10x). Without subprocesses, or for a small calibration
    (a second process costs a few seconds of imports), it runs after the simulation.
    """

    def __init__(self, preset: Preset, samples: int, seed: int, alpha: float, runs: int | None, progress: bool,
                 dtype: str = "float32"):
        self.runs = preset.calibration_runs if runs is None else runs
        # At the main sample size, at most the preset's calibration size (runs x samples is the cost).
        self.samples = min(preset.calibration_samples, samples) if preset.calibration_samples else samples
        self.kwargs = dict(runs=self.runs, samples=self.samples, alpha=alpha,
                           seed=seed + CALIBRATION_SEED_OFFSET, device="cpu", dtype=dtype)
        self.progress = progress
        self.pool = self.future = None
        self.t0 = time.perf_counter()

    def start(self, parallel: bool | None) -> None:
        if parallel is None:
            parallel = self.runs * self.samples >= PARALLEL_MIN_WORK
        self.t0 = time.perf_counter()
        if not parallel:
            return
        # Derived here (sympy is warm), so that the worker only imports and simulates.
        self.kwargs["table"] = theory_table(CALIBRATION_SPEC, CALIBRATION_POSITIONS)
        try:
            self.pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
            self.future = self.pool.submit(calibrate, **self.kwargs)
            _stage(f"verify: calibrating in a second process ({self.runs} runs x {self.samples} networks, small spec)",
                   self.progress)
        except (OSError, RuntimeError):  # no subprocesses here: calibrate afterwards
            self.pool = self.future = None
        self.t0 = time.perf_counter()

    def cancel(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)

    def result(self) -> Calibration:
        if self.future is not None:
            _stage("verify: waiting for the calibration ...", self.progress)
            try:
                return self.future.result()
            finally:
                self.pool.shutdown()
        _stage(f"verify: calibrating ({self.runs} runs x {self.samples} networks, small spec) ...", self.progress)
        return calibrate(**self.kwargs, progress=self.progress)

    def seconds(self) -> float:
        """Wall time since the calibration could start (it overlaps the main simulation)."""
        return time.perf_counter() - self.t0


__all__ = ["Report", "run", "CALIBRATION_SEED_OFFSET"]
