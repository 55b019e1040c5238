"""Exact laws of one coordinate of a first-layer tap, as objects users can compute with.

``law(spec, tap)`` returns a :class:`Law`: a sympy density (for LaTeX and symbolic
work) and a frozen scipy distribution (``pdf``, ``cdf``, ``ppf``, ``rvs``, ``mean``,
``var``, ``stats``, ``moment``) whose ``_pdf``, ``_cdf`` and ``_stats`` are implemented
here rather than left to scipy's slow generic fallbacks.

The laws (layer 0, annealed measure; ``c = d eps / sigma_e^2``, ``X ~ chi^2_{d-1}``):

* ``ln1.hook_normalized``: ``e_i = sqrt(d-1) R C`` with ``C^2 ~ Beta(1/2, (d-2)/2)``
  (symmetric sign) and ``R^2 = X/(X+c)`` independent (R = 1 when eps = 0): support
  ``|e_i| <= sqrt(d-1)``, density
  ``(1 - e^2/(d-1))^{(d-4)/2} / (sqrt(d-1) B(1/2, (d-2)/2))`` at eps = 0; for eps > 0
  the exact scale mixture over R, by Gauss quadrature over X.
* ``attn.hook_q|k|v``: ``sigma sqrt(d) R G``, G ~ N(0, 1): Gaussian at eps = 0, an exact
  Gaussian scale mixture otherwise.
* ``attn.hook_attn_scores`` (one score ``l_mn``, n != m): ``s sigma_q sigma_k d R_m R_n V``
  with ``V = sum_{j<=d_head} g_j h_j`` variance-gamma:
  ``f_V(x) = |x|^{(k-1)/2} K_{(k-1)/2}(|x|) / (2^{(k-1)/2} sqrt(pi) Gamma(k/2))``,
  ``k = d_head`` (characteristic function ``(1+t^2)^{-k/2}``), excess kurtosis ``6/k``.
* RMSNorm (``normalization = "rmsnorm"``): the same constructions with no mean removed: ``X ~ chi^2_d``
  and ``e_i = sqrt(d) R C``, ``C^2 ~ Beta(1/2, (d-1)/2)``; projections and scores as above with that
  radius (docs/modern-blocks.md).
* QK-norm scores: ``s d_head r_q r_k cos(q, k) gamma(m)``, cos a coordinate of a uniform point of
  ``S^{d_head-1}``, ``r^2 = Y/(Y + c_q)``, ``Y ~ chi^2_{d_head}``, ``c_q = d_head eps/(sigma^2 d R^2)``
  (1 at eps = 0); the temperature ``gamma(m)`` scales the scores of row m (``position`` needed).
* ``hook_resid_pre``: N(0, sigma_e^2).
* softmax weights, ``hook_z`` and later taps, ALiBi scores: no closed form; ``NotImplementedError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import sympy as sp
from scipy import special, stats

from .quantities import logit_scale
from .spec import ModelSpec
from .taps import parse_tap

_N_RADIUS = 96  # trapezoid nodes in log X for the eps > 0 radius mixture


def _norm_dof(spec: ModelSpec) -> int:
    """Degrees of freedom of the norm's chi-square: ``d - 1`` for LayerNorm (centred), ``d`` for RMSNorm."""
    return int(spec.d_model) if spec.normalization == "rmsnorm" else int(spec.d_model) - 1


def _radius_rule(spec: ModelSpec, nodes: int = _N_RADIUS) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``R_k = sqrt(X_k/(X_k + c))`` and weights for the norm's radius (eps > 0), ``X ~ chi^2_{_norm_dof}``.

    A trapezoid rule in ``y = log X`` over the chi^2_{d-1} law: the integrand
    ``f(X) X`` is analytic in y and decays exponentially at both ends, so the rule
    converges geometrically even for small d, where ``X/(X+c)`` bends sharply near 0
    (Gauss–Laguerre nodes miss that bend: 0.1% off at d = 4).
    """
    if spec.ln_eps == 0:
        return np.ones(1), np.ones(1)
    c = spec.d_model * spec.ln_eps / spec.sigma_embed**2
    x, w = _chi2_rule(_norm_dof(spec), nodes)
    return np.sqrt(x / (x + c)), w


def _chi2_rule(dof: float, nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and probability weights for ``chi^2_dof``: a trapezoid rule in ``log X``."""
    law = stats.chi2(dof)
    y = np.linspace(math.log(law.ppf(1e-15)), math.log(law.isf(1e-15)), nodes)
    x = np.exp(y)
    w = np.exp(law.logpdf(x) + y)  # f(X) dX = f(e^y) e^y dy
    return x, w / w.sum()


