"""The quenched theory: how the per-token scalar ``s_m = log(|h_m|^2/d)`` fluctuates inside one frozen network.

`theory.depth` is *annealed*: it averages over weights and inputs together. A probe reads
one frozen network, where only the inputs vary. For each probed tap (``attn.hook_z``,
``hook_attn_out``, ``hook_resid_mid``, ``hook_mlp_out``, ``hook_resid_post``) and layer
this module gives the law of ``s_m`` over inputs within one network -- its mean and its
within-network variance as functions of m, d, the sigmas and the layer -- and how the
per-position mean varies from network to network.

The model (assumptions, all stated):

1. *Fixed matrices, random inputs.* Within a network, a tap is a fixed Gaussian matrix
   chain applied to input-random vectors; its within-network covariance ``C`` (over
   inputs) is summarised by the scale-free ``gamma = tr(C^2) / tr(C)^2`` (the inverse
   effective number of channels; ``gamma = 1/n`` for an isotropic n-dim vector).
2. *A Gaussian matrix composes gamma* (Wick's theorem; derived symbolically in
   `chain_gamma_expr`): for ``W`` (n_out x n_in) with i.i.d. entries applied to ``C``,
   ``E tr((W C W^T)^2) = n_out tr(C)^2 + (n_out + n_out^2) tr(C^2)`` and
   ``E tr(W C W^T)^2 = n_out^2 tr(C)^2 + 2 n_out tr(C^2)``, so
   ``gamma_out = (1/n_out + (1 + 1/n_out) gamma_in) / (1 + 2 gamma_in / n_out)``.
   Two square factors from isotropic input (``W_o W_v`` at layer 0) give
   ``d gamma -> 3``: the second moment of the squared singular values of a product of two
   Ginibre matrices, the Fuss-Catalan number ``FC_2(2) = 3`` (`fuss_catalan`); one factor
   gives the Marchenko-Pastur 2. So the effective degrees of freedom of ``|h|^2`` are
   ``d/3`` at ``hook_attn_out`` and ``d/2`` at ``attn.hook_z``, not d.
3. *Relative variance over inputs.* ``|M x|^2`` for a Gaussian ``x`` with covariance
   ``C``: ``R = 2 gamma``. For one LayerNorm output (a point of the sphere of radius
   ``sqrt(n nu)``, n = d - 1 for LayerNorm, d for RMSNorm) the norm direction does not
   fluctuate: ``R_1 = 2 (gamma_M - 1/n) n / (n + 2)`` (exact for isotropic spheres;
   ``gamma_M`` the chain's gamma from isotropic input). An average of ``m_eff`` i.i.d.
   sphere points (causal attention with ``E sum a^2 = 1/m_eff``):
   ``R(m) = (R_1 + 2 (m_eff - 1) gamma) / m_eff`` (the cross terms ``e_n^T A e_n'`` are
   uncorrelated with the diagonal ones).
4. *Sums* (the residual writes) of free components with fractions ``f_c`` of the mean
   square: ``R = sum_c f_c^2 R_c + (2/n) sum_{a != b} f_a f_b`` and
   ``gamma = 1/n + sum_c f_c^2 (gamma_c - 1/n)``; the correlation of a token's embedding
   with its own LayerNorm output is neglected except in the network-to-network shift (6).
5. *The MLP* ``W_out phi(W_in e)`` on one sphere point: the within-network variance averaged
   over ``W_out`` (Wick) with the units' correlations by Mehler's expansion,
   ``R = Var(phi^2)/(d_mlp E[phi^2]^2) + (2/d)(1 - gamma_phi)`` (`_mlp`), moments by quadrature;
   its share ``f_0`` of the mean square is the same vector in every token.
6. *Network to network.* The per-position mean of ``s_m`` moves by the relative
   fluctuation of ``tr C`` (``Var tr(W C W^T) / E^2 = 2 gamma_in / n_out`` per factor,
   accumulated; ``6/d^2`` at layer-0 ``hook_attn_out``: a pure scale, the same at every m)
   and, at layer 0's residual, by ``2 x_m . h_m / d`` with ``E_x[x^T W_o W_v e] prop. tr(W_o W_v)``:
   relative sd ``2 sigma_e sigma_o sigma_v sqrt(nu) / (m V(m))``.
7. ``E s_m = log V(m) - R/2`` and ``Var s_m = R`` (delta method; the next order,
   ``2.5 R^2 - kappa_3``, is below 1/d relative), ``V(m)`` from `theory.depth`.

Regime: near-uniform attention. The input-dependence of the softmax weights enters only
through ``m_eff``; the fluctuation of ``sum_n a_mn^2`` over inputs (order ``tau^4/m`` for a
logit variance ``tau^2``) is neglected. With QK-norm (logits of order one) the measured
within-network spread at layer-0 ``hook_attn_out`` is 17% above this law (d = 128, docs/probe.md).

Exactness: layer 0's attention taps are asymptotic in d with O(1/d) relative error (the
per-network ``gamma`` fluctuates about its expectation by O(1/d)) and exact in m for
uniform attention; the residual, MLP and deeper taps are approximate (free components,
Gaussian channels, correlations across positions entering only through ``m_eff``).
tests/test_quenched.py holds layer 0 against many frozen networks.

Source: derived here (Wick pairings for Gaussian matrices; free probability for the
composition, Voiculescu; Fuss-Catalan moments of products of Ginibre matrices, Penson and
Zyczkowski, Phys. Rev. E 83, 061118 (2011)); issue 17.

>>> from theory import ModelSpec
>>> q = quenched_law(ModelSpec(d_model=128, n_heads=4, n_layers=1, seq_len=64))
>>> round(float(q.var("hook_attn_out", 0)[-1]) * 128, 1)  # -> 2 x 3 for large m
6.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Mapping

import numpy as np
import sympy as sp

from . import depth as _depth
from ._activations import activation_function
from .spec import ModelSpec
from .taps import tap_name

PROBED_TAPS = ("attn.hook_z", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")


# ---------------------------------------------------------------- symbolic pieces
@lru_cache(maxsize=1)
def chain_gamma_expr() -> tuple[sp.Expr, tuple[sp.Symbol, ...]]:
    """``gamma_out(n_out, n_in, gamma_in)`` derived from the Wick pairings of ``W C W^T``.

    ``tr((W C W^T)^2) = sum_{ij ab cd} W_ia C_ab W_jb W_jc C_cd W_id``; the three pairings
    of the four W's give ``n_out (tr C)^2`` (i=j, a=b, c=d), ``n_out tr C^2`` (i=j, a=c,
    b=d) and ``n_out^2 tr C^2`` (a=d, b=c); ``tr(W C W^T) = sum_i w_i^T C w_i`` has mean
    ``n_out tr C`` and variance ``2 n_out tr C^2``. Returns the expression and its symbols.
    """
    n_out, n_in, g = sp.symbols("n_out n_in gamma_in", positive=True)
    trC = sp.Symbol("trC", positive=True)
    trC2 = g * trC**2
    num = n_out * trC**2 + n_out * trC2 + n_out**2 * trC2
    den = n_out**2 * trC**2 + 2 * n_out * trC2
    return sp.simplify(num / den), (n_out, n_in, g)


@lru_cache(maxsize=1)
def _chain_gamma_fn():
    expr, syms = chain_gamma_expr()
    return sp.lambdify(syms, expr, modules="math")


def chain_gamma(n_out: float, n_in: float, gamma_in: float) -> float:
    """gamma of ``W C W^T`` for an i.i.d. Gaussian ``W`` (n_out x n_in) and ``gamma(C) = gamma_in``."""
    return float(_chain_gamma_fn()(float(n_out), float(n_in), float(gamma_in)))


def fuss_catalan(s: int, k: int) -> sp.Integer:
    """``FC_s(k) = binom((s+1) k, k) / (s k + 1)``: the k-th moment of the squared singular values
    of a product of s Ginibre matrices (normalised); ``FC_1(2) = 2``, ``FC_2(2) = 3``."""
    return sp.binomial((s + 1) * k, k) / (s * k + 1)


def sphere_relative_variance(gamma_matrix: float, n: float) -> float:
    """``Var(e^T A e) / E^2`` for e uniform on a sphere in n dims: ``2 (gamma - 1/n) n / (n + 2)``,
    from ``E (u^T A u)^2 = (tr(A)^2 + 2 tr(A^2)) / (n (n + 2))`` (u on the unit sphere)."""
    return 2.0 * (gamma_matrix - 1.0 / n) * n / (n + 2.0)


def averaged_relative_variance(m_eff: np.ndarray, r_one: float, gamma: float) -> np.ndarray:
    """``R(m) = (R_1 + 2 (m_eff - 1) gamma) / m_eff``: |M ebar|^2 with ebar the mean of m_eff sphere points."""
    m_eff = np.maximum(np.asarray(m_eff, dtype=float), 1.0)
    return (r_one + 2.0 * (m_eff - 1.0) * gamma) / m_eff


# ---------------------------------------------------------------- per-tap law
@dataclass(frozen=True)
class TapLaw:
    """Within-network law of ``s_m = log(|h_m|^2/d)`` at one tap (arrays over m = 1..T).

    ``level``: the annealed ``V(m) = E|h_m|^2/d`` (`theory.depth`); ``mean``: ``E s_m``;
    ``var``: the within-network ``Var s_m``; ``network_sd``: the network-to-network sd of the
    per-position mean of ``s_m``; ``gamma``: ``tr C^2/tr C^2`` of the within-network covariance.
    """

    level: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    network_sd: np.ndarray
    gamma: float


@dataclass(frozen=True)
class QuenchedLaw:
    """`TapLaw` per full tap name, for the probed taps of every layer (`quenched_law`)."""

    spec: ModelSpec
    taps: Mapping[str, TapLaw] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    def __getitem__(self, name: str) -> TapLaw:
        return self.taps[name]

    def law(self, tap: str, layer: int | None = None) -> TapLaw:
        name = tap_name(tap, layer)
        if name not in self.taps:
            raise KeyError(f"no quenched law for {name!r}; available: {', '.join(self.taps)}")
        return self.taps[name]

    def mean(self, tap: str, layer: int | None = None) -> np.ndarray:
        return self.law(tap, layer).mean

    def var(self, tap: str, layer: int | None = None) -> np.ndarray:
        return self.law(tap, layer).var

    def dof(self, tap: str, layer: int | None = None) -> np.ndarray:
        """Effective chi-square degrees of freedom ``2 / Var s_m``."""
        return 2.0 / self.law(tap, layer).var


@dataclass
class _Part:
    """A tap's within-network state: mean square V(m), R(m), gamma, network-to-network relative variance."""

    V: np.ndarray
    R: np.ndarray
    gamma: float
    nu: np.ndarray  # relative variance of the per-position mean square across networks


