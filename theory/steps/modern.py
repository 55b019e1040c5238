"""First-layer steps of modern blocks: RMSNorm's law and the attention of QK-norm, RoPE, ALiBi, temperature layers.

The NoPE LayerNorm block's steps are `theory.steps.layernorm` and `theory.steps.attention`;
when the first layer's attention has a variant (`theory.depth_maps.modern_attention.is_modern`)
its steps are these. Their formulas keep the NoPE shape, with the variant's meaning of each
placeholder (``definitions``), so that every number is the value of a printed expression:

* ``Var(q_j) = sigma_q^2 rho^2`` (q, k, v: the projections, before QK-norm, RoPE and the
  temperature, as in TransformerLens), ``rho^2 = d nu_1`` of the block's norm;
* logits: NoPE's variance times ``gamma(m)^2``, ``gamma(m) = tau_T(m - 1)`` the temperature;
  RoPE leaves it (rotations preserve the product's law for independent ``W_q``, ``W_k``);
  QK-norm makes it ``s^2 d_head r_q^2 r_k^2 gamma(m)^2`` *exactly at every layer*
  (``cos^2 ~ Beta(1/2, (d_head-1)/2)`` for two independent isotropic vectors; ``r^2`` the
  normalised norms with eps, 1 at eps = 0); ALiBi adds the biases' mean and spread;
* ``E[a_mn] = 1/m`` pooled over keys (exactly, for every variant: the weights sum to 1);
  ``S_2(m)`` from the variant's row law (`theory._modern`);
* ``Var(z_j) = sigma_v^2 rho^2 (S_2(m) + Xi(m)/D)``: at layer 0 (i.i.d. keys) the second
  moments of the weights act on ``E = nu_1 I``, so this holds for every variant, with
  ``Xi = kappa^2 cbar(m) E[sum_{n != n'} a a' x x']`` (``kappa^2`` QK-norm's coupling
  factor, ``cbar`` RoPE's pair-mean rotation cosine, both 1 otherwise) and ``D`` the sphere of
  the normalised keys (``d - 1`` LayerNorm, ``d`` RMSNorm);
* ``Var(o_i) = sigma_o^2 d Var(z_j)``.

``S_2`` and ``Xi`` are evaluated by the depth map's first-layer rows (`theory.depth_maps.modern_attention`),
the same numbers `theory.depth.predict` gives at layer 0.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import sympy as sp

from .. import _layernorm, _modern
from .._kernel_maps import layernorm_radius_moments
from .._result import Level, StepResult, StepText
from .._softmax import m_sym
from ..depth_maps._state import Layer, Stream
from ..depth_maps import modern_attention as _map
from ..depth_maps.layernorm import layernorm as _layernorm_map
from ..depth_maps.rmsnorm import rmsnorm as _rmsnorm_map
from ..block import block
from ..spec import ModelSpec
from ..tolerance import DEFAULT_TOLERANCE
from ._context import S2, LayerOne, Xi, tidy


# ---------------------------------------------------------------- RMSNorm
def rms_moments(spec) -> tuple[sp.Expr, sp.Expr]:
    """``(nu_1, nu_2)`` of RMSNorm: ``E[(X/(X + c))^j]``, ``X ~ chi^2_d`` (no centring: all d dimensions)."""
    d = sp.sympify(spec.d_model)
    eps = sp.sympify(spec.ln_eps)
    if eps == 0:
        return sp.Integer(1), sp.Integer(1)
    if not spec.is_symbolic:
        var = np.array([float(spec.sigma_embed) ** 2])
        nu1, nu2, _ = layernorm_radius_moments(var, int(spec.d_model), float(spec.ln_eps), n=64, dof=int(spec.d_model))
        return sp.Float(float(nu1[0]), 17), sp.Float(float(nu2[0]), 17)
    nu1, nu2 = _layernorm._norm_moment_formulas()
    subs = {_layernorm._k: d, _layernorm._c: d * eps / sp.sympify(spec.sigma_embed) ** 2}
    return nu1.subs(subs), nu2.subs(subs)


def rmsnorm(ctx: LayerOne, level: str, tap: str = "blocks.0.ln1.hook_normalized") -> StepResult:
    r"""RMSNorm of the Gaussian embedding: ``e = x / sqrt(|x|^2/d + eps)``, gain 1.

    Best level (exact): the direction is uniform on the unit sphere of all ``d`` dimensions
    (no mean is removed), ``|e|^2 = d X/(X + c)``, ``X ~ chi^2_d``, ``c = d eps/sigma_e^2``;
    one coordinate ``e_i = |e| c_i``, ``c_i^2 ~ Beta(1/2, (d-1)/2)``:

    .. math:: \operatorname{Var}[e_i] = \nu_1, \quad \operatorname{Cov}[e_i, e_j] = 0, \quad
              \kappa_4[e_i] = 3\frac{d}{d+2}\frac{\nu_2}{\nu_1^2} - 3

    (``-6/(d+2)`` at eps = 0). Leading level: N(0, 1) per coordinate. Source: the sphere law
    of a normalised Gaussian vector (Muirhead 1982, Thm 1.5.6); Zhang & Sennrich 2019 (RMSNorm).
    """
    if level == "leading":
        return StepResult(tap=tap, title="RMSNorm output treated as N(0, 1) per coordinate", level=Level.APPROXIMATE,
                          quantities={"mean": sp.Integer(0), "var": sp.Integer(1)},
                          assumptions=("RMSNorm output Gaussian N(0, 1)", "eps neglected"), regime="d >> 1, eps << sigma_e^2",
                          error="relative O(eps/sigma_e^2) in the variance; kurtosis O(1/d)", symbol="e_i",
                          tolerance=DEFAULT_TOLERANCE, tolerance_source="default (no derived constant)")
    d = ctx.d
    nu1, nu2 = rms_moments(ctx.spec)
    fourth = d**2 * nu2 * 3 / (d * (d + 2))  # E|e|^4 E[c_i^4], E c^4 = 3/(d(d+2))
    var = nu1
    return StepResult(
        tap=tap, title="RMSNorm: |e|^2 = d X/(X + c), X ~ chi^2_d, direction uniform on the sphere of all d dimensions",
        level=Level.EXACT,
        quantities={"mean": sp.Integer(0), "var": tidy(var), "excess_kurtosis": tidy(fourth / var**2 - 3),
                    "cov_coordinates": sp.Integer(0)},
        definitions={"nu_1": "E|e|^2/d = E[X/(X+c)], X ~ chi^2_d, c = d eps/sigma_e^2", "nu_2": "E[(X/(X+c))^2]"},
        assumptions=("gain 1 (initialisation)", "mean of squares over all d coordinates in the normaliser"),
        regime="all d >= 1, all eps", symbol="e_i", tolerance=0.0, tolerance_source="exact")


# ---------------------------------------------------------------- attention of a modern first layer
@lru_cache(maxsize=32)
def _layer_one(spec_json: str, level: str):
    """The first layer's norm and attention through the depth maps: ``(nu1, nu2, S_2, Xi_eff)`` (T,) each."""
    spec = ModelSpec.from_json(spec_json)
    sub_norm, sub_attn = _first_branch(spec)
    at = Layer(spec, 0, level == "best", {}, {})
    stream = Stream(K=float(spec.sigma_embed) ** 2 * np.eye(int(spec.seq_len)))
    stream.opens = "attention"
    (_rmsnorm_map if sub_norm.kind == "rmsnorm" else _layernorm_map)(sub_norm, stream, at)
    nu1 = np.diag(stream.E).copy()
    T = nu1.size
    if level == "best":
        heads, factor, _ = _map._rows(sub_attn, stream, at)
        s2 = sum(h[0] for h in heads) / len(heads)
        xi = factor * sum(h[1] for h in heads) / len(heads)
    else:
        _map.modern_attention(sub_attn, stream, at)
        s2 = at.records["blocks.0.attn.hook_pattern"].values["sum_sq"]
        xi = np.zeros(T)
    return nu1, stream.nu2.copy(), np.asarray(s2, dtype=float), np.asarray(xi, dtype=float)


