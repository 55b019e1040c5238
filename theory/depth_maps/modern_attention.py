"""Depth map of attention in modern blocks: RMSNorm keys, QK-norm, RoPE, ALiBi, temperature, GQA.

The attention sublayer's options (`theory.block`) say what the layer does; this map is the
kernel recursion of `theory.depth_maps.attention` with each variant's law
(`theory._modern`) in the softmax rows::

    A[m, n] = w_m^T E w_n                                               m != n
    A[m, m] = (1 - g_m) w_m^T E w_m + (l_m + g_m) sum_k w_mk^2 E[k, k] + kappa^2 cbar_m v_m Xi_m / D

with ``w_m`` the mean weights of row m (``1/m`` unless ALiBi), ``1 + l_m = S_2(m)/|w_m|^2`` and
``1 - g_m = (1 - S_2(m))/(1 - |w_m|^2)`` (second moments ``E[a_k^2] = w_k^2(1 + l)``,
``E[a_k a_k'] = w_k w_k'(1 - g)``: exact for exchangeable keys, where it is the NoPE map's
``U + diag(v (S_2 - 1/m))``), ``v_m`` the keys' spread (`key_spread`), ``D`` the normalised
keys' sphere (``d - 1`` after LayerNorm, ``d`` after RMSNorm). The row law's inputs:

* logit variance of row m: ``tau_m^2 = s^2 sigma_q^2 sigma_k^2 d_head d^2 nu_1(m) v^L_m tau(m-1)^2``,
  ``v^L`` the spread of the kernel the logits see (``E`` for NoPE/ALiBi, ``E[n,n'] c(n - n')``
  under RoPE); under QK-norm ``tau_m^2 = s^2 d_head r_q^2(m) r_k^2 (v^L_m/nu_1) tau(m-1)^2`` with
  the cosine key law on ``S^{d_head-1}`` and the coupling factor ``kappa^2`` (`theory._modern`);
* ALiBi: per head, the offsets ``-slope_h (m - k)`` (`theory._modern.alibi_rows`); the taps
  are averaged over heads;
* GQA changes no second moment here (the module docstring of `theory._modern`).

Levels: exact at layer 0 where the NoPE map is (eps = 0) for RMSNorm and the temperature;
QK-norm at layer 0 replaces the row's ``chi^2_D/D`` factor by a Gamma factor of mean 1 that
multiplies the logits (error ``O(1/D)`` of the cosine's shape); RoPE at layer 0 averages
``W_k W_k^T`` over the rotated query directions (error ``O(sqrt(d_head/d)/D)`` in the
coupling). Leading level: uniform attention (ALiBi: the softmax of the biases alone).
"""

from __future__ import annotations

import numpy as np

from .. import _modern
from .._domain import check_logit_variance
from .._kernel_maps import key_spread, uniform_average
from .._result import Level
from ..block import Sublayer
from ..quantities import logit_scale_squared
from ._state import Layer, Stream
from .attention import put_projections
from .layernorm import opening_label


def is_modern(sub: Sublayer, spec) -> bool:
    """Whether a layer's attention needs this map (else the NoPE map of `theory.depth_maps.attention`)."""
    o = sub.options
    return (o.get("positional", "none") != "none" or bool(o.get("qk_norm")) or o.get("temperature") is not None
            or getattr(spec, "normalization", "layernorm") != "layernorm")


def sphere_dim(spec) -> int:
    """``D``: LayerNorm keys live on the sphere of the (d-1)-subspace orthogonal to ones, RMSNorm's on all d."""
    d = int(spec.d_model)
    return d - 1 if getattr(spec, "normalization", "layernorm") == "layernorm" else d


def temperature_factors(sub: Sublayer, T: int) -> np.ndarray:
    """``tau(m - 1)`` per row m = 1..T (1 without a temperature)."""
    temp = sub.options.get("temperature")
    return np.ones(T) if temp is None else np.asarray(temp.factors(T), dtype=float)


def second_moment_matrix(W: np.ndarray, s2: np.ndarray, E: np.ndarray) -> np.ndarray:
    """``sum_kk' E[a_mk a_nk'] E[k, k']`` with the second moments of the module docstring."""
    A = W @ E @ W.T
    w2 = (W * W).sum(axis=1)
    diag_E = (W * W) @ np.diag(E)
    one_minus_g = np.where(w2 < 1 - 1e-15, (1 - s2) / np.maximum(1 - w2, 1e-300), 1.0)
    lam = s2 / np.maximum(w2, 1e-300) - 1.0
    gam = 1.0 - one_minus_g
    A[np.diag_indices_from(A)] = one_minus_g * np.diag(A) + (lam + gam) * diag_E
    return A