def _sum(parts: list[_Part], n: float, extra_nu: np.ndarray | None = None) -> _Part:
    """Free components added (a residual write), assumption 4."""
    V = sum(p.V for p in parts)
    f = [p.V / V for p in parts]
    R = sum(fi**2 * p.R for fi, p in zip(f, parts))
    for i in range(len(parts)):
        for j in range(len(parts)):
            if i != j:
                R = R + (2.0 / n) * f[i] * f[j]
    # gamma of a sum, at the position where the components are most mixed (gamma is a scalar summary)
    fbar = [float(np.mean(fi)) for fi in f]
    gamma = 1.0 / n + sum(fb**2 * (p.gamma - 1.0 / n) for fb, p in zip(fbar, parts))
    nu = sum(fi**2 * p.nu for fi, p in zip(f, parts))
    if extra_nu is not None:
        nu = nu + extra_nu
    return _Part(V, R, gamma, nu)


def _supported(spec: ModelSpec) -> str | None:
    if spec.is_symbolic:
        return "the quenched law is numeric; give numbers for every spec field"
    if getattr(spec, "mlp", "standard") != "standard":
        return f"mlp = {spec.mlp!r}: the quenched MLP split covers the standard W_out phi(W_in x) only"
    if spec.positional not in ("none",):
        return f"positional = {spec.positional!r}: theory covers NoPE (positional = 'none') only"
    if getattr(spec, "n_kv_heads", None) not in (None, spec.n_heads):
        return "grouped-query attention (n_kv_heads) is not covered by the quenched law"
    return None