def _first_branch(spec):
    first = block(spec, 0).branches()[0]
    return first[0], first[1]


class _Rows:
    """``S_2`` and ``Xi`` at requested positions, for `theory._numbers` (``row.sum_sq``, ``row.coupling``)."""

    def __init__(self, s2: np.ndarray, xi: np.ndarray, positions: np.ndarray) -> None:
        idx = np.asarray(positions, dtype=int) - 1
        self.sum_sq, self.coupling = s2[idx], xi[idx]


def _row_callable(spec, level: str):
    _, _, s2, xi = _layer_one(spec.to_json(None), level)
    return lambda positions: _Rows(s2, xi, positions)


def _temperature(spec) -> sp.Expr:
    """``gamma(m) = scale log(floor(m/F) + 1) + 1`` (the query temperature at 0-based p = m - 1), or 1."""
    temp = spec.temperature_at(0)
    if temp is None:
        return sp.Integer(1)
    return sp.Float(temp.scale) * sp.log(sp.floor(m_sym / sp.Float(temp.floor_scale)) + 1) + 1


def _rho2(ctx: LayerOne):
    if ctx.spec.normalization == "rmsnorm":
        return ctx.d * rms_moments(ctx.spec)[0]
    return ctx.rho2


def _sphere(ctx: LayerOne):
    return ctx.d if ctx.spec.normalization == "rmsnorm" else ctx.d - 1


