"""The per-sample fluctuation of the stream's Gram matrix, carried through depth (the 1/D_eff term).

The closure (`_state.CLOSURE`) treats the residual stream of one sample (one network, one
input; annealed measure) as ``d`` i.i.d. Gaussian channels with the mean kernel ``K``, so its
Gram matrix ``G = x x^T/d`` over positions is Wishart, ``Cov(G_ij, G_kl) = (K_ik K_jl + K_il K_jk)/D``
(``D``: the norm's sphere, d - 1 after LayerNorm, d after RMSNorm). The real stream fluctuates
more: a write's Gram is that of a projection of a *random* Gram (``W_v`` has ``n_kv d_head``
outputs, shared by the ``H/n_kv`` heads of a group; the MLP has ``d_mlp`` hidden units), and
each write inherits the fluctuation of the input it averages, coherently with the stream's
own. A norm is a nonlinear map of ``G``, so its annealed mean cosine has a second-order
(Jensen) term in that covariance, which the closure gets wrong. Here ``Cov(G)`` is carried as
a short list of Wishart-form components::

    Cov(G_ij, G_kl) = sum_c q_c (K^c_ik K^c_jl + K^c_il K^c_jk)         (q_c may be negative)

* entry: ``(1/D, K)`` (the embedding is exactly i.i.d. Gaussian);
* each residual write ``K_old -> K_new = K_old + K_w`` adds its closure part, ``(1/D, K_new)``
  and ``(-1/D, K_old)`` (with nothing inherited these telescope to the closure's ``(1/D, K)``),
  and its own sources: attention ``(1/(H d_head), K_w)`` (the values' Wishart over ``W_v``) and,
  with grouped heads, ``((H/n_kv - 1)/(H d_head), K_U)`` (heads of a group average the same
  values; ``K_U`` the write at uniform attention, the cross-head terms); MLP ``(1/d_mlp, K_w)``;
* inheritance (linear response, coherent): a norm maps a component ``k`` (in correlation units,
  ``k = K^c/sqrt(K_mm K_nn)``) to ``k - (rho/2)(k_mm + k_nn)`` off the diagonal, 0 on it
  (``delta cos = delta g_mn - rho (delta g_mm + delta g_nn)/2``; exact for a component common
  to all positions, which is what the causal average builds; the cosines' own 1/D noise of
  independent positions is the closure's); attention maps it by the uniform causal average
  (``U``), the MLP by its kernel map's slope ``dK_mlp/dE`` (Mehler); the write's image is added
  to the component it came from.

The norm's mean cosine, by the delta method (``r = g_mn/sqrt(g_mm g_nn)``, second order)::

    E[r] = rho + sum_c q_c [ (3/4) rho (k_mm^2 + k_nn^2) + (1/2) rho k_mn^2 - k_mn (k_mm + k_nn) ]

(for ``k = rho`` the closure's ``-rho (1 - rho^2)/(2D)``, which `theory._kernel_maps.layernorm_kernel`
already has to all orders; this module adds the difference), and its variance
``Var(r) = sum_c q_c [k_mm k_nn + k_mn^2 + rho^2 (k_mm^2 + k_nn^2 + 2 k_mn^2)/2 - 2 rho k_mn (k_mm + k_nn)]``
(``(1 - rho^2)^2/D`` for the closure; used by the SwiGLU map). After each write the list is
compressed to at most `MAX_COMPONENTS` terms (the exact eigen-decomposition of the 4-tensor on the
span of the components, smallest dropped).

Level and error: approximate, the next order of the closure: relative ``O(1/D_eff)`` with
``D_eff`` the smallest effective dimension above (``n_kv d_head``), error ``O(D_eff^-2)`` and the
linear-response inheritance (shapes beyond a common component). Neglected: the attention
weights' own per-network randomness (the keys' spread, `_fluctuation`), the MLP's non-Gaussian
fourth moments (Wishart form for its hidden units), the radius (eps) fluctuation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._kernel_maps import uniform_average

# The most components kept after a write (rank of the 4-tensor kept; the dropped weights are the smallest).
MAX_COMPONENTS = 8
# Relative size below which a component is dropped.
_DROP = 1e-10
# The term is carried where the smallest effective dimension is at most this (its relative size, about
# 2/D_eff per block, is then at least ~1.5%); wider models keep the closure (the size is inside the declared
# 1/d per block), which also keeps the recursion's cost at wide models unchanged (measured: +3% at T = 64,
# 2.7x at d = 256, T = 256, where it was carried).
MAX_EFFECTIVE_DIM = 128
# ... and at least this: below, the 1/D_eff expansion is not small (a cosine's excess ~ q_c ~ 1/D_eff).
MIN_EFFECTIVE_DIM = 16
# Mehler terms of the MLP's slope (stops earlier when r_max^k is negligible).
SLOPE_ORDER = 60


@dataclass
class Component:
    """One Wishart-form component: weight ``q`` and kernel ``K`` (T x T, the stream's units)."""

    q: float
    K: np.ndarray


def effective_dim(spec) -> int:
    """``D_eff``: the smallest dimension a write's Gram is drawn over (``n_kv d_head``, ``d_mlp``, ``d``)."""
    dims = [int(spec.d_model), int(spec.kv_heads) * int(spec.d_head)]
    if not spec.attn_only:
        dims.append(int(spec.mlp_width))
    return min(dims)


def carried(spec) -> bool:
    """Whether the recursion carries the Gram components (`MAX_EFFECTIVE_DIM`)."""
    return MIN_EFFECTIVE_DIM <= effective_dim(spec) <= MAX_EFFECTIVE_DIM


def entry(K: np.ndarray, D: int) -> list[Component]:
    """The embedding: exactly the closure's Wishart, ``(1/D, K)``."""
    return [Component(1.0 / D, K.copy())]


def _units(K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    s = np.sqrt(np.maximum(np.diag(K), 1e-300))
    scale = np.outer(s, s)
    return scale, K / scale


def excess(K: np.ndarray, comps: list[Component], D: int) -> tuple[np.ndarray, np.ndarray]:
    """``(dE[r], dVar[r])``: the components' mean and variance of the cosine minus the closure's.

    ``K``: the stream's mean kernel; zero on the diagonal (T x T each).
    """
    scale, rho = _units(K)
    mean, var = np.zeros_like(K), np.zeros_like(K)
    for c in comps:
        k = c.K / scale
        kd = np.diag(k)
        sq = kd[:, None] ** 2 + kd[None, :] ** 2
        both = kd[:, None] + kd[None, :]
        mean += c.q * (0.75 * rho * sq + 0.5 * rho * k * k - k * both)
        var += c.q * (np.outer(kd, kd) + k * k + 0.5 * rho * rho * (sq + 2 * k * k) - 2 * rho * k * both)
    mean -= -rho * (1.0 - rho * rho) / (2.0 * D)
    var -= (1.0 - rho * rho) ** 2 / D
    np.fill_diagonal(mean, 0.0)
    np.fill_diagonal(var, 0.0)
    return mean, var


def normalised_images(K: np.ndarray, comps: list[Component], nu1: np.ndarray) -> list[np.ndarray]:
    """Each component's image after the norm (linear response), in the normalised kernel's units."""
    scale, rho = _units(K)
    out_scale = np.sqrt(np.outer(nu1, nu1))
    images = []
    for c in comps:
        k = c.K / scale
        kd = np.diag(k)
        e = (k - 0.5 * rho * (kd[:, None] + kd[None, :])) * out_scale
        np.fill_diagonal(e, 0.0)
        images.append(e)
    return images


def attention_write(images: list[np.ndarray], K_w: np.ndarray, E: np.ndarray, gain: float,
                    n_heads: int, kv_heads: int, d_head: int) -> tuple[list[np.ndarray], list[Component]]:
    """An attention write's inherited parts (``gain U(image)``, per stream component) and own sources.

    ``K_w`` the write's kernel, ``gain = sigma_o^2 sigma_v^2 d^2``, ``E`` the normalised kernel.
    """
    inherited = [gain * uniform_average(e) for e in images]
    own = [Component(1.0 / (n_heads * d_head), K_w.copy())]
    group = n_heads // kv_heads
    if group > 1:
        own.append(Component((group - 1.0) / (n_heads * d_head), gain * uniform_average(E)))
    return inherited, own


def mlp_slope(b: np.ndarray, corr: np.ndarray, shift: int) -> np.ndarray:
    """``sum_k (k + shift) b_k(m) b_k(n) r^(k + shift - 1)`` (T x T): the Mehler series' slope in r.

    ``shift = 0``: ``E[phi(u_m) phi(u_n)]``; ``shift = 1``: SwiGLU's ``sum_k b_k b_k r^(k+1)``.
    """
    r = corr.copy()
    np.fill_diagonal(r, 0.0)
    r_max = float(np.max(np.abs(r))) if r.size > 1 else 0.0
    out = np.zeros_like(r)
    power = np.ones_like(r)  # r^(k + shift - 1)
    start = 1 - shift  # the k = 0 term has no slope when shift = 0
    for k in range(start, min(b.shape[1], SLOPE_ORDER + 1)):
        out += (k + shift) * np.outer(b[:, k], b[:, k]) * power
        power = power * r
        if r_max ** (k + shift) < 1e-12:
            break
    return out


def mlp_write(images: list[np.ndarray], slope: np.ndarray, K_w: np.ndarray, d_mlp: int) -> tuple[list[np.ndarray], list[Component]]:
    """An MLP write: inherited ``slope * image`` (elementwise, ``slope = dK_mlp/dE``), own ``(1/d_mlp, K_w)``."""
    return [slope * e for e in images], [Component(1.0 / d_mlp, K_w.copy())]


def add_write(comps: list[Component], inherited: list[np.ndarray], own: list[Component],
              K_old: np.ndarray, K_new: np.ndarray, D: int) -> list[Component]:
    """The stream's components after ``K_new = K_old + K_w``: inherited parts added, sources appended."""
    out = [Component(c.q, c.K + part) for c, part in zip(comps, inherited)]
    out += own + [Component(1.0 / D, K_new.copy()), Component(-1.0 / D, K_old.copy())]
    return compress(out)


def compress(comps: list[Component], keep: int = MAX_COMPONENTS) -> list[Component]:
    """The same 4-tensor ``sum_c q_c K^c (x) K^c`` on fewer, orthogonal components (largest |weight| kept)."""
    if not comps:
        return comps
    T = comps[0].K.shape[0]
    V = np.stack([c.K.ravel() for c in comps])  # (n, T^2)
    q = np.array([c.q for c in comps])
    gram = V @ V.T
    lam, P = np.linalg.eigh(gram)
    ok = lam > 1e-13 * max(float(lam.max()), 1e-300)
    lam, P = lam[ok], P[:, ok]
    if lam.size == 0:  # every kernel zero (a zero input): nothing fluctuates
        return []
    half = np.sqrt(lam)
    M = (half[:, None] * (P.T * q) @ P) * half[None, :]
    mu, S = np.linalg.eigh(0.5 * (M + M.T))
    order = np.argsort(-np.abs(mu))
    mu, S = mu[order], S[:, order]
    big = np.abs(mu) > _DROP * max(float(np.abs(mu).max()), 1e-300)
    mu, S = mu[big][:keep], S[:, big][:, :keep]
    basis = (P / half[None, :]) @ S  # (n, r): u_j = V^T basis[:, j], unit Frobenius norm
    U = basis.T @ V
    return [Component(float(m), u.reshape(T, T)) for m, u in zip(mu, U)]


__all__ = ["Component", "MAX_COMPONENTS", "MAX_EFFECTIVE_DIM", "MIN_EFFECTIVE_DIM", "effective_dim", "carried", "entry", "excess", "normalised_images", "attention_write",
           "SLOPE_ORDER", "mlp_slope", "mlp_write", "add_write", "compress"]
