"""verify: theory against simulation (checks, calibration, property-based tests, reports).

A *check* pairs a theory number (theory's `Prediction` at the best level: `theory.derive`
for the first-layer attention taps, `theory.depth` for every other tap of every layer) with
the simulated statistic of the same tap and position (`simulate.run`) and judges it by
the theory's level: exact results by a z-score against the per-network Monte Carlo
standard error, approximate ones after allowing the relative error theory declares;
Holm's procedure over all checks of a run bounds the chance that a correct theory fails
any of them by ``alpha``.

>>> import simulate, verify
>>> from theory import ModelSpec
>>> spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, attn_only=True)
>>> table = verify.theory_table(spec, [1, 2, 4])
>>> sim = simulate.run(spec, taps=table.taps, samples=200, seed=0, positions=[1, 2, 4],
...                    device="cpu", progress=False)
>>> checks = verify.compare(table, sim)
>>> checks.passed, verify.compare(verify.MUTANTS["factor H dropped"](table), sim).passed
(True, False)

The main job (`python -m verify`) is `verify.run` followed by `verify.write_report`.
The parts: `verify.checks` (the theory side, comparisons, statistics and Holm, judging,
distribution checks, mutants, calibration, accuracy through depth), `verify.job` (`run`,
`Report`), `verify.presets`, `verify.report` (report.md, results.json, LaTeX, figures,
the console summary), `verify.cli`. Hypothesis strategies for specs live in
`verify.strategies`. See docs/verify.md.
"""

from .checks import (DEFAULT_ALPHA, MUTANTS, Calibration, Check, CheckSet, Comparison, DistributionCheck,
                     TheoryTable, Verdict, calibrate, compare, theory_table)
from .job import Report, run
from .presets import DEFAULT_SPEC, PRESETS, positions_for
from .report import write_report

__all__ = [
    # the main job
    "run",
    "Report",
    "write_report",
    "PRESETS",
    "DEFAULT_SPEC",
    "positions_for",
    # checks
    "theory_table",
    "TheoryTable",
    "compare",
    "Comparison",
    "Check",
    "CheckSet",
    "Verdict",
    "DistributionCheck",
    "DEFAULT_ALPHA",
    # verify itself
    "calibrate",
    "Calibration",
    "MUTANTS",
]

from theory import __version__  # noqa: E402  (one version for the three packages)
