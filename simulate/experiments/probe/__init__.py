"""Position probing in frozen random transformers (``python -m simulate probe``; docs/probe.md).

* `experiment`: the network, the features of every probed tap, the experiment (`probe_experiment`);
* `probes`: the probes and their metrics;
* `theory_side`: theory's numbers for the probe (quenched law, predicted MAE, mean cosine);
* `budget`: the experiment's size guard;
* `report`: results.json, heat maps, tables, figures, report.md;
* `cli`: the command line.
"""

from .budget import check_probe_size
from .experiment import (
    DEFAULT_FULL_TAPS,
    DEFAULT_VOCAB,
    POSITIONALS,
    PROBE_TAPS,
    ProbeConfig,
    default_spec,
    network_seed,
    paper_spec,
    probe_experiment,
    probed_taps,
    tap_features,
    with_sigma,
)
from .probes import (
    PROBES,
    Estimate,
    fit_mlp,
    fit_ridge,
    fit_scalar,
    fit_variance_only,
    invert_law,
    invert_variance_curve,
    mean_cosines,
    position_metrics,
    resolution_length,
    theory_resolution,
    tune_mlp,
)
from .theory_side import TheorySide, theory_side

__all__ = [
    "ProbeConfig", "probe_experiment", "default_spec", "paper_spec", "with_sigma", "tap_features", "network_seed",
    "probed_taps", "check_probe_size", "PROBES", "PROBE_TAPS", "POSITIONALS", "DEFAULT_VOCAB", "DEFAULT_FULL_TAPS",
    "Estimate", "fit_mlp", "tune_mlp", "fit_ridge", "fit_scalar", "fit_variance_only", "invert_law",
    "invert_variance_curve", "mean_cosines", "position_metrics", "resolution_length", "theory_resolution",
    "TheorySide", "theory_side",
]
