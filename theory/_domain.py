"""The theory's domain: which specs it covers, and which numbers float64 can carry.

`check_domain` is the one place that says so; `derive`, `predict`, `theory.depth.predict`
and verify (before it simulates) call it first, so a spec outside the domain is one
`ValueError` naming the field and the reason, before any work.

Structural conditions (every spec):

* ``positional`` per layer one of ``none``, ``rope``, ``alibi`` (`THEORY_POSITIONALS`; RoPE
  needs an even ``d_head``, QK-norm ``d_head >= 2``; the modern-block fields are numeric
  only) and ``vocab_size = null``: the laws are derived for i.i.d. Gaussian inputs (a token
  table repeats inputs across positions);
* ``d_model >= 3``: the LayerNorm output lies on a sphere of dimension ``d_model - 1``
  in the subspace orthogonal to the all-ones vector; its coordinate law
  ``e_i^2/(d-1) ~ Beta(1/2, (d-2)/2)`` needs ``d_model >= 3`` (at ``d_model = 2`` each
  coordinate is exactly +-1, another law);
* ``sigma_embed > 0`` with a square that is a normal float64 (``[2.2e-308, 1.8e308]``):
  the input variance ``sigma_embed^2`` is the first entry of the position kernel. At
  ``sigma_embed = 0`` every input is the zero vector: every tap is exactly 0 (eps > 0) or
  0/0 (eps = 0), and none of the laws applies.

Numeric conditions (where numbers are evaluated: `predict`, the depth recursion):

* the per-layer gains of the residual stream, ``sigma_q^2 d``, ``sigma_v^2 d``,
  ``sigma_o^2 sigma_v^2 d^2``, ``sigma_mlp_in^2 d`` and ``sigma_mlp_out^2 d_mlp``, are
  finite in float64 (the recursion multiplies them into the kernel);
* at ``level = 'best'``, the softmax quadrature's own error estimate at the first layer's mean
  logit variance ``tau_bar^2`` is within `QUADRATURE_TOLERANCE`; deeper layers are
  checked as the recursion reaches them (`check_logit_variance`).
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache

import numpy as np

from ._budget import format_count
from ._layernorm import norm_moments_numeric
from ._quadrature import row_expectations, scaled_chi2_rule
from .quantities import logit_scale_squared, mean_logit_variance
from .spec import ModelSpec

# The softmax quadrature (`theory._quadrature`) is checked where it is used, by its own
# error estimate: the rule depth uses against one with 2x the logit nodes and a 2x finer
# t step, at m = 2, 64, 4096. Below `TAU2_SAFE` the estimate is skipped: measured at
# most 1.2e-6 against a 4x finer rule (d_head = 1..8, D = 15..1e7; tests). Past
# `TAU2_NODE_MAX` on the mixture's largest node the rule's t grid (it grows as exp(tau))
# is not even built. `QUADRATURE_TOLERANCE` is a default: the relative error accepted.
TAU2_SAFE = 1.0
TAU2_NODE_MAX = 1e4
QUADRATURE_TOLERANCE = 1e-4
MIXTURE_NODES = 12  # the larger of the mixture rules theory uses (row_expectations' default)

_TINY, _HUGE = sys.float_info.min, sys.float_info.max


def _number(value) -> float | None:
    """A numeric field as float (inf beyond float range); None for a symbol."""
    try:
        return float(value)
    except OverflowError:
        return math.inf
    except TypeError:
        return None


def check_domain(spec: ModelSpec, *, evaluate: bool = False, level: str = "best") -> None:
    """Raise one ValueError, naming the field and the reason, if ``spec`` is outside the theory.

    ``evaluate``: also check that the numbers float64 must carry stay finite (for
    `predict` and `theory.depth.predict`; the symbolic derivation carries exact numbers).
    ``level``: ``'best'`` adds the softmax quadrature's error estimate (`check_logit_variance`).
    """
    check_structure(spec, zero_input_ok=evaluate)
    if not evaluate or spec.is_symbolic:
        return
    d, sigma_e = _number(spec.d_model), _number(spec.sigma_embed)
    if sigma_e == 0:
        return
    _check_gains(spec)
    eps = float(spec.ln_eps)
    c = d * eps / sigma_e / sigma_e
    if not math.isfinite(c):
        raise ValueError(
            f"sigma_embed = {sigma_e:.3g} with ln_eps = {eps:.3g}: d_model * ln_eps / sigma_embed^2 overflows float64 "
            f"(LayerNorm's output would be 0 to every digit); raise sigma_embed or lower ln_eps")
    if level == "best" and not spec.qk_norm_at(0):  # QK-norm: s^2 d_head whatever the sigmas (checked in the recursion)
        check_logit_variance(layer_one_logit_variance(spec), 0, _number(spec.d_head), d - 1)


def check_structure(spec: ModelSpec, zero_input_ok: bool = False) -> None:
    """The structural half of `check_domain` (no numbers evaluated). ``zero_input_ok``:
    accept ``sigma_embed = 0`` with ``ln_eps > 0`` (predictions: every tap exactly 0);
    a derivation refuses it, since the laws' shapes (excess kurtosis) are then 0/0."""
    _check_positional(spec)
    if spec.vocab_size is not None:
        raise ValueError(
            f"the theory assumes continuous Gaussian inputs (vocab_size null); got vocab_size = "
            f"{spec.vocab_size}: a finite table repeats inputs across positions. Use vocab_size = null for theory.")
    d = _number(spec.d_model)
    if d is not None and d < 3:
        raise ValueError(
            f"d_model = {int(d)}: the theory needs d_model >= 3 (the LayerNorm output lies on a sphere of "
            f"dimension d_model - 1; its coordinate law Beta(1/2, (d_model - 2)/2) needs d_model >= 3)")
    sigma_e = _number(spec.sigma_embed)
    if sigma_e is not None:
        if sigma_e == 0:
            if _number(spec.ln_eps) == 0:
                raise ValueError(
                    "sigma_embed = 0 with ln_eps = 0: every input is the zero vector and LayerNorm divides 0 by 0; "
                    "use sigma_embed > 0 (or ln_eps > 0, where every tap is exactly 0)")
            if not zero_input_ok:
                raise ValueError(
                    "sigma_embed = 0: every input is the zero vector, so every tap is exactly 0 (LN(0) = 0) and the "
                    "laws' shapes (excess kurtosis) are 0/0; derive needs sigma_embed > 0 (predict gives the zeros)")
            return
        square = sigma_e * sigma_e
        if not _TINY <= square <= _HUGE:
            raise ValueError(
                f"sigma_embed = {sigma_e:.3g}: its square (the input variance) {'underflows' if square < _TINY else 'overflows'} "
                f"float64; the theory needs {math.sqrt(_TINY):.2g} <= sigma_embed <= {math.sqrt(_HUGE):.2g}")


