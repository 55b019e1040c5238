"""The probes and their metrics: position estimates from hidden states, and how good they are.

Probes (each sees the hidden state ``x_m`` (d_model) of one token, never its neighbours):

* ``linear`` (`fit_ridge`) -- ridge regression of ``m`` on the standardised full hidden
  state, closed form, the ridge chosen on validation sequences from a log grid;
* ``mlp`` (`fit_mlp`) -- the probe of Haviv et al. 2022: positions as ``T`` classes, a
  one-hidden-layer ReLU MLP trained with cross-entropy (Adam, early stopping);
* ``variance_only`` (`fit_variance_only`) -- sees only the per-token second moment
  ``s_m = |x_m|^2 / d``: a Gaussian class-conditional model of ``log s`` per position,
  inverted by Bayes' rule with a uniform prior over positions;
* ``theory`` (`invert_variance_curve`) -- no training at all: a predicted curve
  ``v(m) = E|x_m|^2 / d`` inverted under a chi-square model of ``s``.

Every probe yields a posterior-mean (or regression) point estimate ``p`` in ``[1, T]`` and
a class ``c`` (an integer position). `position_metrics`: ``mae = mean |p - m|``, ``mad =
mean |c - m|`` (Haviv et al.'s mean absolute distance), ``r2`` of ``p`` against ``m`` and
``r2_log`` of ``log p`` against ``log m``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

PROBES = ("linear", "mlp", "variance_only", "theory")


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
    """Posterior mean and mode over positions 1..T from log-likelihoods (n, T), uniform prior."""
    loglik = loglik - loglik.max(axis=1, keepdims=True)
    post = np.exp(loglik)
    post /= post.sum(axis=1, keepdims=True)
    positions = np.arange(1, loglik.shape[1] + 1, dtype=np.float64)
    return Estimate(point=post @ positions, cls=np.argmax(loglik, axis=1) + 1)


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


def fit_variance_only(s_train: np.ndarray, s_test: np.ndarray) -> Estimate:
    """The variance-only probe: a Gaussian model of ``log s`` per position, inverted by Bayes.

    ``s_*`` are second moments ``|x_m|^2 / d``, shape (sequences, T). From the training
    sequences, ``mu_m`` and ``sd_m`` of ``log s`` at each position; a test token's
    log-likelihood of position ``m`` is ``log N(log s; mu_m, sd_m^2)``.
    """
    ls_tr = np.log(np.clip(s_train, 1e-300, None))  # (n, T)
    mu = ls_tr.mean(axis=0)  # (T,)
    sd = np.maximum(ls_tr.std(axis=0, ddof=1), 1e-12)  # (T,)
    ls = np.log(np.clip(s_test, 1e-300, None)).reshape(-1, 1)  # (n*T, 1)
    loglik = -0.5 * ((ls - mu) / sd) ** 2 - np.log(sd)
    est = _posterior_estimate(loglik)
    est.info["dof_effective"] = float(np.mean(2.0 / sd**2))  # Var(log chi^2_k / k) ~ 2/k
    return est


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


def fit_mlp(X_tr, y_tr, X_va, y_va, X_te, T: int, *, seed: int, hidden: int = 128, epochs: int = 10,
            batch: int = 1024, lr: float = 3e-3, patience: int = 2) -> Estimate:
    """The MLP probe of Haviv et al. 2022: positions as ``T`` classes.

    ``softmax(W_2 relu(W_1 z + b_1) + b_2)`` on the standardised hidden state ``z``, trained
    with cross-entropy by Adam on shuffled mini-batches; the epoch with the lowest
    validation loss is kept (early stopping after ``patience`` epochs without improvement).
    ``point`` is the posterior mean position, ``cls`` the argmax class. Seeded: the same
    ``seed`` gives the same probe (one torch thread).
    """
    mean, sd = X_tr.mean(axis=0), X_tr.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    to_t = lambda X: torch.from_numpy(((X - mean) / sd).astype(np.float32))  # noqa: E731
    Z_tr, Z_va, Z_te = to_t(X_tr), to_t(X_va), to_t(X_te)
    t_tr = torch.from_numpy(y_tr.astype(np.int64) - 1)
    t_va = torch.from_numpy(y_va.astype(np.int64) - 1)
    gen = torch.Generator().manual_seed(seed)
    d = Z_tr.shape[1]

    def init(fan_in, shape):  # PyTorch's default Linear init, from our generator
        bound = 1.0 / math.sqrt(fan_in)
        return (torch.rand(*shape, generator=gen) * 2 - 1).mul_(bound).requires_grad_()

    params = [init(d, (d, hidden)), init(d, (hidden,)), init(hidden, (hidden, T)), init(hidden, (T,))]

    def logits(Z):
        W1, b1, W2, b2 = params
        return torch.relu(Z @ W1 + b1) @ W2 + b2

    opt = torch.optim.Adam(params, lr=lr)
    best_loss, best_state, best_epoch, stale = float("inf"), None, 0, 0
    n = Z_tr.shape[0]
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, batch):
            idx = order[i:i + batch]
            loss = torch.nn.functional.cross_entropy(logits(Z_tr[idx]), t_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            val = float(torch.nn.functional.cross_entropy(logits(Z_va), t_va))
        if val < best_loss - 1e-4:
            best_loss, best_state, best_epoch, stale = val, [p.detach().clone() for p in params], epoch + 1, 0
        else:
            stale += 1
            if stale >= patience:
                break
    with torch.no_grad():
        for p, b in zip(params, best_state):
            p.copy_(b)
        prob = torch.softmax(logits(Z_te), dim=-1).double().numpy()
    positions = np.arange(1, T + 1, dtype=np.float64)
    return Estimate(point=prob @ positions, cls=prob.argmax(axis=1) + 1, info={"epochs": best_epoch})




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
