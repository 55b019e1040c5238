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
* inheritance (coherent): a norm carries a component by the congruence at its mean radii,
  ``k = K^c sqrt(nu_m nu_n/(K_mm K_nn))`` (`normalised_images`; it neglects the radii's own
  fluctuation, which overstates the inherited noise by about ``1/(1 - rho)^2`` at cosine rho);
  attention maps it by the uniform causal average (``U``), the MLP by its kernel map's slope
  ``dK_mlp/dE`` (Mehler); the write's image is added to the component it came from;
* the softmax row reads the components as the keys' effective dimension (`effective_key_dim`:
  the Wishart dimension that gives the keys' centred Gram its pair variance), the dimension of
  the sphere of its row law (`attention.rows_at_key_dim`).

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
radii's fluctuation in the inheritance (above). Neglected: the attention
weights' own per-network randomness (the keys' spread, `_fluctuation`), the MLP's non-Gaussian
fourth moments (Wishart form for its hidden units). The components' diagonal also widens the norm's
radius law where eps > 0 (`theory.depth_maps.layernorm.radial_law`).
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


def normalised_images(K: np.ndarray, comps: list[Component], nu1: np.ndarray, *, radii: bool) -> list[np.ndarray]:
    """Each component's kernel carried through the norm at its mean radii, in the normalised kernel's
    units: the congruence ``K^c_mn sqrt(nu_m nu_n / (K_mm K_nn))``; ``radii=False`` sets its diagonal to 0.

    A norm divides each position by its radius; at the mean radii that is a congruence of the
    channel vectors, so a Wishart-form family ``(q, K^c)`` stays one, of kernel ``D_r K^c D_r``
    (``D_r = diag(sqrt(nu/K))``), and the branch (its ``W_v`` or ``W_in``) inherits the input's
    Gram noise coherently. But a Wishart-form family cannot carry the pair noise of the normalised
    Gram without the radial noise that goes with it (``Var g_mn = q (k_mm k_nn + k_mn^2)`` comes with
    ``Var g_mm = 2 q k_mm^2``), and the norm has none (``g_mm = nu_m`` exactly). Measured (d = 64,
    4 heads, 4 layers, 3000 networks, the stream entering layers 1-3, in units of 1/D):
    ``Var g_mm`` stays 2.1-2.3 (the closure's 2) while ``Var g_mn`` grows 2.0 -> 2.5 -> 2.8; the
    congruence gives 3.9-7.4 and 1.9-4.4. So the recursion carries two views of the same
    components (`theory.depth_maps._state.Stream`): ``radii=True`` for the keys' centred pair
    variance (`effective_key_dim`, the pair noise), ``radii=False`` for the norm's mean cosine
    (`excess`, where the radial noise enters through ``Cov(g_mn, g_mm)``). (The kernel's linear
    response, ``k - rho (k_mm + k_nn)/2`` off the diagonal, is 0 for the closure's ``(1/D, K)``:
    the branches would inherit none of the input's cosine noise.)

    Neglected in both: the radii's own fluctuation in the off-diagonal (Pearson's correction,
    ``(1 - rho)^2`` on the covariance of two disjoint pairs at uniform cosine rho).
    """
    scale, _ = _units(K)
    out_scale = np.sqrt(np.outer(nu1, nu1))
    images = [c.K / scale * out_scale for c in comps]
    if not radii:
        for e in images:
            np.fill_diagonal(e, 0.0)
    return images