def quenched_law(spec: ModelSpec, prediction=None, level: str = "best") -> QuenchedLaw:
    """The within-network law of ``s_m`` at the probed taps of every layer (module docstring).

    ``prediction``: a `theory.depth.predict` result to reuse (its per-tap ``var`` is the
    level ``V(m)`` and its kernels are not needed). Raises ValueError for a spec the model
    does not cover (`_supported`).
    """
    why = _supported(spec)
    if why:
        raise ValueError(why)
    if prediction is None:  # the levels of a finite table's rows are those of Gaussian inputs (theory.depth)
        prediction = _depth.predict(spec.replace(vocab_size=None), level, keep_kernels=False)
    pred = prediction
    d, T, L = int(spec.d_model), int(spec.seq_len), int(spec.n_layers)
    n = float(d - 1 if spec.normalization == "layernorm" else d)
    dm = float(spec.mlp_width) if hasattr(spec, "mlp_width") else float(spec.mlp_ratio * d)
    m = np.arange(1, T + 1, dtype=float)
    taps: dict[str, TapLaw] = {}
    # the embedding: i.i.d. Gaussian rows (a table drawn once is the same law within a network)
    # a finite table's rows: their empirical covariance is Marchenko-Pastur, gamma = (1 + d/V)/d
    gamma_x = (1.0 + (d / float(spec.vocab_size) if spec.vocab_size else 0.0)) / d
    x = _Part(V=np.asarray(pred.var(tap_name("hook_resid_pre", 0)), dtype=float), R=np.full(T, 2.0 / d),
              gamma=gamma_x, nu=np.zeros(T))
    gamma_v1 = chain_gamma(d, n, 1.0 / n)  # W_v on isotropic LN output
    gamma_o1 = chain_gamma(d, d, gamma_v1)  # W_o W_v
    for layer in range(L):
        var = lambda t: np.asarray(pred.var(tap_name(t, layer)), dtype=float)  # noqa: E731
        gamma_e = max(x.gamma * d / n, 1.0 / n)  # LayerNorm rescales, keeps the shape of C (assumption 1)
        Vz = var("attn.hook_z")
        m_eff = np.clip(Vz[0] / Vz, 1.0, None)  # E sum_n a_mn^2 = 1/m_eff (and the shared floor at depth)
        gamma_z = chain_gamma(d, n, gamma_e)
        gamma_a = chain_gamma(d, d, gamma_z)
        z = _Part(Vz, averaged_relative_variance(m_eff, sphere_relative_variance(gamma_v1, n), gamma_z), gamma_z,
                  np.full(T, 2.0 * gamma_e / d))
        a = _Part(var("hook_attn_out"), averaged_relative_variance(m_eff, sphere_relative_variance(gamma_o1, n), gamma_a),
                  gamma_a, z.nu + 2.0 * gamma_z / d)
        shift = None
        if layer == 0:  # E_x[2 x.h / d] follows tr(W_o W_v), a network constant (assumption 6)
            nu_e = float(np.asarray(pred.var(tap_name("ln1.hook_normalized", 0)), dtype=float)[0])
            sig = float(spec.sigma_embed) * float(spec.sigma_v) * float(_sigma_o(spec)) * math.sqrt(nu_e) * (d / n)
            shift = (2.0 * sig / (m * (x.V + a.V))) ** 2
        mid = _sum([x, a], n, shift)
        mid.V = var("hook_resid_mid") if not spec.attn_only else var("hook_resid_post")
        for tap, part in (("attn.hook_z", z), ("hook_attn_out", a)):
            taps[tap_name(tap, layer)] = _law(part)
        if spec.attn_only:
            taps[tap_name("hook_resid_post", layer)] = _law(mid)
            x = mid
            continue
        taps[tap_name("hook_resid_mid", layer)] = _law(mid)
        out = _mlp(spec, layer, pred, mid, n, dm, var)
        taps[tap_name("hook_mlp_out", layer)] = _law(out)
        post = _sum([mid, out], n)
        post.V = var("hook_resid_post")
        taps[tap_name("hook_resid_post", layer)] = _law(post)
        x = post
    return QuenchedLaw(spec, taps, ("delta method: E s = log V - R/2, Var s = R",))


