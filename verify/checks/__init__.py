"""The checks: theory against simulation, judged, and verify's own calibration.

- `theory`: the theory side, `TheoryTable` (theory's `Prediction` at the checked
  positions) and the declared tolerances;
- `comparison`: `Comparison`, one theory number beside one simulated statistic;
- `statistics`: p-values, critical values, Holm's procedure, binomial ranges;
- `judge`: `Verdict`, `Check`, `CheckSet`, `judge`, `compare`;
- `distributions`: Kolmogorov-Smirnov checks of one coordinate's law (`theory.law`);
- `mutants`: formula mutants, to measure power;
- `calibration`: false alarms and power of the checks, measured;
- `depth`: the checks of a run summed up per layer, and where the error grows.
"""

from .calibration import CALIBRATION_SPEC, Calibration, calibrate
from .comparison import Comparison, comparisons
from .depth import depth_accuracy, depth_findings
from .distributions import DistributionCheck, distribution_checks
from .judge import DEFAULT_ALPHA, Check, CheckSet, Verdict, compare, judge
from .mutants import MUTANTS, Mutant, expected_shift
from .statistics import critical_z, holm, two_sided_p
from .theory import TheoryTable, logit_variance, relative_tolerance, theory_table

__all__ = [
    "TheoryTable", "theory_table", "relative_tolerance", "logit_variance",
    "Comparison", "comparisons",
    "Verdict", "Check", "CheckSet", "judge", "compare", "DEFAULT_ALPHA",
    "holm", "two_sided_p", "critical_z",
    "DistributionCheck", "distribution_checks",
    "MUTANTS", "Mutant", "expected_shift",
    "Calibration", "calibrate", "CALIBRATION_SPEC",
    "depth_accuracy", "depth_findings",
]
