"""The shared quantities of the theory, each computed in this one place.

Every formula works on sympy expressions (symbolic specs, `theory.steps`) and on floats
(the depth recursion, the domain check, simulate's logit scale, verify) alike.

* `logit_scale`: the factor ``s`` of the logits ``l_mn = s q_m . k_n``: ``d_head^{-1/2}``
  (``attn_scale = "sqrt"``, Vaswani et al. 2017) or ``d_head^{-1}`` (``"linear"``, muP).
* `mean_logit_variance`: ``tau_bar^2 = s^2 sigma_q^2 sigma_k^2 d_head rho^4`` with
  ``rho^2 = E|e|^2``: the variance of an off-diagonal logit at layer 0 (``rho^2 = d nu_1``),
  and, with the per-position ``rho^2`` and key spread of the depth kernel, at any layer.
* `radius_spread`: ``delta = c/(d - 1 + c) sqrt(2/(d - 1))``, ``c = d eps/sigma_e^2``: the
  relative spread of the LayerNorm radius ``|e|^2`` (0 at eps = 0, where ``|e|^2 = d``).

>>> logit_scale(16, "sqrt"), logit_scale(16, "linear")
(0.25, 0.0625)
>>> import sympy as sp
>>> logit_scale(sp.Symbol("h", positive=True), "sqrt")
1/sqrt(h)
"""

from __future__ import annotations

import math

import sympy as sp

SCALE_RULES = ("sqrt", "linear")


def _is_sympy(*values) -> bool:
    return any(isinstance(v, sp.Basic) for v in values)


def _sqrt(x):
    return sp.sqrt(x) if _is_sympy(x) else math.sqrt(x)


def _check_rule(rule: str) -> None:
    if rule not in SCALE_RULES:
        raise ValueError(f"attn_scale must be one of {', '.join(SCALE_RULES)}, got {rule!r}")


def logit_scale(d_head, rule: str):
    """``s = d_head^{-1/2}`` (``"sqrt"``) or ``d_head^{-1}`` (``"linear"``)."""
    _check_rule(rule)
    return 1 / _sqrt(d_head) if rule == "sqrt" else 1 / d_head if _is_sympy(d_head) else 1.0 / d_head


def logit_scale_squared(d_head, rule: str):
    """``s^2 = 1/d_head`` or ``1/d_head^2``, without a square root (exact in floats)."""
    _check_rule(rule)
    if _is_sympy(d_head):
        return 1 / d_head if rule == "sqrt" else 1 / d_head**2
    return 1.0 / d_head if rule == "sqrt" else 1.0 / (d_head * d_head)


def mean_logit_variance(scale2, sigma_q, sigma_k, d_head, rho2):
    """``tau_bar^2 = s^2 sigma_q^2 sigma_k^2 d_head rho^4`` (``rho^2 = E|e|^2``).

    Written as products of moderate factors so that a float overflow gives inf, never an
    OverflowError (the domain check relies on it).
    """
    return scale2 * (sigma_q * sigma_k) * (sigma_q * sigma_k) * d_head * rho2 * rho2


def radius_spread(d, eps, sigma_e):
    """``delta = c/(d - 1 + c) sqrt(2/(d - 1))``, ``c = d eps/sigma_e^2``.

    ``c/(d - 1 + c)`` is written as ``d eps/((d - 1) sigma_e^2 + d eps)``: no division by
    ``sigma_e^2`` (``sigma_embed = 0`` with ``eps > 0`` is legal; then the share is 1).
    """
    if not _is_sympy(d, eps, sigma_e) and float(eps) == 0.0:
        return 0.0
    share = d * eps / ((d - 1) * sigma_e**2 + d * eps)
    return share * _sqrt(2 / (d - 1) if _is_sympy(d) else 2.0 / (d - 1))


def alibi_slopes(n_heads: int) -> list[float]:
    """Per-head ALiBi slopes of Press et al. 2022 (their reference ``get_slopes``): for a
    power of two ``n``, ``2^(-8 k / n)``, k = 1..n; otherwise those of the power of two below
    and every other slope of the one above. Theory and simulate read this one rule.

    >>> alibi_slopes(4)
    [0.25, 0.0625, 0.015625, 0.00390625]
    >>> alibi_slopes(8) == [2.0 ** -k for k in range(1, 9)]
    True
    """
    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))  # 2^(-8/n)
        return [start * start**i for i in range(n)]

    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")
    if math.log2(n_heads).is_integer():
        return power_of_two(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return power_of_two(closest) + power_of_two(2 * closest)[0::2][: n_heads - closest]


__all__ = ["SCALE_RULES", "logit_scale", "logit_scale_squared", "mean_logit_variance", "radius_spread", "alibi_slopes"]