def _sigma_o(spec: ModelSpec) -> float:
    return float(spec.sigma_o_effective) if hasattr(spec, "sigma_o_effective") else float(spec.sigma_o)


def _mlp(spec: ModelSpec, layer: int, pred, mid: _Part, n: float, dm: float, var) -> _Part:
    """hook_mlp_out ``h = W_out phi(u)``, ``u = W_in e``, e one LayerNorm output (assumption 5).

    Averaging the within-network variance over ``W_out`` (Wick: ``E[(a^T G a)(b^T G b)] =
    sigma^4 (d^2 |a|^2 |b|^2 + 2 d (a.b)^2)``, ``G = W_out^T W_out``) and writing
    ``E_e[phi(u_i) phi(u_j)] = sum_k b_k^2 rho_ij^k`` (Mehler) gives

        R = Var(phi(u)^2) / (d_mlp E[phi^2]^2) + (2/d) (1 - gamma_phi),
        gamma_phi = tr(C^2)/tr(C)^2 = 1/d_mlp + f_0^2 + f_1^2/n,   f_k = b_k^2 / E[phi^2],

    the first term the units' own spread (the coherent k = 2 mode over units is the norm of
    e, which a sphere point does not have), the second the projection ``W_out``; moments by
    Gauss-Hermite quadrature at the pre-activation variance ``q(m)`` of `theory.depth`.
    For a linear ``phi`` it is ``2/d_mlp + 2/d`` (2.5/d at ratio 4: the chain W_out W_in).
    """
    d = float(spec.d_model)
    q = var("mlp.hook_pre")  # pre-activation variance per position
    z, w = np.polynomial.hermite_e.hermegauss(96)
    w = w / w.sum()
    phi = activation_function(spec.activation)
    f = phi(np.sqrt(q)[:, None] * z[None, :])  # (T, nodes)
    mean, second, fourth = f @ w, (f**2) @ w, (f**4) @ w
    f0 = mean**2 / second  # the mean vector's share of E[phi^2]
    f1 = (f @ (w * z)) ** 2 / second  # the linear part's share (b_1^2, rank n through W_in)
    g_phi = 1.0 / dm + f0**2 + f1**2 / n  # tr(C^2)/tr(C)^2 of C = E_e[phi phi^T] = sum_k b_k^2 rho^k
    R = (fourth - second**2) / second**2 / dm + (2.0 / d) * (1.0 - g_phi)
    gamma = chain_gamma(d, dm, float(np.mean(g_phi)))
    nu = (2.0 / d) * g_phi + 2.0 / (n * dm)  # Var tr(G C) / E^2 over W_out; the rows of W_in
    return _Part(var("hook_mlp_out"), R, gamma, nu)


