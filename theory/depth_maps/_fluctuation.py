"""The per-network fluctuation of the keys' spread, carried through depth.

The softmax of a row sees the keys of *one* network, and their spread about the centroid
fluctuates from network to network (annealed measure: a fresh network per sample). The
mean kernel gives its mean ``v_m``; the row expectations are concave in it, so
``E[S_2(tau^2 v^s/v)] < S_2(tau^2)``. The dominant source is the randomness of the
attention weights of the layers below, averaged over only ``H`` heads: with large logits
a row of layer 0 may put its weight on one key or spread it, and whether keys 1 and 2 of
layer 1 nearly coincide depends on it (d = 64, 2 heads, tau^2 = 2.6: the per-network
correlation of keys 1 and 2 at layer 1 has a standard deviation 0.31 about its mean 0.56).

Model (the next order of the closure; a second-moment recursion for one number per row):
the per-network spread of the stream's keys ``k <= m`` is ``v_m (1 + delta_m)`` with
relative variance ``kappa_m = E[delta_m^2]``; the softmax rows average over
``W = 1 + delta`` taken Gamma-distributed with that mean and variance (`row_averages`).

* Entry: ``kappa = 0`` (the embeddings' own finite-d fluctuation is in the first layer's exact law).
* Attention write (`attention_spread_rel_var`): for one head, with the values' per-key
  parts of equal norm and orthogonal (their shared part cancels from a spread) and rows
  independent given the keys, the write's spread is ``v_in Q_m/(m-1)`` with
  ``Q_m = (1 - 1/m) sum_{k<=m} S_k - (1/m) sum_{k != k'} P_kk'``, ``S_k = sum_j a_kj^2``,
  ``P_kk' = sum_j a_kj a_k'j``. Exchangeability (``E[a_kj] = 1/k``) makes every
  covariance between different terms vanish except those of pairs sharing their larger
  row, which gives

      E[Q_m]   = (1 - 1/m) sum_k S_2(k) - (2/m) sum_k (k - 1)/k
      Var[Q_m] = (1 - 1/m)^2 sum_k Var(S_k)
                 + (4/m^2) sum_{k=2}^m [c_k (2(k-1) - 2 H_{k-1} - (k-1)(k-2)/k) + sum_{j<k} Var(P_jk)],
      c_k = (k S_2(k) - 1)/(k (k - 1)),
      Var(P_jk) = S_2(j) S_2(k)/k + (1 - S_2(j))(1 - S_2(k))/(k (k-1)) - 1/k^2,

  with ``Var(S_k) = E[(sum a^2)^2] - S_2(k)^2`` from the row law (`theory._row_law`).
  The heads are independent given the input: the write's own relative variance is
  ``Var[Q_m]/(H E[Q_m]^2)``; its part proportional to the input's spread fluctuates
  with the stream (``kappa_in``).
* Residual (`combine`): ``v' = v(1 + delta) + w (1 + delta)(1 + delta_own)``, so
  ``kappa' = (1 + (w/(v + w))^2 kappa_own)(1 + kappa) - 1`` (independent parts).
* MLP write and LayerNorm: the spread of their output follows their input's (linearised),
  ``kappa`` unchanged.

Neglected: the values' own Wishart fluctuation through ``W_v``, ``W_o`` (relative
``O(1/d)``), correlations between rows through shared keys, the heterogeneity of the
per-key spreads, and the shape of the law of ``W`` beyond its variance.
"""

from __future__ import annotations

import numpy as np


def attention_spread_rel_var(s2: np.ndarray, s2sq: np.ndarray, n_heads: int) -> np.ndarray:
    """``kappa_own(m)``: the relative variance of one attention write's key spread (module docstring)."""
    T = s2.size
    k = np.arange(1, T + 1, dtype=float)
    var_s = np.maximum(s2sq - s2 * s2, 0.0)
    var_s[0] = 0.0
    harmonic_before = np.concatenate([[0.0], np.cumsum(1.0 / k)[:-1]])  # H_{k-1}
    s2_before = np.concatenate([[0.0], np.cumsum(s2)[:-1]])  # sum_{j<k} S_2(j)
    c = np.zeros(T)
    c[1:] = (k[1:] * s2[1:] - 1.0) / (k[1:] * (k[1:] - 1.0))
    # pairs (j, j'), j != j' < k, sharing their larger row k: c_k (min(j, j')/(j j') - 1/k)
    inner = 2.0 * (k - 1.0) - 2.0 * harmonic_before - (k - 1.0) * (k - 2.0) / k
    # Var(P_jk) = S_j S_k/k + (1 - S_j)(1 - S_k)/(k(k-1)) - 1/k^2, summed over j < k
    own = np.zeros(T)
    km = k[1:]
    own[1:] = (s2[1:] / km * s2_before[1:] + (1.0 - s2[1:]) / (km * (km - 1.0)) * ((km - 1.0) - s2_before[1:])
               - (km - 1.0) / km**2)
    mean_q = (1.0 - 1.0 / k) * np.cumsum(s2) - (2.0 / k) * np.cumsum((k - 1.0) / k)
    var_q = (1.0 - 1.0 / k) ** 2 * np.cumsum(var_s) + (4.0 / k**2) * np.cumsum(c * inner + own)
    kappa = np.zeros(T)
    ok = mean_q > 0
    kappa[ok] = np.maximum(var_q[ok], 0.0) / (n_heads * mean_q[ok] ** 2)
    kappa[0] = 0.0
    return kappa


def combine(kappa: np.ndarray, v: np.ndarray, w: np.ndarray, kappa_own: np.ndarray) -> np.ndarray:
    """The stream's ``kappa`` after adding a write of spread ``w`` (own part ``kappa_own``) to spread ``v``."""
    total = v + w
    share = np.divide(w, total, out=np.zeros_like(total), where=total > 0)
    return (1.0 + share**2 * kappa_own) * (1.0 + kappa) - 1.0


__all__ = ["attention_spread_rel_var", "combine"]