# The positional schemes the theory covers, per layer (`theory._modern`, docs/modern-blocks.md):
# NoPE (the subject), RoPE (rotated logits) and ALiBi (deterministic offsets in the softmax row).
THEORY_POSITIONALS = ("none", "rope", "alibi")


def _check_positional(spec: ModelSpec) -> None:
    """Positional schemes, QK-norm and the temperature where the theory covers them; a clear refusal elsewhere."""
    schemes = spec.positional_schemes
    bad = [s for s in schemes if s not in THEORY_POSITIONALS]
    if bad:
        raise ValueError(
            f"positional = {spec.positional!r}: theory covers the per-layer schemes {', '.join(map(repr, THEORY_POSITIONALS))} "
            f"(NoPE, RoPE, ALiBi); the input tables {', '.join(map(repr, bad))} exist in simulate for comparison only")
    d_head = _number(spec.d_head) if not spec.is_symbolic else None
    if spec.is_symbolic and (schemes != ("none",) or spec.qk_norm is not False or spec.attn_temperature is not None
                             or spec.normalization != "layernorm"):
        raise ValueError(
            "positional, qk_norm, attn_temperature, normalization: the modern-block laws are numeric "
            "(theory._modern); give numbers for every spec field, or use the NoPE LayerNorm block symbolically")
    if d_head is not None:
        if "rope" in schemes and int(d_head) % 2:
            raise ValueError(f"positional 'rope' rotates pairs of coordinates: d_head = d_model / n_heads must be even, "
                             f"got {int(d_head)}")
        uses_qk = spec.qk_norm if isinstance(spec.qk_norm, bool) else any(spec.qk_norm)
        if uses_qk and d_head < 2:
            raise ValueError(f"qk_norm: the logit is a cosine in d_head dimensions, which needs d_head >= 2; got {int(d_head)}")