def _law(part: _Part) -> TapLaw:
    R = np.asarray(part.R, dtype=float)
    return TapLaw(level=np.asarray(part.V, dtype=float), mean=np.log(part.V) - R / 2.0, var=R,
                  network_sd=np.sqrt(np.maximum(part.nu, 0.0)), gamma=float(part.gamma))


# ---------------------------------------------------------------- the cross-position cosine
def mean_cosine(kernel: np.ndarray) -> np.ndarray:
    """Predicted mean cosine of a token with the other tokens of its sequence, per position:
    ``(1/(T-1)) sum_{n != m} K[m, n] / sqrt(K[m, m] K[n, n])`` (the normalised kernel's
    off-diagonal; the within-network fluctuation of the norms is neglected)."""
    K = np.asarray(kernel, dtype=float)
    dg = np.sqrt(np.diag(K))
    rho = K / np.outer(dg, dg)
    T = K.shape[0]
    return (rho.sum(axis=1) - 1.0) / max(T - 1, 1)


def tap_kernels(spec: ModelSpec, prediction) -> dict[str, np.ndarray]:
    """Position kernels ``E[h_m . h_n]/d`` of the probed taps from the residual kernels of
    `theory.depth` (a branch's kernel is the residual after it minus before it: the
    writing matrix has mean zero; ``attn.hook_z`` shares ``hook_attn_out``'s cosines)."""
    K = prediction.kernels
    out = {}
    for layer in range(int(spec.n_layers)):
        pre = K[tap_name("hook_resid_pre", layer)]
        post = K[tap_name("hook_resid_post", layer)]
        mid = K.get(tap_name("hook_resid_mid", layer), post)
        out[tap_name("hook_attn_out", layer)] = mid - pre
        out[tap_name("attn.hook_z", layer)] = mid - pre
        out[tap_name("hook_resid_post", layer)] = post
        if not spec.attn_only:
            out[tap_name("hook_resid_mid", layer)] = mid
            out[tap_name("hook_mlp_out", layer)] = post - mid
    return out
