"""Position probing in frozen random transformers (``python -m simulate probe``; docs/probe.md).

* `experiment`: the network, its hidden states, the experiment (`probe_experiment`);
* `probes`: the four probes and their metrics;
* `budget`: the experiment's size guard;
* `report`: results.json, tables, figures, report.md;
* `cli`: the command line.
"""

from .budget import check_probe_size
from .experiment import (
    DEFAULT_VOCAB,
    POSITIONALS,
    ProbeConfig,
    default_spec,
    hidden_states,
    network_seed,
    probe_experiment,
    theory_curves,
    with_sigma,
)
from .probes import (
    PROBES,
    Estimate,
    fit_mlp,
    fit_ridge,
    fit_variance_only,
    invert_variance_curve,
    position_metrics,
    resolution_length,
    theory_resolution,
)

__all__ = [
    "ProbeConfig", "probe_experiment", "default_spec", "with_sigma", "hidden_states", "network_seed", "theory_curves",
    "check_probe_size", "PROBES", "POSITIONALS", "DEFAULT_VOCAB", "Estimate", "fit_mlp", "fit_ridge",
    "fit_variance_only", "invert_variance_curve", "position_metrics", "resolution_length", "theory_resolution",
]
