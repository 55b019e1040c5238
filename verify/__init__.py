"""verify: theory against simulation (checks, calibration, property-based tests, reports).

A *check* pairs a theory number (best level: `theory.derive` for the layer-1 attention
taps, `theory.depth` for every other tap of every layer) with the simulated
statistic of the same tap and position (`simulate.run`) and judges it by the theory's
level: exact results by a z-score against the per-network Monte Carlo standard error,
approximate ones after allowing their declared relative error; Holm's procedure over all
checks of a run bounds the chance that a correct theory fails any of them by ``alpha``.

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
Hypothesis strategies for specs live in `verify.strategies`. See docs/verify.md.
"""

from ._calibration import CALIBRATION_SPEC, Calibration, calibrate
from ._checks import DEFAULT_ALPHA, Check, CheckSet, Comparison, compare, comparisons, holm, judge
from ._job import DEFAULT_SPEC, DEPTH_SPEC, PRESETS, Preset, Report, positions_for, run
from ._mutants import MUTANTS, Mutant
from ._report import console_summary, results_dict, write_report
from ._distributions import DistributionCheck, distribution_checks
from ._figures import (depth_error_figure, depth_variance_figure, distribution_figure, sum_sq_figure, variance_figure,
                       zscore_figure)
from ._theory import TheoryTable, logit_variance, relative_tolerance, theory_table

__all__ = [
    "run",
    "Report",
    "write_report",
    "results_dict",
    "console_summary",
    "compare",
    "comparisons",
    "judge",
    "holm",
    "Check",
    "CheckSet",
    "Comparison",
    "DEFAULT_ALPHA",
    "theory_table",
    "TheoryTable",
    "relative_tolerance",
    "logit_variance",
    "calibrate",
    "Calibration",
    "CALIBRATION_SPEC",
    "MUTANTS",
    "Mutant",
    "DEFAULT_SPEC",
    "DEPTH_SPEC",
    "PRESETS",
    "Preset",
    "positions_for",
    "variance_figure",
    "sum_sq_figure",
    "zscore_figure",
    "distribution_figure",
    "depth_error_figure",
    "depth_variance_figure",
    "distribution_checks",
    "DistributionCheck",
]
