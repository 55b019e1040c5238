"""What theory says about the probe, before any probe is trained (NoPE only).

Per probed tap and layer (`theory.quenched`, `theory.information`, `theory.depth`):

* the level ``V(m) = E|h_m|^2/d`` (annealed, `theory.depth`);
* the within-network law of ``log s_m``: its mean and variance (`theory.quenched.quenched_law`),
  which the ``theory`` probe inverts with no training;
* the network-to-network sd of the per-position mean of ``log s_m``;
* the predicted MAE and R^2 of the variance-only probe (`theory.information.predicted_probe`:
  the Bayes decoder under that law, posterior median);
* the predicted mean cosine of a token with the others of its sequence (the normalised
  depth kernel's off-diagonal, `theory.quenched.mean_cosine`), beside the cosine probe.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from theory import ModelSpec, depth
from theory.information import predicted_probe
from theory.quenched import mean_cosine, quenched_law, tap_kernels


@dataclass
class TheorySide:
    """Theory's numbers per full tap name (empty with a ``note`` when theory does not cover the spec)."""

    note: str
    mean_log: dict = field(default_factory=dict)
    var_log: dict = field(default_factory=dict)
    network_sd: dict = field(default_factory=dict)
    level: dict = field(default_factory=dict)
    cosine: dict = field(default_factory=dict)
    predicted: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.mean_log)


def theory_side(spec: ModelSpec, taps: list[str]) -> TheorySide:
    """Theory's numbers for the full tap names ``taps`` of ``spec`` (see the module docstring).

    The theory covers Gaussian inputs; a vocabulary of i.i.d. Gaussian rows drawn uniformly is
    that law while ids do not repeat, so a finite vocabulary is predicted as ``vocab_size = None``
    where `theory.depth` refuses it (the note says so). A theory failure never sinks the
    simulated probes: the note says what failed.
    """
    note = "theory.depth.predict + theory.quenched.quenched_law"
    try:
        try:
            pred = depth.predict(spec)
        except (ValueError, NotImplementedError):
            pred = depth.predict(spec.replace(vocab_size=None))
            note += " (levels of the spec with vocab_size=None: Gaussian inputs)"
        law = quenched_law(spec, prediction=pred)  # the table's own spread is the law's (Marchenko-Pastur)
        kernels = tap_kernels(spec, pred)
    except Exception as err:  # noqa: BLE001 -- a theory failure must not sink the simulated probes
        return TheorySide(note=f"theory failed ({type(err).__name__}: {err}); the theory probe was skipped")
    side = TheorySide(note=note)
    for name in taps:
        if name not in law.taps:
            continue
        tl = law.taps[name]
        if not (np.all(np.isfinite(tl.mean)) and np.all(tl.var > 0)):
            continue
        side.mean_log[name], side.var_log[name] = tl.mean, tl.var
        side.network_sd[name], side.level[name] = tl.network_sd, tl.level
        side.predicted[name] = predicted_probe(tl.mean, tl.var)
        if name in kernels:
            side.cosine[name] = mean_cosine(kernels[name])
    if not side.ok:
        side.note = "theory gave no usable law for the probed taps; the theory probe was skipped"
    return side
