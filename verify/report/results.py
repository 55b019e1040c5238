"""results.json: the machine-readable results of a `Report`."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import numpy as np

MEASURE = "annealed"


def clean(value):
    """JSON-safe: NaN/inf -> null, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def results_dict(report, figures: dict | None = None) -> dict:
    """The machine-readable results (what results.json holds)."""
    sim_meta = report.simulation.meta
    return clean({
        "spec": report.spec.to_dict(),
        "run": {
            "command": report.command,
            "preset": report.preset,
            "samples": report.samples,
            "seed": report.seed,
            "alpha": report.alpha,
            "measure": MEASURE,
            "positions": report.positions,
            "logit_variance": report.logit_variance,
            "device": sim_meta.get("device"),
            "timings_s": report.timings,
            "versions": sim_meta.get("versions"),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        },
        "verdict": {
            "passed": report.passed,
            "exact_passed": report.exact_passed,
            "checks": len(report.checks),
            "failed": len(report.checks.failed),
            "by_tap": report.checks.by_tap(),
            "distributions_passed": all(d.passed for d in report.distributions),
        },
        "checks": report.checks.to_list(),
        "distributions": [d.to_dict() for d in report.distributions],
        "leading": {"summary": report.leading_summary(), "rows": report.leading_deviations()},
        "depth": {"layers": report.layers, "accuracy": report.depth_accuracy(), "findings": report.depth_findings()},
        "mutants": report.mutants,
        "calibration": report.calibration.to_dict() if report.calibration else None,
        "figures": figures or {},
    })


__all__ = ["MEASURE", "clean", "results_dict"]