def _options(spec):
    return _first_branch(spec)[1].options


def _label(ctx: LayerOne, level: str) -> tuple[Level, str, dict]:
    o = _options(ctx.spec)
    if level == "leading":
        return Level.APPROXIMATE, "relative O(tau_bar^2) (uniform attention)", {"tolerance": DEFAULT_TOLERANCE,
                                                                              "tolerance_source": "default (no derived constant)"}
    if float(ctx.spec.ln_eps) == 0 and not o.get("qk_norm") and o.get("positional") != "rope":
        return Level.EXACT, "quadrature, relative error < 1e-6", {"tolerance": 0.0, "tolerance_source": "exact"}
    return Level.APPROXIMATE, "O(1/D): QK-norm's chi^2_D factor on the logit, RoPE's W_k W_k^T average, eps radii", {
        "tolerance": 0.03, "tolerance_source": "declared (first-layer modern attention, measured: docs/modern-blocks.md)"}


def _assumptions(ctx: LayerOne) -> tuple[str, ...]:
    o = _options(ctx.spec)
    out = ("annealed measure: fresh weights and inputs", "given the query side, keys i.i.d. (independent key directions)")
    if o.get("qk_norm"):
        out += ("QK-norm: logit s d_head cos(q_m, k_n); the projected query's chi^2_D/D factor scales the logit",)
    if o.get("positional") == "rope":
        out += ("RoPE: W_k W_k^T averaged over the rotated query directions; per-key quadratic forms to first order",)
    if o.get("positional") == "alibi":
        out += ("ALiBi: the rows' second moments from S_2 and the mean weights (exact at layer 0: E = nu_1 I)",)
    if o.get("temperature") is not None:
        out += ("temperature: the queries of row m scaled by gamma(m) = tau_T(m - 1)",)
    return out


def projection(ctx: LayerOne, level: str, tap: str) -> StepResult:
    """``q = W_q e`` (and k, v): ``sigma^2 rho^2``, exact given the norm's law (before QK-norm, RoPE, temperature)."""
    which = tap.rsplit("hook_", 1)[1]
    sigma = {"q": ctx.sigma_q, "k": ctx.sigma_k, "v": ctx.sigma_v}[which]
    rho2 = ctx.d if level == "leading" else _rho2(ctx)
    return StepResult(tap=tap, title=f"Projection {which} = W_{which} e: variance sigma_{which}^2 rho^2",
                      level=Level.APPROXIMATE if level == "leading" else Level.EXACT,
                      quantities={"mean": sp.Integer(0), "var": sigma**2 * rho2},
                      assumptions=("W entries i.i.d. N(0, sigma^2), independent of e",), regime="all m",
                      symbol=which, **({"tolerance": DEFAULT_TOLERANCE, "tolerance_source": "default (no derived constant)"}
                                        if level == "leading" else {"tolerance": 0.0, "tolerance_source": "exact"}))