class _ScaleMixture(stats.rv_continuous):
    """``sum_k w_k f0(x / s_k) / s_k``: a base law ``f0`` scaled by a discrete mixture.

    scipy re-instantiates distributions when freezing them, so the parameters live on a
    subclass made per law (:func:`_mixture`), not in ``__init__``.
    """

    _base_pdf = _base_cdf = None
    _base_moments = (1.0, 3.0)
    _scales = _weights = np.ones(1)

    def _in_chunks(self, x, fn):
        """Evaluate ``fn`` on flat chunks of x: memory stays bounded for any input size."""
        x = np.asarray(x, float)
        flat = x.reshape(-1)
        step = max(1, 2**21 // (self._scales.size * 64))
        out = np.concatenate([fn(flat[i : i + step, None]) for i in range(0, flat.size, step)]) if flat.size else flat
        return out.reshape(x.shape)

    def _pdf(self, x):
        return self._in_chunks(x, lambda c: (self._weights * self._base_pdf(c / self._scales) / self._scales).sum(-1))

    def _cdf(self, x):
        return self._in_chunks(x, lambda c: np.clip((self._weights * self._base_cdf(c / self._scales)).sum(-1), 0.0, 1.0))

    def _stats(self):
        # Symmetric base laws: mean 0, E[x^2] and E[x^4] scale with s^2 and s^4.
        m2, m4 = self._base_moments
        s2 = float((self._weights * self._scales**2).sum()) * m2
        s4 = float((self._weights * self._scales**4).sum()) * m4
        return 0.0, s2, 0.0, s4 / s2**2 - 3.0

    def _munp(self, n):
        if n % 2:
            return 0.0
        if n == 2:
            return self._stats()[1]
        m2, m4 = self._base_moments
        if n == 4:
            return float((self._weights * self._scales**4).sum()) * m4
        return super()._munp(n)


def _mixture(base_pdf, base_cdf, base_moments, scales, weights, support, name):
    """A frozen scipy distribution for the scale mixture of a symmetric base law."""
    scales, weights = np.asarray(scales, float), np.asarray(weights, float)
    cls = type(f"_{name}", (_ScaleMixture,), {
        "_base_pdf": staticmethod(base_pdf),
        "_base_cdf": staticmethod(base_cdf),
        "_base_moments": tuple(base_moments),
        "_scales": scales,
        "_weights": weights / weights.sum(),
    })
    lo, hi = support
    return cls(a=lo * scales.max(), b=hi * scales.max(), name=name)()


@dataclass(frozen=True)
class Law:
    """The law of one coordinate of a tap: sympy density and scipy distribution."""

    tap: str
    description: str
    density: sp.Expr  # in the symbol x, for LaTeX and symbolic work
    variable: sp.Symbol
    dist: object  # a frozen scipy distribution
    exact: bool
    accuracy: str

    def __getattr__(self, name):  # pdf, cdf, ppf, rvs, mean, var, stats, moment, ...
        if name in ("pdf", "cdf", "ppf", "sf", "rvs", "mean", "var", "std", "stats", "moment", "support", "logpdf", "interval"):
            return getattr(self.dist, name)
        raise AttributeError(name)

    def latex(self) -> str:
        return f"f({sp.latex(self.variable)}) = {sp.latex(self.density)}"


def _sphere_coordinate(dim: float, half: float):
    """pdf and cdf of ``half * C``, ``C`` one coordinate of a uniform point of ``S^{dim-1}``
    (``C^2 ~ Beta(1/2, (dim-1)/2)``), and its ``(E[y^2], E[y^4])`` in units where ``half = sqrt(dim)``."""
    a, b = 0.5, (dim - 1) / 2.0
    log_norm = special.betaln(a, b)

    def base_pdf(y):
        u = np.clip(1.0 - (y / half) ** 2, 0.0, None)
        with np.errstate(divide="ignore"):
            return np.where(np.abs(y) < half, np.exp((b - 1) * np.log(u) - log_norm) / half, 0.0)

    def base_cdf(y):
        t = np.clip((y / half) ** 2, 0.0, 1.0)
        return 0.5 + 0.5 * np.sign(y) * special.betainc(a, b, t)

    m2 = half**2 / dim  # half^2 E[C^2]
    m4 = half**4 * 3.0 / (dim * (dim + 2.0))  # half^4 E[C^4]
    return base_pdf, base_cdf, (m2, m4)


def _ln_coordinate(spec: ModelSpec) -> Law:
    """One coordinate of the norm's output: ``sqrt(D) R C``, ``C`` a coordinate of a uniform point of
    ``S^{D-1}`` (``D = d - 1`` LayerNorm, ``d`` RMSNorm), ``R^2 = X/(X + c)``, ``X ~ chi^2_D`` (R = 1 at eps = 0)."""
    d = spec.d_model
    if d < 3:
        raise ValueError(f"the LayerNorm coordinate law needs d_model >= 3, got {d}")
    rms = spec.normalization == "rmsnorm"
    dim = _norm_dof(spec)
    half = math.sqrt(dim)
    base_pdf, base_cdf, moments = _sphere_coordinate(dim, half)
    scales, weights = _radius_rule(spec)
    dist = _mixture(base_pdf, base_cdf, moments, scales, weights, (-half, half), "ln_coordinate")
    x = sp.Symbol("e_i", real=True)
    dd = sp.Symbol("d", positive=True)
    D = dd if rms else dd - 1
    density = (1 - x**2 / D) ** ((D - 3) / 2) / (sp.sqrt(D) * sp.beta(sp.Rational(1, 2), (D - 1) / 2))
    exact = spec.ln_eps == 0
    head = "RMSNorm coordinate: sqrt(d) R sign sqrt(B), B ~ Beta(1/2, (d-1)/2)" if rms else \
        "sqrt(d-1) R sign sqrt(B), B ~ Beta(1/2, (d-2)/2)"
    return Law(
        "ln1.hook_normalized",
        head + ("" if exact else ", R^2 = X/(X+c) mixed by quadrature"),
        density,  # the eps = 0 density; with eps > 0 the law is its scale mixture over R
        x,
        dist,
        True,
        "closed form" if exact else f"{_N_RADIUS}-node trapezoid in log X over the radius (relative error < 1e-10)",
    )


def _gaussian_mixture(spec: ModelSpec, sigma: float, tap: str) -> Law:
    scale = sigma * math.sqrt(spec.d_model)
    scales, weights = _radius_rule(spec)
    dist = _mixture(stats.norm.pdf, stats.norm.cdf, (1.0, 3.0), scale * scales, weights, (-np.inf, np.inf), tap.replace(".", "_"))
    x = sp.Symbol("x", real=True)
    s = sp.Symbol(r"\sigma", positive=True)
    return Law(tap, "Gaussian scale mixture over the LayerNorm radius", sp.exp(-(x**2) / (2 * s**2)) / (sp.sqrt(2 * sp.pi) * s),
               x, dist, True, "exact (Gaussian)" if spec.ln_eps == 0 else f"{_N_RADIUS}-node trapezoid in log X over the radius")


def _variance_gamma_pdf(x, k):
    """Density of ``V = sum_{j<=k} g_j h_j`` (independent N(0, 1) pairs).

    Closed form ``|x|^{(k-1)/2} K_{(k-1)/2}(|x|) / (2^{(k-1)/2} sqrt(pi) Gamma(k/2))`` while
    the Bessel function stays in floating range (k <= 200); beyond, the equivalent
    representation ``V = sqrt(W) Z``, ``W ~ chi^2_k`` (given h, the sum is N(0, |h|^2)),
    as a Gaussian scale mixture.
    """
    x = np.asarray(x, float)
    if k > 200:
        return _variance_gamma_pdf_mixture(x, k)
    ax = np.abs(x)
    nu = (k - 1) / 2.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_pdf = nu * np.log(ax) + np.log(special.kve(nu, ax)) - ax - nu * math.log(2) - 0.5 * math.log(math.pi) - special.gammaln(k / 2.0)
        out = np.exp(log_pdf)
    # The limit at 0: Gamma(nu) / (2 sqrt(pi) Gamma(k/2)) for k > 1, +inf for k = 1 (log singularity).
    at0 = math.exp(special.gammaln(nu) - math.log(2) - 0.5 * math.log(math.pi) - special.gammaln(k / 2.0)) if k > 1 else np.inf
    out = np.where(ax == 0, at0, out)
    overflow = ~np.isfinite(out) & (ax > 0)  # K_nu overflows near 0 for large orders
    if overflow.any():
        out = np.where(overflow, _variance_gamma_pdf_mixture(x, k), out)
    return out


def _variance_gamma_pdf_mixture(x: np.ndarray, k: int) -> np.ndarray:
    """``E_W[phi(x/sqrt(W))/sqrt(W)]``, W ~ chi^2_k: the same density, always in range."""
    w_nodes, w_weights = _chi2_rule(k, 256)
    s = np.sqrt(w_nodes)
    return (w_weights * stats.norm.pdf(np.asarray(x, float)[..., None] / s) / s).sum(-1)


class _VarianceGammaCdf:
    """CDF of V: ``E_W[Phi(x / sqrt(W))]``, ``W ~ chi^2_k`` (exact representation, quadrature in log W)."""

    def __init__(self, k: int, nodes: int = 160):
        w_nodes, self.weights = _chi2_rule(k, nodes)
        self.scales = np.sqrt(w_nodes)

    def __call__(self, x):
        x = np.asarray(x, float)
        return (self.weights * special.ndtr(x[..., None] / self.scales)).sum(-1)


def _scores(spec: ModelSpec, position: int | None, gamma: float = 1.0) -> Law:
    k = spec.d_head
    s = logit_scale(k, spec.attn_scale)
    scale = s * spec.sigma_q * spec.sigma_k * spec.d_model * gamma  # gamma: the temperature of row m (1 without)
    r, w = _radius_rule(spec, nodes=32)
    rg, wg = _gauss_rule(r, w, _N_QK)  # 12 Gauss nodes per radius: 144 + 32 scales instead of 1056
    scales = (rg[:, None] * rg[None, :]).ravel() * scale  # independent radii of e_m and e_n (n != m)
    weights = (wg[:, None] * wg[None, :]).ravel()
    what = "one score l_mn, n != m"
    if position is not None and position > 1 and spec.ln_eps > 0:
        # Pooled over the keys n <= m: the diagonal key n = m shares the radius of e_m.
        share = 1.0 / position
        scales = np.concatenate([scales, r * r * scale])
        weights = np.concatenate([(1 - share) * weights, share * w])
        what = f"one score l_mn pooled over keys n <= {position}"
    elif position == 1 and spec.ln_eps > 0:
        scales, weights, what = r * r * scale, w, "the diagonal score l_11"
    cdf = _VarianceGammaCdf(k)
    dist = _mixture(lambda x: _variance_gamma_pdf(x, k), cdf, (float(k), 3.0 * k * k + 6.0 * k), scales, weights,
                    (-np.inf, np.inf), "scores")
    x = sp.Symbol("l", real=True)
    kk = sp.Symbol("k", positive=True)
    density = sp.Abs(x) ** ((kk - 1) / 2) * sp.besselk((kk - 1) / 2, sp.Abs(x)) / (2 ** ((kk - 1) / 2) * sp.sqrt(sp.pi) * sp.gamma(kk / 2))
    return Law("attn.hook_attn_scores", f"variance-gamma, scaled sum of d_head products of Gaussians ({what})",
               density, x, dist, True, "cdf as the chi-square mixture of Gaussian cdfs (abs error < 1e-9)")


def _cosine_law(tap: str, dim: int, half_width: float, what: str) -> Law:
    """``half_width (2B - 1)``, ``B ~ Beta((dim-1)/2, (dim-1)/2)``: a coordinate of a uniform point of
    ``S^{dim-1}`` (``(1 + C)/2 ~ Beta``), scaled to ``[-half_width, half_width]``."""
    a = (dim - 1) / 2.0
    x = sp.Symbol("x", real=True)
    w = sp.Float(half_width)
    density = (1 - (x / w) ** 2) ** sp.Rational(dim - 3, 2) / (w * sp.beta(sp.Rational(1, 2), sp.Rational(dim - 1, 2)))
    return Law(tap, what, density, x, stats.beta(a, a, loc=-half_width, scale=2 * half_width), True, "exact (scipy's Beta)")


def _modern_law(spec: ModelSpec, suffix: str, position: int | None) -> Law | None:
    """The first-layer laws that RMSNorm, QK-norm, RoPE, ALiBi or the temperature change (docs/modern-blocks.md);
    None where the NoPE law of the same construction holds (the norm's radius rule already follows
    ``normalization``); NotImplementedError where no closed form is given."""
    rms, qk = spec.normalization == "rmsnorm", spec.qk_norm_at(0)
    scheme, temp = spec.positional_at(0), spec.temperature_at(0)
    if not (rms or qk or scheme != "none" or temp is not None) or suffix == "hook_resid_pre":
        return None
    eps = float(spec.ln_eps)
    if suffix == "ln1.hook_normalized" and rms:
        if eps:
            return _ln_coordinate(spec)  # the scale mixture over the chi^2_d radius
        return _cosine_law("ln1.hook_normalized", spec.d_model, math.sqrt(spec.d_model),
                           "RMSNorm coordinate: sqrt(d) times a coordinate of a uniform point of S^{d-1}")
    if suffix in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
        return None  # Gaussian scale mixture over the norm's radius (RoPE, QK-norm and the temperature act after the tap)
    if suffix == "attn.hook_attn_scores":
        if scheme == "alibi":
            raise NotImplementedError("no closed-form score law for ALiBi here (a location mixture over keys and heads); "
                                      "its moments are in theory.predict")
        if temp is not None and position is None:
            raise NotImplementedError("with a temperature the score law depends on the row: pass position=m")
        gamma = temp.factor(position - 1) if temp is not None else 1.0
        if qk and eps == 0:
            s = logit_scale(spec.d_head, spec.attn_scale)
            return _cosine_law("attn.hook_attn_scores", spec.d_head, s * spec.d_head * gamma,
                               "QK-norm score s d_head cos(q, k): cos a coordinate of a uniform point of S^{d_head-1}")
        if qk:
            return _qk_norm_scores(spec, position, gamma)
        return _scores(spec, position, gamma)  # RoPE's rotations keep the variance-gamma law; the temperature scales it
    return None


def _gauss_rule(x: np.ndarray, w: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The n-node Gauss rule of the discrete measure ``sum_k w_k delta(x_k)`` (Stieltjes procedure and the
    Golub–Welsch eigenproblem): exact for polynomials of degree < 2n in x; the measure itself when it has
    at most n atoms or no spread."""
    x, w = np.asarray(x, float).ravel(), np.asarray(w, float).ravel()
    lo, hi = float(x.min()), float(x.max())
    if x.size <= n or hi - lo <= 1e-14 * max(1.0, abs(hi)):
        return (x, w) if x.size <= n else (np.array([float(w @ x) / w.sum()]), np.array([w.sum()]))
    t = 2.0 * (x - lo) / (hi - lo) - 1.0
    p_prev, p = np.zeros_like(t), np.ones_like(t)
    alpha, beta, norm_prev = [], [], 1.0
    for k in range(n):
        norm = float(w @ (p * p))
        alpha.append(float(w @ (t * p * p)) / norm)
        b = norm / norm_prev if k else 0.0
        if k:
            beta.append(b)
        p_prev, p, norm_prev = p, (t - alpha[-1]) * p - b * p_prev, norm
    nodes, vecs = np.linalg.eigh(np.diag(alpha) + np.diag(np.sqrt(beta), 1) + np.diag(np.sqrt(beta), -1))
    return lo + (nodes + 1.0) * (hi - lo) / 2.0, w.sum() * vecs[0] ** 2


_N_QK = 12  # Gauss nodes per side for the QK-norm radii


def _qk_norm_scores(spec: ModelSpec, position: int | None, gamma: float) -> Law:
    """QK-norm scores with eps > 0: ``l = s d_head r_q r_k cos gamma``, cos the sphere coordinate of S^{d_head-1}.

    ``q_hat = q / sqrt(|q|^2/d_head + eps)`` keeps q's direction, so ``cos(q, k)`` is independent of the norms
    (isotropic Gaussian q, k given the input, independent ``W_q``, ``W_k``) and
    ``r_q^2 = Y/(Y + c_q)``, ``Y ~ chi^2_{d_head}``, ``c_q = d_head eps / (sigma_q^2 d R^2)``, with the
    input's radius ``R^2 = X/(X + c)`` of the norm (`_radius_rule`). The key's radius is independent of the
    query's for ``n != m``; the diagonal key shares ``X`` (weight 1/m when pooled). Each side's discrete radius
    law (trapezoid in log X times trapezoid in log Y) is reduced to a 12-node Gauss rule in r (`_gauss_rule`).
    """
    dh = int(spec.d_head)
    eps = float(spec.ln_eps)
    s = logit_scale(dh, spec.attn_scale)
    R, wR = _radius_rule(spec, nodes=32)
    Y, wY = _chi2_rule(dh, 32)
    d = float(spec.d_model)

    def radius(sigma: float) -> np.ndarray:  # (len R, len Y): r given the input radius and the chi^2 of the projection
        c_q = dh * eps / (float(sigma) ** 2 * d * R[:, None] ** 2)
        return np.sqrt(Y[None, :] / (Y[None, :] + c_q))

    rq, rk = radius(spec.sigma_q), radius(spec.sigma_k)
    wXY = wR[:, None] * wY[None, :]
    nq, wq = _gauss_rule(rq, wXY, _N_QK)
    nk, wk = _gauss_rule(rk, wXY, _N_QK)
    scales, weights = np.outer(nq, nk).ravel(), np.outer(wq, wk).ravel()
    what = "one score l_mn, n != m"
    if position is not None:
        diag = (rq[:, :, None] * rk[:, None, :]).reshape(R.size, -1)  # shared X, independent Y_q, Y_k
        wd = (wR[:, None] * np.outer(wY, wY).ravel()[None, :])
        nd, wdd = _gauss_rule(diag, wd, _N_QK)
        share = 1.0 / position
        scales = np.concatenate([scales, nd]) if position > 1 else nd
        weights = np.concatenate([(1 - share) * weights, share * wdd]) if position > 1 else wdd
        what = f"one score l_mn pooled over keys n <= {position}" if position > 1 else "the diagonal score l_11"
    base_pdf, base_cdf, moments = _sphere_coordinate(dh, 1.0)
    dist = _mixture(base_pdf, base_cdf, moments, scales * s * dh * gamma, weights, (-1.0, 1.0), "qk_scores")
    x = sp.Symbol("x", real=True)
    w = sp.Symbol("w", positive=True)
    density = (1 - (x / w) ** 2) ** sp.Rational(dh - 3, 2) / (w * sp.beta(sp.Rational(1, 2), sp.Rational(dh - 1, 2)))
    return Law("attn.hook_attn_scores", f"QK-norm score s d_head r_q r_k cos(q, k) ({what}), radii with eps mixed by quadrature",
               density, x, dist, True, f"{_N_QK}-node Gauss rules in r_q, r_k over trapezoids in log X, log Y")


def law(spec: ModelSpec, tap: str, position: int | None = None) -> Law:
    """The law of one coordinate of a first-layer (``blocks.0``) tap at query position ``position`` (1-based).

    Only the scores depend on the position: with ``position=None`` the law is that of one
    score ``l_mn`` with n != m; with a position m it is pooled over the keys n <= m
    (what a simulation sees when it draws one key uniformly), which differs from n != m
    only when eps > 0 (the diagonal key shares the query's LayerNorm radius).
    """
    if spec.is_symbolic:
        raise ValueError("law() needs a numeric spec; the sympy density is in law(...).density")
    suffix, layer = parse_tap(tap)
    if layer != 0:
        raise NotImplementedError(f"laws exist for the first layer (blocks.0) only; got {tap}")
    modern = _modern_law(spec, suffix, position)  # RMSNorm, QK-norm, RoPE, ALiBi, temperature (issue 16)
    if modern is not None:
        return modern
    if suffix == "hook_resid_pre":
        x = sp.Symbol("x", real=True)
        s = spec.sigma_embed
        return Law(tap, "Gaussian input", sp.exp(-(x**2) / (2 * s**2)) / (sp.sqrt(2 * sp.pi) * s), x, stats.norm(scale=s), True, "exact")
    if suffix == "ln1.hook_normalized":
        return _ln_coordinate(spec)
    if suffix in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
        sigma = {"q": spec.sigma_q, "k": spec.sigma_k, "v": spec.sigma_v}[suffix[-1]]
        return _gaussian_mixture(spec, sigma, suffix)
    if suffix == "attn.hook_attn_scores":
        return _scores(spec, position)
    raise NotImplementedError(
        f"no law for {tap}: the softmax weights and what they average (hook_pattern, hook_z, "
        "hook_attn_out, hook_resid_mid) have no closed-form law yet; their moments are in theory.predict"
    )
