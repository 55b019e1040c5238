"""The probes and their metrics: position estimates from hidden states, and how good they are.

Probes (all but ``cosine`` see the state ``h_m`` of one token, never its neighbours):

* ``linear`` (`fit_ridge`) -- ridge regression of ``m`` on the standardised full state,
  closed form, the ridge chosen on validation sequences from a log grid;
* ``mlp`` (`tune_mlp`) -- the probe of Haviv et al. 2022: positions as ``T`` classes, a
  one-hidden-layer ReLU MLP trained to convergence (Adam, early stopping on validation MAE,
  width and learning rate chosen on validation data);
* ``full`` -- the same MLP on the full state *and* its log-norm ``log |h_m|^2/d``: a full-state
  probe that cannot miss the norm, telling "the probe could not read it" from "it is not there";
* ``variance_only`` (`fit_variance_only`) -- sees only ``s_m = |h_m|^2 / d``: a Gaussian
  class-conditional model of ``log s`` per position, inverted by Bayes' rule;
* ``theory`` (`invert_law`) -- no training at all: the quenched law of ``log s``
  (`theory.quenched`: mean and within-network variance per position) inverted by Bayes;
* ``cosine`` (`mean_cosines`, `fit_scalar`) -- the cross-position probe in the spirit of
  Zuo et al. (COLING 2025): the mean cosine of the token's state with the other states of its
  sequence, a Gaussian class-conditional model per position, inverted by Bayes.

Every probe yields a point estimate ``p`` in ``[1, T]`` -- the posterior *median* for the
Bayes and MLP probes (it minimises the expected absolute error), the regression for ridge --
and a class ``c`` (an integer position: the mode). `position_metrics`: ``mae = mean |p - m|``,
``mad = mean |c - m|`` (Haviv et al.'s mean absolute distance), ``r2`` of ``p`` against ``m``
and ``r2_log`` of ``log p`` against ``log m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

PROBES = ("linear", "mlp", "full", "variance_only", "theory", "cosine")
FULL_STATE_PROBES = ("linear", "mlp", "full")  # probes that need the whole hidden state


# ---------------------------------------------------------------- metrics
def position_metrics(point: np.ndarray, cls: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """``mae``, ``mad``, ``r2``, ``r2_log`` of position estimates against 1-based ``true``.

    >>> m = np.arange(1, 5)
    >>> position_metrics(m.astype(float), m, m)["r2"]
    1.0
    """
    point = np.asarray(point, dtype=np.float64)
    true = np.asarray(true, dtype=np.float64)
    cls = np.asarray(cls, dtype=np.float64)

    def r2(pred, y):
        tot = np.sum((y - y.mean()) ** 2)
        return float(1.0 - np.sum((pred - y) ** 2) / tot) if tot > 0 else float("nan")

    return {
        "mae": float(np.mean(np.abs(point - true))),
        "mad": float(np.mean(np.abs(cls - true))),
        "r2": r2(point, true),
        "r2_log": r2(np.log(np.clip(point, 1.0, None)), np.log(true)),
    }


def resolution_length(mae_by_position: np.ndarray, threshold: float = 1.0) -> int | None:
    """The first 1-based position whose mean absolute error reaches ``threshold``.

    With ``threshold = 1`` this is where a probe stops resolving neighbouring positions: its
    typical error there is a whole position. None when the error stays below it.

    >>> resolution_length(np.array([0.0, 0.2, 0.9, 1.3, 0.8]))
    4
    """
    above = np.nonzero(np.asarray(mae_by_position) >= threshold)[0]
    return int(above[0]) + 1 if len(above) else None


# ---------------------------------------------------------------- probes
@dataclass
class Estimate:
    """Position estimates of a probe: ``point`` (float, in [1, T]) and ``cls`` (int)."""

    point: np.ndarray
    cls: np.ndarray
    info: dict = field(default_factory=dict)


def _posterior_estimate(loglik: np.ndarray) -> Estimate:
    """Posterior median and mode over positions 1..T from log-likelihoods (n, T), uniform prior.

    The point estimate is the posterior *median* (the decoder that minimises the expected
    absolute error, so MAE is measured with it); ``cls`` is the mode.
    """
    loglik = loglik - loglik.max(axis=1, keepdims=True)
    post = np.exp(loglik)
    return _median_estimate(post, np.argmax(loglik, axis=1) + 1)


def _median_estimate(post: np.ndarray, cls: np.ndarray) -> Estimate:
    """Posterior median (1-based) of unnormalised posteriors (n, T)."""
    cdf = np.cumsum(post, axis=1)
    median = (cdf < 0.5 * cdf[:, -1:]).sum(axis=1) + 1
    return Estimate(point=median.astype(np.float64), cls=np.asarray(cls))


def invert_variance_curve(curve, observed, dof: float) -> Estimate:
    """Positions whose predicted per-coordinate variance best explains observed second moments.

    ``curve[m-1] = v(m) = E|x_m|^2 / d`` is a predicted variance-vs-position curve (any
    shape: it need not be monotone); ``observed`` holds per-token second moments
    ``s = |x|^2 / d``. Under the model ``s ~ v(m) chi^2_k / k`` (``k = dof``, e.g. ``d`` i.i.d.
    Gaussian channels), the log-likelihood of position ``m`` is

        l(m) = (k/2) (log(s / v(m)) - s / v(m)) + const,

    maximised where ``v(m)`` is nearest ``s`` on the log scale. The estimate is the posterior
    over ``m = 1..T`` with a uniform prior: ``point`` its mean, ``cls`` its mode (the maximum
    likelihood position; for a non-monotone curve, the position whose predicted value is
    nearest, with ties going to the smaller ``m``). No training.

    >>> curve = 1.0 + 1.0 / np.arange(1, 9)
    >>> invert_variance_curve(curve, curve[[0, 3]], dof=1e6).cls.tolist()
    [1, 4]
    """
    curve = np.asarray(curve, dtype=np.float64)
    observed = np.asarray(observed, dtype=np.float64).reshape(-1)
    if curve.ndim != 1 or len(curve) < 1 or not np.all(np.isfinite(curve)) or np.any(curve <= 0):
        raise ValueError("curve must be a 1-D array of positive, finite predicted variances (one per position)")
    if not (dof > 0):
        raise ValueError(f"dof must be > 0, got {dof!r}")
    ratio = np.clip(observed, 1e-300, None)[:, None] / curve[None, :]  # (n, T)
    return _posterior_estimate(0.5 * dof * (np.log(ratio) - ratio))


def fit_ridge(X_tr, y_tr, X_va, y_va, X_te, T: int, grid: int = 25) -> Estimate:
    """Ridge regression of position on the standardised hidden state, closed form.

    ``beta(lam) = V diag(1 / (e + lam)) V^T Z^T (y - mean y)`` from the eigen-decomposition
    ``V diag(e) V^T`` of ``Z^T Z`` (``Z`` the standardised training features); ``lam``
    minimises the validation squared error over ``e_max * 10^[-10 .. 2]`` (``grid`` points).
    Predictions are clipped to [1, T].
    """
    mean, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    Z_tr, Z_va, Z_te = ((X - mean) / sd for X in (X_tr, X_va, X_te))
    y_mean = y_tr.mean()
    eig, V = np.linalg.eigh(Z_tr.T @ Z_tr)
    eig = np.clip(eig, 0.0, None)
    Vzy = V.T @ (Z_tr.T @ (y_tr - y_mean))  # (d,)
    ZV_va = Z_va @ V  # (n_va, d)
    lams = (eig[-1] if eig[-1] > 0 else 1.0) * np.logspace(-10, 2, grid)
    errs = [np.mean((ZV_va @ (Vzy / (eig + lam)) + y_mean - y_va) ** 2) for lam in lams]
    lam = float(lams[int(np.argmin(errs))])
    beta = V @ (Vzy / (eig + lam))
    point = np.clip(Z_te @ beta + y_mean, 1.0, T)
    return Estimate(point=point, cls=np.rint(point).astype(np.int64), info={"ridge": lam})


MLP_GRID = ((128, 3e-3), (512, 1e-3))  # (hidden width, learning rate) tried on validation data


def fit_mlp(X_tr, y_tr, X_va, y_va, X_te, T: int, *, seed: int, hidden: int = 128, epochs: int = 60,
            batch: int = 512, lr: float = 3e-3, patience: int = 6) -> Estimate:
    """The MLP probe of Haviv et al. 2022: positions as ``T`` classes, trained to convergence.

    ``softmax(W_2 relu(W_1 z + b_1) + b_2)`` on the standardised features ``z``, trained with
    cross-entropy by Adam on shuffled mini-batches for up to ``epochs`` epochs; after every
    epoch the validation MAE of the posterior median is measured and the epoch with the
    lowest one is kept (early stopping after ``patience`` epochs without improvement).
    ``point`` is the posterior median (it minimises the absolute error), ``cls`` the argmax
    class; ``info``: ``epochs`` (the epoch kept), ``epochs_run``, ``val_mae``. Seeded: the same
    ``seed`` gives the same probe (one torch thread).
    """
    mean, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    to_t = lambda X: torch.from_numpy(((X - mean) / sd).astype(np.float32))  # noqa: E731
    Z_tr, Z_va, Z_te = to_t(X_tr), to_t(X_va), to_t(X_te)
    t_tr = torch.from_numpy(y_tr.astype(np.int64) - 1)
    y_va = np.asarray(y_va, dtype=np.float64)
    gen = torch.Generator().manual_seed(seed)
    d = Z_tr.shape[1]

    def init(fan_in, shape):  # PyTorch's default Linear init, from our generator
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=gen) * 2 - 1).mul_(bound).requires_grad_()

    params = [init(d, (d, hidden)), init(d, (hidden,)), init(hidden, (hidden, T)), init(hidden, (T,))]

    def logits(Z):
        W1, b1, W2, b2 = params
        return torch.relu(Z @ W1 + b1) @ W2 + b2

    def decode(Z) -> Estimate:
        with torch.no_grad():
            prob = torch.softmax(logits(Z), dim=-1).double().numpy()
        return _median_estimate(prob, prob.argmax(axis=1) + 1)

    opt = torch.optim.Adam(params, lr=lr)
    best_mae, best_state, best_epoch, stale, run = float("inf"), None, 0, 0, 0
    n = Z_tr.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = torch.nn.functional.cross_entropy(logits(Z_tr[idx]), t_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        run = epoch + 1
        val = float(np.mean(np.abs(decode(Z_va).point - y_va)))
        if val < best_mae - 1e-6:
            best_mae, best_state, best_epoch, stale = val, [p.detach().clone() for p in params], epoch + 1, 0
        else:
            stale += 1
            if stale >= patience:
                break
    with torch.no_grad():
        for p, b in zip(params, best_state):
            p.copy_(b)
    est = decode(Z_te)
    est.info = {"epochs": float(best_epoch), "epochs_run": float(run), "val_mae": best_mae}
    return est


def tune_mlp(X_tr, y_tr, X_va, y_va, X_te, T: int, *, seed: int, grid=MLP_GRID, epochs: int = 60,
             patience: int = 6) -> tuple[Estimate, tuple[int, float]]:
    """`fit_mlp` at each (hidden, lr) of ``grid``; the one with the lowest validation MAE is kept.

    Returns (its estimate, its (hidden, lr)); ``info`` gains ``hidden`` and ``lr``.
    """
    best, best_cfg = None, None
    for i, (hidden, lr) in enumerate(grid):
        est = fit_mlp(X_tr, y_tr, X_va, y_va, X_te, T, seed=seed + 7919 * i, hidden=int(hidden), lr=float(lr),
                      epochs=epochs, patience=patience)
        if best is None or est.info["val_mae"] < best.info["val_mae"]:
            best, best_cfg = est, (int(hidden), float(lr))
    best.info.update({"hidden": float(best_cfg[0]), "lr": best_cfg[1]})
    return best, best_cfg


def smooth_over_positions(curve: np.ndarray, fraction: float = 0.1) -> np.ndarray:
    """Running mean over the positions ``m +- h``, ``h = min(floor(fraction m), T - m)`` (a symmetric
    window that grows with m: none for m < 1/fraction, where the curves change fastest). A probe with few training
    sequences estimates the per-position mean and variance far better so.

    >>> smooth_over_positions(np.arange(1.0, 31.0))[[0, 9, 29]].tolist()
    [1.0, 10.0, 30.0]
    """
    curve = np.asarray(curve, dtype=np.float64)
    T = curve.size
    c = np.concatenate([[0.0], np.cumsum(curve)])
    m = np.arange(1, T + 1)
    h = np.minimum(np.floor(fraction * m).astype(int), T - m)  # symmetric: no bias of a linear curve at the end
    lo, hi = m - h, m + h
    return (c[hi] - c[lo - 1]) / (hi - lo + 1)


def fit_scalar(f_train: np.ndarray, f_test: np.ndarray) -> Estimate:
    """A Gaussian class-conditional model of one scalar feature per position, inverted by Bayes.

    ``f_*`` (sequences, T): from the training sequences ``mu_m``, ``sd_m`` of the feature at
    each position (smoothed over neighbouring positions, `smooth_over_positions`); a test token's log-likelihood of position ``m`` is ``log N(f; mu_m,
    sd_m^2)``; uniform prior; ``point`` the posterior median, ``cls`` the mode.
    ``info["var_within"]``: ``sd_m^2`` averaged over positions.
    """
    mu = smooth_over_positions(f_train.mean(axis=0))  # (T,)
    sd = np.maximum(np.sqrt(smooth_over_positions(f_train.var(axis=0, ddof=1))), 1e-12)  # (T,)
    f = np.asarray(f_test, dtype=np.float64).reshape(-1, 1)  # (n*T, 1)
    est = _posterior_estimate(-0.5 * ((f - mu) / sd) ** 2 - np.log(sd))
    est.info["var_within"] = float(np.mean(sd**2))
    return est


def fit_variance_only(s_train: np.ndarray, s_test: np.ndarray) -> Estimate:
    """The variance-only probe: `fit_scalar` on ``log s``, ``s = |x_m|^2 / d`` (sequences, T).

    ``info["dof_effective"]``: ``2 / Var(log s)`` averaged over positions (``Var log chi^2_k/k ~ 2/k``).
    """
    ls_tr = np.log(np.clip(s_train, 1e-300, None))
    est = fit_scalar(ls_tr, np.log(np.clip(s_test, 1e-300, None)))
    sd2 = np.maximum(ls_tr.var(axis=0, ddof=1), 1e-24)
    est.info["dof_effective"] = float(np.mean(2.0 / sd2))
    return est


def invert_law(mean_log, var_log, observed) -> Estimate:
    """The theory probe under the quenched law: ``log s | m ~ N(mean_log[m-1], var_log[m-1])``
    (`theory.quenched`), inverted by Bayes with a uniform prior; no training.
    ``point`` the posterior median, ``cls`` the maximum-likelihood position."""
    mu = np.asarray(mean_log, dtype=np.float64)
    sd = np.sqrt(np.asarray(var_log, dtype=np.float64))
    if mu.ndim != 1 or mu.shape != sd.shape or not np.all(np.isfinite(mu)) or np.any(~(sd > 0)):
        raise ValueError("mean_log and var_log must be 1-d arrays of one length, finite, var_log > 0")
    ls = np.log(np.clip(np.asarray(observed, dtype=np.float64).reshape(-1, 1), 1e-300, None))
    return _posterior_estimate(-0.5 * ((ls - mu) / sd) ** 2 - np.log(sd))


def mean_cosines(h: np.ndarray) -> np.ndarray:
    """Mean cosine of each token's state with the other tokens of its sequence (Zuo et al., COLING 2025).

    ``h`` (sequences, T, d) -> (sequences, T): ``(1/(T-1)) sum_{n != m} cos(h_m, h_n)``. An
    order-free summary of the token's similarity to its context: it sees no index (the
    cosine *profile* over n would reveal m by its own peak).
    """
    h = np.asarray(h, dtype=np.float64)
    u = h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-300)
    total = u @ u.sum(axis=1, keepdims=True).transpose(0, 2, 1)  # (n, T, 1): sum_n cos(h_m, h_n)
    return (total[..., 0] - 1.0) / max(h.shape[1] - 1, 1)


def theory_resolution(curve: np.ndarray, dof: float) -> int | None:
    """Where a variance curve stops separating neighbouring positions under chi^2_k noise.

    The position uncertainty at ``m`` is ``sd(log s) / |log v(m+1) - log v(m)|`` with
    ``sd(log s) = sqrt(2 / k)``; returns the first ``m`` where it reaches 1 (None if never).

    >>> theory_resolution(1.0 + 4.0 / np.arange(1, 200), dof=128)
    4
    """
    curve = np.asarray(curve, dtype=np.float64)
    step = np.abs(np.diff(np.log(curve)))
    width = math.sqrt(2.0 / dof) / np.maximum(step, 1e-300)
    above = np.nonzero(width >= 1.0)[0]
    return int(above[0]) + 1 if len(above) else None