def scores(ctx: LayerOne, level: str, tap: str = "blocks.0.attn.hook_attn_scores") -> StepResult:
    """Logits of the variant, pooled over keys n <= m (module docstring)."""
    spec, o = ctx.spec, _options(ctx.spec)
    gamma2 = _temperature(spec) ** 2
    d_head = int(spec.d_head)
    if o.get("qk_norm"):
        eps = float(o.get("qk_norm_eps", 0.0)) if level == "best" else 0.0
        nu1 = float(_rho2(ctx)) / float(ctx.d) if level == "best" else 1.0
        rq2 = float(_modern.qk_norm_radius2(np.array([float(spec.sigma_q) ** 2 * float(ctx.d) * nu1]), d_head, eps)[0])
        rk2 = float(_modern.qk_norm_radius2(np.array([float(spec.sigma_k) ** 2 * float(ctx.d) * nu1]), d_head, eps)[0])
        radii = sp.Integer(1) if eps == 0 else sp.Float(rq2, 15) * sp.Float(rk2, 15)  # r^2 = 1 exactly at eps = 0
        rand = ctx.scale**2 * ctx.d_head * radii * gamma2
        title = "QK-norm logit s d_head cos(q, k): variance s^2 d_head whatever the sigmas (cos^2 ~ Beta(1/2, (d_head-1)/2))"
        kurt = sp.Float(_modern.qk_norm_cosine_moments(d_head)[1], 15)
    else:
        rho2 = ctx.d if level == "leading" else _rho2(ctx)
        e4 = ctx.d**2 if level == "leading" else (ctx.d**2 * rms_moments(spec)[1] if spec.normalization == "rmsnorm" else ctx.e4)
        s2q2k2 = ctx.scale**2 * ctx.sigma_q**2 * ctx.sigma_k**2 * ctx.d_head
        rand = s2q2k2 * ((m_sym - 1) * rho2**2 + e4) / m_sym * gamma2
        title = "Logit s q_m.k_n (after RoPE and the temperature), pooled over keys n <= m"
        kurt = None
    quantities = {"mean": sp.Integer(0), "var": tidy(rand)}
    if o.get("positional") == "alibi":
        slopes = _modern.alibi_slopes(int(spec.n_heads))
        b1 = sp.nsimplify(sum(slopes) / len(slopes))
        b2 = sp.nsimplify(sum(b * b for b in slopes) / len(slopes))
        mean = -b1 * (m_sym - 1) / 2
        quantities = {"mean": mean, "var": tidy(rand + b2 * (m_sym - 1) * (2 * m_sym - 1) / 6 - mean**2)}
        title += "; ALiBi adds -slope_h (m - n)"
    if kurt is not None and o.get("positional") != "alibi":
        quantities["excess_kurtosis"] = kurt
    lvl = Level.APPROXIMATE if level == "leading" else Level.EXACT
    return StepResult(tap=tap, title=title, level=lvl, quantities=quantities,
                      assumptions=("W_q, W_k independent",) + (("|e|^2 = d",) if level == "leading" else ()),
                      regime="all m", symbol="l_{mn}",
                      **({"tolerance": DEFAULT_TOLERANCE, "tolerance_source": "default (no derived constant)"}
                         if level == "leading" else {"tolerance": 0.0, "tolerance_source": "exact"}))


