"""Standard errors clustered by document, for statistics of held-out windows.

Windows cut from one page share its subject, vocabulary and layout, so windows of one
page are not independent draws; treating them as such understates every error bar. Here
the unit of independence is the **document** (a held-out page; `Corpus.documents`), and
every standard error is over documents:

* a **mean** over windows, ``ybar = sum_i y_i / N``: the cluster-robust (Liang & Zeger
  1986) sandwich with the small-sample factor of Stata's CR1 (Cameron & Miller 2015,
  "A Practitioner's Guide to Cluster-Robust Inference", eq. 12 for an intercept-only
  model)::

      se^2 = G / (G - 1) * sum_g (sum_{i in g} (y_i - ybar))^2 / N^2      (G documents)

* any other statistic ``theta`` (a pooled variance, a ratio, a fitted slope): the
  **delete-one-document jackknife** (Efron & Stein 1981; Cameron & Miller sec. VI.C)::

      se^2 = (G - 1) / G * sum_g (theta_(g) - mean_g theta_(g))^2

  with ``theta_(g)`` the statistic recomputed without document ``g``. For a mean with
  equal-sized documents the two formulas coincide exactly (tested).

With few documents (G below ~20-30) cluster-robust errors are themselves noisy and tend to
be small (Cameron & Miller sec. VI); the number of documents is reported beside them. With one
document (or a document holding all but one window) an error is undefined and is NaN.
"""

from __future__ import annotations

import numpy as np


def _groups(clusters: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    clusters = np.asarray(clusters)
    if clusters.shape != (n,):
        raise ValueError(f"clusters must have one id per window ({n}), got shape {clusters.shape}")
    if n == 0:
        raise ValueError("no windows to take a mean over")
    _, inverse = np.unique(clusters, return_inverse=True)
    return inverse.reshape(n), int(inverse.max()) + 1


def cluster_sums(y: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per document: the sums of ``y`` over its windows (G, ...) and its window count (G,)."""
    y = np.asarray(y, dtype=np.float64)
    inverse, G = _groups(clusters, y.shape[0])
    sums = np.zeros((G, *y.shape[1:]))
    np.add.at(sums, inverse, y)
    return sums, np.bincount(inverse, minlength=G).astype(np.float64)


def clustered_mean(y: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean over windows (axis 0) and its CR1 cluster-robust standard error (module docstring)."""
    y = np.asarray(y, dtype=np.float64)
    N = y.shape[0]
    sums, counts = cluster_sums(y, clusters)
    G = counts.size
    mean = sums.sum(axis=0) / N
    resid = sums - counts.reshape(-1, *([1] * (y.ndim - 1))) * mean  # sum_{i in g} (y_i - ybar)
    if G < 2:  # one document: no error over documents can be estimated
        return mean, np.full(np.shape(mean), np.nan)
    se = np.sqrt(G / (G - 1) * np.sum(resid**2, axis=0)) / N
    return mean, se


def jackknife_se(leave_out: np.ndarray) -> np.ndarray:
    """Delete-one-document jackknife error from the statistic recomputed without each
    document, ``leave_out`` (G, ...)."""
    t = np.asarray(leave_out, dtype=np.float64)
    G = t.shape[0]
    if G < 2:  # one document: undefined
        return np.full(t.shape[1:], np.nan)
    with np.errstate(invalid="ignore"):  # NaN leave-outs (undefined statistics) give NaN
        return np.sqrt((G - 1) / G * np.sum((t - t.mean(axis=0)) ** 2, axis=0))


def leave_one_out_means(y: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The full mean over windows and the mean without each document, (G, ...)."""
    y = np.asarray(y, dtype=np.float64)
    sums, counts = cluster_sums(y, clusters)
    total, N = sums.sum(axis=0), float(y.shape[0])
    shape = (-1, *([1] * (y.ndim - 1)))
    keep = N - counts  # 0 when one document holds every window: NaN, and so are the errors
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / N, (total - sums) / keep.reshape(shape)


def pooled_variance(m1: np.ndarray, m2: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``Var`` pooled over coordinates and windows at each position, from each window's
    coordinate mean ``m1`` and mean square ``m2`` (N, P): ``E[x^2] - E[x]^2`` (the variance
    of one coordinate drawn at random, as `simulate.record`'s ``var`` up to its ``n - 1``),
    its jackknife error over documents, and its leave-one-document-out values (G, P)."""
    a, a_out = leave_one_out_means(m1, clusters)
    b, b_out = leave_one_out_means(m2, clusters)
    var, var_out = b - a**2, b_out - a_out**2
    return var, jackknife_se(var_out), var_out


def across_inputs_variance(values: np.ndarray, clusters: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``mean_c Var_windows(x_{m,c})`` (the variance across windows with the coordinate held
    fixed, unbiased), from ``values`` (N, P, C): the value, its jackknife error over
    documents, and the leave-one-document-out values (G, P)."""
    x = np.asarray(values, dtype=np.float64)
    N = x.shape[0]
    sums, counts = cluster_sums(x, clusters)
    sq, _ = cluster_sums(x * x, clusters)
    def var(s1, s2, n):  # noqa: E306 - unbiased variance from sums, mean over coordinates
        return ((s2 - s1**2 / n) / (n - 1)).mean(axis=-1)
    full = var(sums.sum(0), sq.sum(0), N)
    n_out = (N - counts).reshape(-1, 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):  # fewer than 2 windows left: NaN
        out = np.where(n_out[:, :, 0] >= 2, var(sums.sum(0) - sums, sq.sum(0) - sq, n_out), np.nan)
    return full, jackknife_se(out), out


def fit_slope(positions: np.ndarray, curves: np.ndarray, lo: int = 1) -> np.ndarray:
    """Least-squares slope of ``ln curve`` against ``ln m`` over ``positions >= lo``, for
    each row of ``curves`` (..., P); NaN for a row with a point that is not positive and
    finite, and when fewer than 3 positions are fitted."""
    positions = np.asarray(positions, dtype=np.float64)
    c = np.asarray(curves, dtype=np.float64)
    keep = positions >= lo
    x = np.log(positions[keep])
    with np.errstate(divide="ignore", invalid="ignore"):
        y = np.log(c[..., keep])
    ok = np.all(np.isfinite(y), axis=-1)
    if x.size < 3:
        return np.full(c.shape[:-1], np.nan)
    xc = x - x.mean()
    with np.errstate(invalid="ignore"):
        b = ((y - y.mean(axis=-1, keepdims=True)) * xc).sum(axis=-1) / np.sum(xc**2)
    return np.where(ok, b, np.nan)


def slope_with_se(positions: np.ndarray, full: np.ndarray, leave_out: np.ndarray, lo: int = 1) -> tuple[float, float]:
    """The slope of the full curve (P,) and its jackknife error from the leave-one-document-out
    curves (G, P)."""
    return float(fit_slope(positions, full, lo)), float(jackknife_se(fit_slope(positions, leave_out, lo)))