def _rows(sub: Sublayer, stream: Stream, at: Layer):
    """Per head: ``(S_2, Xi, W)`` of the rows (W None for uniform mean weights); and the coupling factor."""
    spec, E = at.spec, stream.E
    T, d, d_head = E.shape[0], at.d, int(spec.d_head)
    D = sphere_dim(spec)
    o = sub.options
    scheme, qk = o.get("positional", "none"), bool(o.get("qk_norm"))
    scale2 = logit_scale_squared(d_head, spec.attn_scale)
    sq, sk = float(spec.sigma_q), float(spec.sigma_k)
    nu1 = np.diag(E).copy()
    U = uniform_average(E)
    if scheme == "rope":
        c = _modern.rope_mean_cosine(T, d_head, float(o.get("rope_theta", 10000.0)))
        EL = _modern.rope_logit_kernel(E, c)
        spread_l = key_spread(EL)  # only the diagonal of its uniform average
        cbar = _modern.rope_pair_mean(c)
        shared = _modern.rope_scale_sharing(T, d_head, float(o.get("rope_theta", 10000.0)))
    else:
        spread_l, cbar, shared = key_spread(E, U), np.ones(T), None
    temp2 = temperature_factors(sub, T) ** 2
    if qk:
        eps = float(o.get("qk_norm_eps", 0.0)) if at.best else 0.0
        rq2 = _modern.qk_norm_radius2(sq**2 * d * nu1, d_head, eps)
        rk2 = np.cumsum(_modern.qk_norm_radius2(sk**2 * d * nu1, d_head, eps)) / np.arange(1, T + 1)
        nu1_keys = np.cumsum(nu1) / np.arange(1, T + 1)
        tau2 = scale2 * d_head * rq2 * rk2 * spread_l / np.maximum(nu1_keys, 1e-300) * temp2
        _modern.qk_norm_key_dim(d_head)  # validates d_head >= 2
        (key_dim, mix_dof), query_norm = _modern.qk_norm_row_law(d_head, D), False
        kappa2 = _modern.qk_norm_coupling_factor(d_head)
    else:
        tau2 = scale2 * sq**2 * sk**2 * d_head * d**2 * nu1 * spread_l * temp2
        key_dim, mix_dof, query_norm, kappa2 = D, d_head, True, 1.0
    if not qk:  # QK-norm's logits are bounded, |l| <= s d_head tau_T(m): the quadrature resolves them
        check_logit_variance(float(tau2[1:].max()) if T > 1 else 0.0, at.layer, mix_dof, key_dim)
    at.say(f"layer {at.layer}: effective logit variance {tau2[1:].min():.4g}..{tau2[1:].max():.4g}")
    heads = []
    if scheme == "alibi":
        mix = (d_head, D) if query_norm else (D,)
        for slope in _modern.alibi_slopes(int(spec.n_heads)):
            heads.append(_modern.alibi_rows(tau2, slope, key_dim, mix))
    else:
        s2, xi = _modern.single_group_rows(tau2, key_dim, mix_dof, query_norm, shared)
        heads.append((s2, xi, None))
    return heads, kappa2 * cbar, U