def _row_result(ctx, level, tap, title, quantities, symbol) -> StepResult:
    lvl, error, tol = _label(ctx, level)
    return StepResult(tap=tap, title=title, level=lvl, quantities=quantities, error=error,
                      definitions={"S_2(m)": "E[sum_n a_mn^2] by the variant's row law (theory._modern)",
                                   "Xi(m)": "kappa^2 cbar(m) E[sum_{n != n'} a a' x x'] (QK-norm's kappa^2, RoPE's pair-mean "
                                            "rotation cosine cbar; 1 otherwise)",
                                   "D": "sphere of the normalised keys: d - 1 (LayerNorm), d (RMSNorm)"},
                      assumptions=_assumptions(ctx), regime="all m", symbol=symbol,
                      row=_row_callable(ctx.spec, level) if ctx.numeric else None, **tol)


def pattern(ctx: LayerOne, level: str, tap: str = "blocks.0.attn.hook_pattern") -> StepResult:
    """``E[a_mn] = 1/m`` pooled over keys; ``S_2(m)`` from the variant's row law."""
    return _row_result(ctx, level, tap, "Softmax weights of the variant: E[a_mn] = 1/m pooled; S_2(m) by its row law",
                       {"mean": 1 / m_sym, "sum_sq": S2(m_sym)}, "a_{mn}")


def z(ctx: LayerOne, level: str, tap: str = "blocks.0.attn.hook_z") -> StepResult:
    """``Var(z_j) = sigma_v^2 rho^2 (S_2(m) + Xi(m)/D)``."""
    rho2 = ctx.d if level == "leading" else _rho2(ctx)
    return _row_result(ctx, level, tap, "z = sum_n a_mn v_n: Var = sigma_v^2 rho^2 (S_2(m) + Xi(m)/D)",
                       {"mean": sp.Integer(0), "var": ctx.sigma_v**2 * rho2 * (S2(m_sym) + Xi(m_sym) / _sphere(ctx))}, "z")


def attn_out(ctx: LayerOne, level: str, tap: str = "blocks.0.hook_attn_out") -> StepResult:
    """``Var(o_i) = sigma_o^2 d Var(z_j)``."""
    rho2 = ctx.d if level == "leading" else _rho2(ctx)
    var = ctx.sigma_o**2 * ctx.d * ctx.sigma_v**2 * rho2 * (S2(m_sym) + Xi(m_sym) / _sphere(ctx))
    return _row_result(ctx, level, tap, "Output projection W_o z: variance sigma_o^2 d Var(z_j)", {"mean": sp.Integer(0), "var": var}, "o")


def residual(ctx: LayerOne, level: str, tap: str = "blocks.0.hook_resid_mid") -> StepResult:
    """``x + W_o z``: ``sigma_e^2 + Var(o_i)`` (``W_o`` is independent with mean 0)."""
    rho2 = ctx.d if level == "leading" else _rho2(ctx)
    var = ctx.sigma_e**2 + ctx.sigma_o**2 * ctx.d * ctx.sigma_v**2 * rho2 * (S2(m_sym) + Xi(m_sym) / _sphere(ctx))
    return _row_result(ctx, level, tap, "x + W_o z: the variances add (W_o independent, mean 0)",
                       {"mean": sp.Integer(0), "var": var}, "x'")


STEPS = {"attn.hook_q": projection, "attn.hook_k": projection, "attn.hook_v": projection,
         "attn.hook_attn_scores": scores, "attn.hook_pattern": pattern, "attn.hook_z": z, "hook_attn_out": attn_out,
         "hook_resid_mid": residual, "hook_resid_post": residual}