def _check_gains(spec: ModelSpec) -> None:
    d, d_mlp = _number(spec.d_model), _number(spec.mlp_width)
    sq, sk, sv = float(spec.sigma_q), float(spec.sigma_k), float(spec.sigma_v)
    so, sin, sout = float(spec.sigma_o_effective), float(spec.sigma_mlp_in), float(spec.sigma_mlp_out_effective)
    gains = [
        ("sigma_q", "sigma_q^2 d_model", sq * sq * d),
        ("sigma_k", "sigma_k^2 d_model", sk * sk * d),
        ("sigma_v", "sigma_v^2 d_model", sv * sv * d),
        ("sigma_o and sigma_v", "sigma_o^2 sigma_v^2 d_model^2", (so * sv * d) * (so * sv * d)),
    ]
    if not spec.attn_only:
        gains += [("sigma_mlp_in", "sigma_mlp_in^2 d_model", sin * sin * d),
                  ("sigma_mlp_out", "sigma_mlp_out^2 d_mlp", sout * sout * d_mlp)]
    for fields, formula, value in gains:
        if not math.isfinite(value):
            raise ValueError(
                f"{fields}: the variance gain {formula} overflows float64 (d_model = {format_count(spec.d_model)}); "
                f"predictions would be inf. Use smaller {fields}")


def layer_one_logit_variance(spec: ModelSpec) -> float:
    """``tau_bar^2 = s^2 sigma_q^2 sigma_k^2 d_head (d nu_1)^2`` of the first layer (`steps.LayerOne.tau2_bar`)."""
    d, d_head = _number(spec.d_model), _number(spec.d_head)
    nu1, _ = norm_moments_numeric(d, float(spec.ln_eps), float(spec.sigma_embed))
    return mean_logit_variance(logit_scale_squared(d_head, spec.attn_scale), float(spec.sigma_q), float(spec.sigma_k),
                               d_head, d * nu1)


def largest_node(tau2_mean: float, d_head: float, sphere_dim: float) -> float:
    """The largest ``tau_bar^2 a b`` over the mixture's Gauss nodes ``a`` (chi^2_{d_head}/d_head), ``b`` (chi^2_D/D)."""
    a = float(scaled_chi2_rule(MIXTURE_NODES, d_head)[0].max())
    b = float(scaled_chi2_rule(MIXTURE_NODES, sphere_dim)[0].max())
    return tau2_mean * a * b


@lru_cache(maxsize=128)
def quadrature_error(tau2_mean: float, d_head: float, sphere_dim: float) -> float:
    """Relative error estimate of the row quadrature at ``tau2_mean``: default rule against a 2x finer one."""
    pos = np.array([2, 64, 4096])
    rule = dict(n_mixture=8, n_mixture_sphere=8)
    try:
        with np.errstate(all="ignore"):
            coarse = row_expectations(pos, tau2_mean, d_head, sphere_dim, **rule)
            fine = row_expectations(pos, tau2_mean, d_head, sphere_dim, n_logit=128, y_step=0.02, **rule)
            err = float(np.max(np.abs(coarse.sum_sq / fine.sum_sq - 1)))
    except (ValueError, MemoryError, FloatingPointError):
        return math.inf
    return err if math.isfinite(err) else math.inf


def check_logit_variance(tau2_mean: float, layer: int, d_head: float, sphere_dim: float) -> None:
    """Refuse a logit variance where the softmax quadrature's own error estimate exceeds `QUADRATURE_TOLERANCE`."""
    if tau2_mean <= TAU2_SAFE:
        return
    node = largest_node(tau2_mean, d_head, sphere_dim)
    err = quadrature_error(float(f"{tau2_mean:.3g}"), float(d_head), float(sphere_dim)) if node <= TAU2_NODE_MAX else math.inf
    if not err <= QUADRATURE_TOLERANCE:
        why = (f"the softmax quadrature's error estimate there is {err:.2g} > {QUADRATURE_TOLERANCE:g}"
               if math.isfinite(err) else f"the softmax quadrature cannot resolve it (largest mixture node {node:.3g})")
        raise ValueError(
            f"sigma_q, sigma_k, d_model: the mean logit variance at layer {layer} is {tau2_mean:.3g}; {why}; "
            f"attention is nearly one-hot there: use smaller sigma_q, sigma_k or --level leading")