def modern_attention(sub: Sublayer, stream: Stream, at: Layer) -> None:
    """``h = W_o z`` for the layer's variant: the attention taps from ``E`` and the branch kernel ``K_attn``."""
    spec, E, nu2, pos, zero, d = at.spec, stream.E, stream.nu2, at.pos, at.zero, at.d
    T, d_head, D = E.shape[0], int(spec.d_head), sphere_dim(spec)
    o = sub.options
    scheme, qk = o.get("positional", "none"), bool(o.get("qk_norm"))
    scale2 = logit_scale_squared(d_head, spec.attn_scale)
    sq, sk, sv, so = float(spec.sigma_q), float(spec.sigma_k), float(spec.sigma_v), float(spec.sigma_o_effective)
    nu1 = np.diag(E).copy()
    level, error, assumptions = opening_label(at)
    put_projections(at, nu1, (level, error, assumptions))
    temp2 = temperature_factors(sub, T) ** 2
    # logits pooled over keys n <= m (the temperature scales row m; ALiBi adds its biases)
    if qk:
        eps = float(o.get("qk_norm_eps", 0.0)) if at.best else 0.0
        rq2 = _modern.qk_norm_radius2(sq**2 * d * nu1, d_head, eps)
        rk2 = np.cumsum(_modern.qk_norm_radius2(sk**2 * d * nu1, d_head, eps)) / pos
        score_var = scale2 * d_head * rq2 * rk2 * temp2  # s^2 d_head^2 E[cos^2] = s^2 d_head, any input
    else:
        off = np.cumsum(np.concatenate([[0.0], nu1[:-1]])) * nu1
        score_var = scale2 * sq**2 * sk**2 * d_head * d**2 * (off + nu2) / pos * temp2
    score_mean = zero
    if scheme == "alibi":
        slopes = np.asarray(_modern.alibi_slopes(int(spec.n_heads)))
        score_mean = -slopes.mean() * (pos - 1) / 2
        second = score_var + (slopes**2).mean() * (pos - 1) * (2 * pos - 1) / 6
        score_var = second - score_mean**2
    at.put("attn.hook_attn_scores", level, error, assumptions, mean=score_mean, var=score_var)

    closure = at.closure
    spread = key_spread(E)
    if at.best:
        heads, coupling_factor, U = _rows(sub, stream, at)
        A = np.zeros((T, T))
        s2_mean = np.zeros(T)
        for s2, xi, W in heads:
            if W is None:
                Ah = U.copy()
                Ah[np.diag_indices(T)] += spread * (s2 - 1.0 / pos)
            else:
                Ah = second_moment_matrix(W, s2, E)
            Ah[np.diag_indices(T)] += spread * coupling_factor * xi / D
            A += Ah / len(heads)
            s2_mean += s2 / len(heads)
        att_assume = _assumptions(sub, at)
    else:
        if scheme == "alibi":
            A, s2_mean = np.zeros((T, T)), np.zeros(T)
            slopes = _modern.alibi_slopes(int(spec.n_heads))
            for slope in slopes:
                W = _modern.alibi_weights(T, slope)
                A += W @ E @ W.T / len(slopes)
                s2_mean += (W * W).sum(axis=1) / len(slopes)
            att_assume = closure + ("logits' random part neglected: the softmax of the ALiBi biases",)
        else:
            A, s2_mean = uniform_average(E), 1.0 / pos
            att_assume = closure + ("uniform attention a_mn = 1/m",)
    exact = at.exact_here and not qk and scheme != "rope"
    err_att = ("exact (quadrature, relative < 1e-6)" if exact else
               "layer 0: O(1/D) (QK-norm cosine law, RoPE coupling); deeper: measured per layer by verify" if at.best else
               "relative O(tau^2) at small m, e^{tau^2} - 1 at large m")
    a_lvl = Level.EXACT if exact else Level.APPROXIMATE
    at.put("attn.hook_pattern", a_lvl, err_att, att_assume, mean=1.0 / pos, sum_sq=s2_mean)
    at.put("attn.hook_z", a_lvl, err_att, att_assume, mean=zero, var=sv**2 * d * np.diag(A))
    K_attn = so**2 * sv**2 * d**2 * A
    at.put("hook_attn_out", a_lvl, err_att, att_assume, mean=zero, var=np.diag(K_attn).copy())
    stream.branch = K_attn
    # the per-network spread fluctuation (`_fluctuation`) is not modelled for these variants: the stream's is kept
    stream.branch_spread_rel_var = None
    stream.branch_kind = sub.kind
    stream.branch_label = (a_lvl, err_att, att_assume)
    stream.block_assumptions = tuple(dict.fromkeys(stream.block_assumptions + att_assume))


def _assumptions(sub: Sublayer, at: Layer) -> tuple[str, ...]:
    o = sub.options
    out = at.closure + (("softmax rows: keys with the same spread about their centroid, treated as i.i.d.",
                         "off-diagonal attention terms from the mean weights (E[a_mk a_nk'] = w_mk w_nk', m != n)")
                        if not at.first else ("given the query side, keys i.i.d. (exact at layer 0)",))
    if o.get("qk_norm"):
        out += ("QK-norm: logit s d_head cos(q, k), cos on S^{d_head-1}; the projected query's chi^2_D/D "
                "factor multiplies the logit",)
    if o.get("positional") == "rope":
        out += ("RoPE: W_k W_k^T averaged over the rotated query directions (logit covariance E[n,n'] c(n-n'))",)
    if o.get("positional") == "alibi":
        out += ("ALiBi: E[a_k^2] = w_k^2 (1 + l), E[a_k a_k'] = w_k w_k' (1 - g) given S_2 and the mean weights",)
    return out


__all__ = ["modern_attention", "is_modern", "sphere_dim", "temperature_factors", "second_moment_matrix", "attention_of_layer"]


def attention_of_layer(nope_map):
    """The attention entry of `DEPTH_MAPS`: the NoPE map for a NoPE LayerNorm layer, this map otherwise."""
    def attention(sub: Sublayer, stream: Stream, at: Layer) -> None:
        if is_modern(sub, at.spec):
            return modern_attention(sub, stream, at)
        return nope_map(sub, stream, at)
    attention.__doc__ = nope_map.__doc__
    attention.__name__ = "attention"
    return attention