TEXT: dict[str, StepText] = {
    "ln1.hook_normalized": StepText(
        heading="RMSNorm",
        subject="<<e>>_{<<m>>,i}",
        derivation=r"""RMSNorm (gain $1$) maps $<<x>>$ to $<<e>> = <<x>>/\sqrt{\lVert <<x>>\rVert^{2}/<<d_model>> + <<ln_eps>>}$. No mean
is removed, so $<<e>> = \lVert <<e>>\rVert\, w$ with $w$ uniform on the unit sphere of all $<<d_model>>$ dimensions and
\begin{align}
\lVert <<e>>\rVert^{2} &= \frac{<<d_model>> <<X>>}{<<X>> + <<c>>}, \quad <<X>> \sim \chi^{2}_{<<d_model>>}, \nonumber\\
<<Var>>[<<e>>_{<<m>>,i}] &= <<nu_1>>, \quad <<Cov>>[<<e>>_{<<m>>,i}, <<e>>_{<<m>>,j}] = 0. \label{@label(rmsnorm)}
\end{align}
With $<<ln_eps>> = 0$, $<<e>>_{<<m>>,i}^{2}/<<d_model>> \sim \mathrm{Beta}\bigl(\tfrac12, \tfrac{<<d_model>>-1}{2}\bigr)$: variance $1$,
excess kurtosis $-6/(<<d_model>>+2)$; the keys' sphere has dimension $<<D>> = <<d_model>>$.""",
    ),
    "attn.hook_attn_scores": StepText(
        heading="Attention logits (modern layer)",
        subject="<<l>>_{<<m>><<n>>}",
        derivation=r"""With QK-norm each head's query and key are divided by their r.m.s.\ over $<<d_head>>$; for independent
$<<W>>_{q}$, $<<W>>_{k}$ they are independent isotropic vectors whatever the input, so
\begin{align}
<<l>>_{<<m>><<n>>} &= <<s>>\, <<d_head>> \cos(<<q>>_{<<m>>}, <<k>>_{<<n>>}), \nonumber\\
\cos^{2} &\sim \mathrm{Beta}\Bigl(\tfrac12, \tfrac{<<d_head>>-1}{2}\Bigr), \nonumber\\
<<Var>>[<<l>>_{<<m>><<n>>}] &= <<s>>^{2} <<d_head>>, \label{@label(qknorm)}
\end{align}
independent of the $\sigma$'s (excess kurtosis $-6/(<<d_head>>+2)$). RoPE rotates $<<q>>_{<<m>>}$ and $<<k>>_{<<n>>}$ by their positions:
$R_{<<m>>}<<q>>\cdot R_{<<n>>}<<k>> = <<q>>\cdot R_{<<n>>-<<m>>}<<k>>$ has the law of $<<q>>\cdot <<k>>$. The temperature multiplies the
queries of row $<<m>>$ by $\gamma(<<m>>) = s_{T}\log(\lfloor <<m>>/F\rfloor + 1) + 1$, the variance by $\gamma(<<m>>)^{2}$; ALiBi adds
$-\beta_{h}(<<m>>-<<n>>)$, whose mean and spread over the keys and heads enter the pooled moments.""",
    ),
    "attn.hook_pattern": StepText(
        heading="Softmax of a modern layer",
        subject="<<a>>_{<<m>><<n>>}",
        derivation=r"""Given the query side the logits of row $<<m>>$ are independent: $<<l>>_{<<m>><<n>>} = b_{<<n>>} + \sqrt{<<tau>>^{2} G}\, x_{<<n>>}$
with deterministic offsets $b_{<<n>>}$ ($-\beta_{h}(<<m>>-<<n>>)$ for ALiBi, else $0$), a row factor $G$ of mean $1$
($\chi^{2}_{<<d_head>>}/<<d_head>>$ of the query norm, absent under QK-norm, times $\chi^{2}_{<<D>>}/<<D>>$ of the projected query; RoPE
draws the latter per key, to first order in its variance) and $x_{<<n>>}$ one coordinate of a uniform point of $S^{<<D>>-1}$
($S^{<<d_head>>-1}$ under QK-norm). With $1/S^{2} = \int_{0}^{\infty} t\, e^{-tS}\,dt$,
\begin{align}
<<S_2>>(<<m>>) &= \int_{0}^{\infty} t \sum_{<<n>>\le <<m>>} \psi_{<<n>>}(t) \prod_{<<n>>' \ne <<n>>} \phi_{<<n>>'}(t)\, dt, \nonumber\\
\phi_{<<n>>}(t) &= \phi_{0}\bigl(t\, e^{b_{<<n>>}}\bigr), \label{@label(rowlaw)}
\end{align}
the ALiBi keys being the distance-$0$ key shifted in $\log t$. $<<E>>[<<a>>_{<<m>><<n>>}] = 1/<<m>>$ pooled over the keys for every variant.""",
    ),
    "attn.hook_z": StepText(
        heading="Value aggregation (modern layer)",
        subject="<<z>>_{<<m>>,j}",
        derivation=r"""At layer $1$ the keys are independent ($<<E>>[<<e>>_{<<n>>}\cdot <<e>>_{<<n>>'}] = <<rho>>^{2}\delta_{<<n>><<n>>'}$), so for every variant
\begin{align}
<<Var>>[<<z>>_{<<m>>,j}] &= <<sigma_v>>^{2}<<rho>>^{2}\Bigl(<<S_2>>(<<m>>) + \frac{<<Xi>>(<<m>>)}{<<D>>}\Bigr), \nonumber\\
<<Xi>>(<<m>>) &= \kappa^{2}\,\bar c(<<m>>) \nonumber\\
&\quad \times <<E>>\Bigl[\sum_{<<n>>\ne <<n>>'} <<a>>_{<<m>><<n>>}<<a>>_{<<m>><<n>>'} x_{<<n>>} x_{<<n>>'}\Bigr]. \label{@label(coupling)}
\end{align}
QK-norm: $\kappa^{2} = (<<E>>\chi_{<<d_head>>})^{2}/<<d_head>>$ (given its cosine, a key's component along the query is $\lVert <<k>>\rVert\cos$).
RoPE: the rotated query directions of keys $<<n>>, <<n>>'$ have cosine $c(<<n>>-<<n>>')$, $c(\delta) = \frac{2}{<<d_head>>}\sum_{i}\cos(\delta\theta_{i})$,
$\theta_{i} = \Theta^{-2i/<<d_head>>}$, and $\bar c(<<m>>)$ is its mean over the pairs of the row: the coupling shrinks, $<<S_2>>$ does not change.""",
    ),
    "hook_attn_out": StepText(
        heading="Output projection",
        subject="<<o>>_{<<m>>,i}",
        derivation=r"""$<<Var>>[<<o>>_{<<m>>,i}] = <<sigma_o>>^{2}<<d_model>><<Var>>[<<z>>_{<<m>>,j}]$: $<<W>>_{o}$ is independent with mean zero
(with grouped-query attention too: heads sharing a key/value head are correlated, but $<<W>>_{o}$'s columns are independent, so the
cross-head covariance never reaches a second moment of $<<o>>$).""",
    ),
}
TEXT["hook_resid_mid"] = TEXT["hook_resid_post"] = StepText(
    heading="Residual write", subject="<<x>>_{<<m>>,i}",
    derivation=r"""$<<Var>>[<<x>>_{<<m>>,i} + <<o>>_{<<m>>,i}] = <<sigma_embed>>^{2} + <<Var>>[<<o>>_{<<m>>,i}]$ ($<<W>>_{o}$ independent, mean zero).""")
for _s in ("attn.hook_q", "attn.hook_k", "attn.hook_v"):
    TEXT[_s] = StepText(heading={"attn.hook_q": "Query projection", "attn.hook_k": "Key projection",
                                 "attn.hook_v": "Value projection"}[_s],
                        subject="<<" + _s[-1] + ">>_{<<m>>,j}",
                        derivation=r"""Given $<<e>>_{<<m>>}$ a coordinate is Gaussian with variance $\sigma^{2}\lVert <<e>>_{<<m>>}\rVert^{2}$
(before QK-norm, RoPE and the temperature, as the tap records it): $<<Var>> = \sigma^{2}<<rho>>^{2}$.""")


def uses_modern_steps(spec) -> bool:
    """Whether the first layer's attention is a variant these steps cover (`theory.depth_maps.modern_attention.is_modern`)."""
    return _map.is_modern(_first_branch(spec)[1], spec)


__all__ = ["rmsnorm", "rms_moments", "projection", "scores", "pattern", "z", "attn_out", "residual", "STEPS", "TEXT", "uses_modern_steps"]
