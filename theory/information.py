"""How well position can be read off one frozen network: Fisher information about m, and the
predicted error of the variance-only probe, with no training.

The paper's thesis is that position sits in the *size* of the hidden state. Take the
per-token statistic ``r_m = |x_m|^2 / d`` of a tap at some layer (the one number a
"variance-only" probe sees). Its mean is ``mu(m) = V(m)`` (`theory.depth`). Its spread
*within one frozen network* is the quenched law of `theory.quenched`: ``Var(log r_m) =
R(m)`` set by the random matrices the signal passed through (``R = 6/d`` for large m at
layer-0 ``hook_attn_out``, ``4/d`` at m = 1: effective degrees of freedom ``2/R`` of
about d/3, not d). For the Gaussian model ``r ~ N(mu(m), v(m))`` with ``v = R mu^2`` the
Fisher information about a continuous position m is

    I(m) = mu'(m)^2 / v(m) + v'(m)^2 / (2 v(m)^2)

and ``1/sqrt(I(m))`` is the Cramér–Rao bound on the error of any unbiased estimate of m
from ``r_m`` alone: where it exceeds 1, neighbouring positions cannot be told apart.
Derivatives are central differences on the integer grid (one-sided at the ends).

``noise="chi2"`` (or an ``effective_dof``) keeps the older model ``d r_m / mu ~ chi^2_k``
(``v = 2 mu^2 / k``, k = d by default), which is the annealed Gaussian-channel closure and
over-states the information of one network by about a factor 3 at the attention output.

`predicted_probe` turns the law of ``log r_m`` into the error of the Bayes decoder that
a trained variance-only probe approximates: uniform prior over m = 1..T, Gaussian
``log r | m ~ N(E s_m, Var s_m)``, the posterior *median* as the estimate (it minimises
the absolute error), integrated over ``log r`` by Gauss–Hermite quadrature.

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
from . import quenched as _quenched
from .spec import ModelSpec
from .taps import tap_name

RESIDUAL_TAPS = ("hook_resid_mid", "hook_resid_post")
NOISE_MODELS = ("quenched", "chi2")


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
    """Per layer and tap: mean and variance of ``r_m = |x_m|^2/d`` and the Fisher information."""

    spec: ModelSpec
    level: str
    dof: float | None
    mean: Mapping[str, np.ndarray]
    var: Mapping[str, np.ndarray]
    noise: str = "quenched"

    def _name(self, tap: str, layer: int) -> str:
        name = tap_name(tap, layer)
        if name not in self.mean:
            raise KeyError(f"no tap {name!r}; available: {', '.join(self.mean)}")
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
    noise: str | None = None,
) -> PositionInformation:
    """Mean, variance and Fisher information of ``|x_m|^2/d`` for the taps of every layer.

    ``noise``: ``"quenched"`` (default; the within-network law of `theory.quenched`, at the
    probed taps ``attn.hook_z, hook_attn_out, hook_resid_mid, hook_mlp_out,
    hook_resid_post``) or ``"chi2"`` (``v = 2 mu^2 / k`` at the residual taps, k =
    ``effective_dof`` or d; giving ``effective_dof`` selects it). ``prediction``: a
    `theory.depth.predict` result to reuse.
    """
    if noise is None:
        noise = "chi2" if effective_dof is not None else "quenched"
    if noise not in NOISE_MODELS:
        raise ValueError(f"noise must be one of {', '.join(NOISE_MODELS)}; got {noise!r}")
    pred = prediction if prediction is not None else _depth.predict(spec, level)
    mean, var = {}, {}
    if noise == "quenched":
        law = _quenched.quenched_law(spec, prediction=pred)
        for name, tl in law.taps.items():
            mean[name] = tl.level
            var[name] = tl.var * tl.level**2  # Var r = R mu^2 (delta method)
        return PositionInformation(spec, level, None, mean, var, noise)
    dof = float(spec.d_model if effective_dof is None else effective_dof)
    if not dof > 0:
        raise ValueError(f"effective_dof must be > 0, got {effective_dof!r}")
    for layer in range(int(spec.n_layers)):
        for tap in RESIDUAL_TAPS:
            if tap == "hook_resid_mid" and spec.attn_only:
                continue
            name = tap_name(tap, layer)
            mu = pred.var(name)  # E|x_m|^2/d = K[m, m] (every coordinate has mean zero)
            mean[name] = mu
            var[name] = 2.0 * mu**2 / dof
    return PositionInformation(spec, level, dof, mean, var, noise)


# ---------------------------------------------------------------- the variance-only probe, predicted
def _posterior_median(loglik: np.ndarray) -> np.ndarray:
    """1-based posterior median over positions (uniform prior) of each row of log-likelihoods (n, T)."""
    loglik = loglik - loglik.max(axis=1, keepdims=True)
    post = np.exp(loglik)
    cdf = np.cumsum(post, axis=1)
    return (cdf < 0.5 * cdf[:, -1:]).sum(axis=1) + 1.0


def predicted_probe(mean_log: np.ndarray, var_log: np.ndarray, nodes: int = 24) -> dict:
    """Predicted error of the Bayes variance-only probe, with no training.

    ``log r | m ~ N(mean_log[m-1], var_log[m-1])``, m uniform on 1..T, estimate = posterior
    median. For each m the expectation over ``log r`` is a ``nodes``-point Gauss–Hermite rule;
    returns ``mae`` (mean ``|p - m|``), ``r2`` and ``r2_log`` (of ``p`` and ``log p`` against
    m and log m), and ``mae_by_position`` (T,).

    >>> out = predicted_probe(-np.log(np.arange(1, 9.0)), np.full(8, 1e-6))
    >>> out["mae"]
    0.0
    """
    mu = np.asarray(mean_log, dtype=float)
    var = np.asarray(var_log, dtype=float)
    if mu.ndim != 1 or mu.shape != var.shape or not np.all(np.isfinite(var)) or np.any(var <= 0):
        raise ValueError("mean_log and var_log must be 1-d arrays of one length with var_log > 0")
    sd = np.sqrt(var)
    T = mu.size
    z, w = np.polynomial.hermite_e.hermegauss(nodes)
    w = w / w.sum()
    obs = (mu[:, None] + sd[:, None] * z[None, :]).reshape(-1, 1)  # (T*nodes, 1)
    loglik = -0.5 * ((obs - mu[None, :]) / sd[None, :]) ** 2 - np.log(sd)[None, :]
    point = _posterior_median(loglik).reshape(T, nodes)
    m = np.arange(1, T + 1, dtype=float)
    err = np.abs(point - m[:, None]) @ w
    sq = ((point - m[:, None]) ** 2) @ w
    sq_log = ((np.log(point) - np.log(m)[:, None]) ** 2) @ w
    return {"mae": float(err.mean()), "r2": float(1.0 - sq.mean() / m.var()),
            "r2_log": float(1.0 - sq_log.mean() / np.log(m).var()), "mae_by_position": err}