def centred_pair_variance(A: np.ndarray) -> np.ndarray:
    """``P_A(m)`` for m = 1..T: the mean over key pairs ``a != b <= m`` of ``B_aa B_bb + B_ab^2``,
    ``B = C_m A C_m`` the kernel of the keys ``<= m`` centred on their centroid (``C_m = I - 11^T/m``).

    A Wishart-form component ``(q, A)`` gives the centred Gram entries of a pair the variance
    ``q (B_aa B_bb + B_ab^2)``. With ``r_a(m) = sum_{b<=m} A_ab``, ``s = sum_a r_a``::

        ||B||^2 = sum A_ab^2 - (2/m) sum_a r_a^2 + s^2/m^2,   sum_a B_aa = tr A - s/m,
        sum_a B_aa^2 = sum A_aa^2 - (4/m) sum A_aa r_a + (4/m^2) sum r_a^2 + (2s/m^2) tr A - 3 s^2/m^3

    (sums over ``a, b <= m``), all prefix sums: O(T^2) for every m at once. ``P(1) = 0`` (no pair).
    Tests hold it against the m x m centring done directly.
    """
    T = A.shape[0]
    m = np.arange(1, T + 1, dtype=float)
    upto = np.triu(np.ones((T, T), dtype=bool))  # [a, m]: a <= m
    R = np.cumsum(A, axis=1)  # r_a(m) = R[a, m]
    diag = np.diag(A)
    s = np.where(upto, R, 0.0).sum(0)
    r2 = np.where(upto, R * R, 0.0).sum(0)
    dr = np.where(upto, diag[:, None] * R, 0.0).sum(0)
    tr, d2 = np.cumsum(diag), np.cumsum(diag * diag)
    a2 = np.cumsum(2.0 * np.where(upto, A * A, 0.0).sum(0) - diag * diag)  # sum_{a,b<=m} A_ab^2
    frob = a2 - 2.0 * r2 / m + s * s / m**2
    sum_b = tr - s / m
    sum_b2 = d2 - 4.0 * dr / m + 4.0 * r2 / m**2 + 2.0 * s * tr / m**2 - 3.0 * s * s / m**3
    pairs = (sum_b * sum_b - sum_b2) + (frob - sum_b2)
    out = np.zeros(T)
    out[1:] = pairs[1:] / (m[1:] * (m[1:] - 1.0))
    return out


def effective_key_dim(K: np.ndarray, comps: list[Component], nu1: np.ndarray, D: int) -> np.ndarray:
    """``D_eff(m)``: the dimension whose Wishart gives the keys ``<= m`` their centred pair variance (T,).

    The softmax row sees one sample's keys; in the closure their Gram is Wishart over the norm's
    sphere (``D``), which `theory._row_law` carries exactly (sphere coordinates, ``chi^2_D``).
    The components carry more: ``1/D_eff(m) = sum_c q_c P_{k_c}(m) / P_E(m)`` with ``k_c`` the
    images (`normalised_images`), ``P`` the centred pair variance (`centred_pair_variance`) and
    ``E`` the congruence image of the mean kernel (the closure's ``(1/D, K)`` gives ``D``).
    Clipped to ``[MIN_EFFECTIVE_DIM, D]``: a smaller excess than the closure's (negative weights
    outweighing) is not carried, and below `MIN_EFFECTIVE_DIM` the expansion is not small.
    """
    scale, _ = _units(K)
    P_E = centred_pair_variance(K / scale * np.sqrt(np.outer(nu1, nu1)))
    total = np.zeros(K.shape[0])
    for c, k in zip(comps, normalised_images(K, comps, nu1, radii=True)):
        total += c.q * centred_pair_variance(k)
    inv = np.full(K.shape[0], 1.0 / D)
    ok = P_E > 0
    inv[ok] = np.maximum(total[ok] / P_E[ok], 1.0 / D)
    inv[0] = 1.0 / D
    return np.clip(1.0 / inv, MIN_EFFECTIVE_DIM, D)


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


__all__ = ["Component", "MAX_COMPONENTS", "MAX_EFFECTIVE_DIM", "MIN_EFFECTIVE_DIM", "effective_dim", "carried", "entry", "excess", "normalised_images", "centred_pair_variance", "effective_key_dim", "attention_write",
           "SLOPE_ORDER", "mlp_slope", "mlp_write", "add_write", "compress"]
