"""How well position can be read off the residual stream: Fisher information about m.

The paper's thesis is that position sits in the *size* of the hidden state. Take the
per-token statistic ``r_m = |x_m|^2 / d`` (the mean square over channels: the one
number a "variance-only" probe sees) of a residual tap at some layer. Under the depth
theory (`theory.depth`) its mean is ``mu(m) = K[m, m]``; with the d channels i.i.d.
Gaussian given the kernel (the NNGP closure), ``d r_m / K[m, m] ~ chi^2_d``, so
``Var(r_m) = 2 K[m, m]^2 / d``. For the Gaussian model ``r ~ N(mu(m), v(m))`` the Fisher
information about a continuous position m is

    I(m) = mu'(m)^2 / v(m) + v'(m)^2 / (2 v(m)^2)        (= (d/2 + 2) (d log K_mm / dm)^2)

and ``1/sqrt(I(m))`` is the Cramér–Rao bound on the error of any unbiased estimate of
m from ``r_m`` alone: where it exceeds 1, neighbouring positions cannot be told apart.
Derivatives are central differences on the integer grid (one-sided at the ends).

The model of ``Var(r_m)`` is the weak point, and it is stated: under the annealed
measure ``r_m`` also varies from network to network (the kernel itself fluctuates), so
the measured variance is larger than ``2 K^2/d`` and the information smaller.
``effective_dof`` lets the caller put a measured number of degrees of freedom in place
of d (`docs/examples/position_information.py` measures it).

>>> from theory import ModelSpec
>>> info = position_information(ModelSpec(d_model=64, n_heads=4, n_layers=2, seq_len=32))
>>> info.fisher("hook_resid_post", 1).shape
(32,)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from . import depth as _depth
from .spec import ModelSpec
from .taps import tap_name

RESIDUAL_TAPS = ("hook_resid_mid", "hook_resid_post")


def fisher_information(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """``I(m) = mu'^2/v + v'^2/(2 v^2)`` of a Gaussian family indexed by position (arrays over m = 1..T)."""
    mean, var = np.asarray(mean, dtype=float), np.asarray(var, dtype=float)
    if mean.shape != var.shape or mean.ndim != 1 or mean.size < 2:
        raise ValueError("mean and var must be 1-d arrays of the same length >= 2 (positions 1..T)")
    if np.any(var <= 0):
        raise ValueError("variances must be > 0")
    dmu, dv = np.gradient(mean), np.gradient(var)
    return dmu**2 / var + dv**2 / (2.0 * var**2)


@dataclass(frozen=True)
class PositionInformation:
    """Per layer and residual tap: mean and variance of ``r_m = |x_m|^2/d`` and the Fisher information."""

    spec: ModelSpec
    level: str
    dof: float
    mean: Mapping[str, np.ndarray]
    var: Mapping[str, np.ndarray]

    def _name(self, tap: str, layer: int) -> str:
        name = tap_name(tap, layer)
        if name not in self.mean:
            raise KeyError(f"no residual tap {name!r}; available: {', '.join(self.mean)}")
        return name

    def fisher(self, tap: str, layer: int) -> np.ndarray:
        """Fisher information about m carried by ``r_m`` of ``tap`` at ``layer`` (positions 1..T)."""
        name = self._name(tap, layer)
        return fisher_information(self.mean[name], self.var[name])

    def resolution(self, tap: str, layer: int) -> np.ndarray:
        """Cramér–Rao bound ``1/sqrt(I(m))`` on the position error, in positions."""
        with np.errstate(divide="ignore"):
            return 1.0 / np.sqrt(self.fisher(tap, layer))

    def resolved_up_to(self, tap: str, layer: int) -> int:
        """The last position m before which the bound stays below one position (0 if none)."""
        ok = self.resolution(tap, layer) < 1.0
        return int(np.argmin(ok)) if not ok.all() else int(self.spec.seq_len)


def position_information(
    spec: ModelSpec,
    level: str = "best",
    effective_dof: float | None = None,
    prediction: "_depth.DepthPrediction | None" = None,
) -> PositionInformation:
    """Mean, variance and Fisher information of ``|x_m|^2/d`` for the residual taps of every layer.

    ``effective_dof`` (default ``d_model``): the degrees of freedom of the chi-square
    model of ``r_m``. ``prediction``: a `theory.depth.predict` result to reuse.
    """
    dof = float(spec.d_model if effective_dof is None else effective_dof)
    if not dof > 0:
        raise ValueError(f"effective_dof must be > 0, got {effective_dof!r}")
    pred = prediction if prediction is not None else _depth.predict(spec, level)
    mean, var = {}, {}
    for layer in range(int(spec.n_layers)):
        for tap in RESIDUAL_TAPS:
            if tap == "hook_resid_post" and spec.attn_only:
                continue
            name = tap_name(tap, layer)
            mu = pred.var(name)  # E|x_m|^2/d = K[m, m] (every coordinate has mean zero)
            mean[name] = mu
            var[name] = 2.0 * mu**2 / dof
    return PositionInformation(spec, level, dof, mean, var)
