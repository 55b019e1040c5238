"""Softmax expectations of one attention row, derived with sympy.

Setting (exact for the first-layer NoPE block with ``ln_eps = 0``, see docs/theory.md):
given the query side, the m logits ``l_1..l_m`` of row m are i.i.d. with variance
``v = tau^2``; each is ``sqrt(D v) c`` with c one coordinate of a uniform unit vector in
``R^D`` (``D = d_model - 1``; ``D -> oo`` is the Gaussian case). Two row quantities drive
the variance of ``hook_z``:

* ``S2(m) = E[sum_n a_mn^2]``, the inverse effective number of attended tokens;
* ``X(m) = E[sum_{n != n'} a_mn a_mn' l_mn l_mn'] / v``, the coupling between weights
  and the values they average (a weight is large when its key, hence its value,
  leans toward the query's direction).

Derivations here:

* :func:`row_series` -- the small-``v`` series at symbolic m. Write
  ``sum a^2 = m^-2 A (1 + delta)^-2`` with ``A = sum e^{2 l}``,
  ``delta = m^-1 sum (e^l - 1)``, expand ``(1 + delta)^-2`` binomially, take each
  ``E[A B^j]`` with the i.i.d.-sum partition rule of :mod:`theory._moments`, and the
  single-logit moments ``E[l^p e^{a l}]`` from the series of the logit's moment
  generating function (sphere law: ``E[c^{2k}] = (1/2)_k / (D/2)_k``). The coupling
  uses ``(sum a l)^2 - sum a^2 l^2 = m^-2 (P^2 - Q)(1 + delta)^-2`` with
  ``P = sum l e^l``, ``Q = sum l^2 e^{2l}``. Terms ``j <= 2K`` (resp. ``2K + 2``) are
  exactly what order ``v^K`` needs: every factor ``e^l - 1`` brings at least one power
  of ``sqrt(v)``.
* :func:`row_large_m` -- the law of large numbers: ``m S2(m) -> E[e^{2l}] / E[e^l]^2``
  and ``X(m) -> E[l e^l]^2 / (E[e^l]^2 v)``, derived from the Gaussian MGF for Gaussian logits
  (``e^v`` and ``v``).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import sympy as sp
from sympy.utilities.iterables import multiset_partitions

from ._moments import falling_factorial, gaussian_exp_moment

m_sym = sp.Symbol("m", positive=True, integer=True)
v_sym = sp.Symbol("tau2", positive=True)  # conditional logit variance tau^2
D_sym = sp.Symbol("D", positive=True)  # sphere dimension of the key directions

# Each label is a sum of terms coef * l^power * e^{rate l}.
_LABEL_TERMS = {
    "A": ((1, 0, 2),),  # e^{2l}
    "B": ((1, 0, 1), (-1, 0, 0)),  # e^l - 1
    "P": ((1, 1, 1),),  # l e^l
    "Q": ((1, 2, 2),),  # l^2 e^{2l}
}


Series = tuple  # coefficients (c_0, ..., c_K) of a polynomial in v, truncated at v^K


def _series_of(expr: sp.Expr, order: int) -> Series:
    """Coefficients of a polynomial in v, up to ``v^order``."""
    expr = sp.expand(expr)
    return tuple(expr.coeff(v_sym, k) for k in range(order + 1))


def _mul(x: Series, y: Series) -> Series:
    """Product of two truncated series (same order)."""
    order = len(x) - 1
    return tuple(
        sp.expand(sum(x[i] * y[k - i] for i in range(k + 1))) for k in range(order + 1)
    )


def _add(x: Series, y: Series, scale: sp.Expr = 1) -> Series:
    return tuple(sp.expand(a + scale * b) for a, b in zip(x, y))


@lru_cache(maxsize=None)
def _logit_mgf(order: int, gaussian: bool) -> sp.Expr:
    """Series of ``E[e^{a l}]`` in v up to ``v^order`` (a polynomial in a and v).

    ``E[e^{a l}] = sum_k a^{2k} (D v)^k E[c^{2k}] / (2k)!`` with the Beta moments
    ``E[c^{2k}] = prod_{i<k} (1/2 + i)/(D/2 + i)`` of ``c^2 ~ Beta(1/2, (D-1)/2)``; the
    Gaussian case is the limit ``D -> oo``: ``E[l^{2k}] = (2k-1)!! v^k``.
    """
    a = sp.Symbol("a")
    total = sp.Integer(0)
    for k in range(order + 1):
        if gaussian:
            moment = sp.factorial2(2 * k - 1) * v_sym**k
        else:
            moment = (D_sym * v_sym) ** k * sp.rf(sp.Rational(1, 2), k) / sp.rf(D_sym / 2, k)
        total += a ** (2 * k) * moment / sp.factorial(2 * k)
    return total


@lru_cache(maxsize=None)
def _exp_moment(power: int, rate: int, order: int, gaussian: bool) -> Series:
    """``E[l^power e^{rate l}]`` as a series in v: the power-th a-derivative of the MGF.

    Differentiating in a leaves the v-degree of every term unchanged, so the MGF to
    ``v^order`` gives the result to ``v^order``.
    """
    a = sp.Symbol("a")
    return _series_of(sp.diff(_logit_mgf(order, gaussian), a, power).subs(a, rate), order)


@lru_cache(maxsize=None)
def _block_moment(labels: tuple[str, ...], order: int, gaussian: bool) -> Series:
    """``E[prod_{label} f_label(l)]`` for one logit, as a series truncated at ``v^order``."""
    terms = [(sp.Integer(1), 0, 0)]
    for label in labels:
        terms = [
            (c1 * c2, p1 + p2, r1 + r2)
            for (c1, p1, r1) in terms
            for (c2, p2, r2) in _LABEL_TERMS[label]
        ]
    total: Series = (sp.Integer(0),) * (order + 1)
    for c, p, r in terms:
        total = _add(total, _exp_moment(p, r, order, gaussian), c)
    return total


def _set_partition_count(labels: list[str], blocks: list[list[str]]) -> int:
    """How many set partitions of the labelled factors have these multiset blocks."""
    count = 1
    for n in Counter(labels).values():
        count *= int(sp.factorial(n))
    for block in blocks:
        for n in Counter(block).values():
            count //= int(sp.factorial(n))
    for n in Counter(tuple(sorted(b)) for b in blocks).values():
        count //= int(sp.factorial(n))
    return count


def _iid_moment(labels: list[str], order: int, gaussian: bool) -> Series:
    """``E[prod_i (sum_{n<=m} f_i(l_n))]`` at symbolic m, as a series to ``v^order``.

    The set-partition rule of :func:`theory._moments.iid_sums_mixed_moment`, with
    identical factors grouped (multiset partitions weighted by how many set
    partitions each stands for) so that eight factors stay cheap.
    """
    total: Series = (sp.Integer(0),) * (order + 1)
    for blocks in multiset_partitions(sorted(labels)):
        weight = _set_partition_count(labels, blocks) * falling_factorial(m_sym, len(blocks))
        term: Series = (sp.Integer(1),) + (sp.Integer(0),) * order
        for block in blocks:
            term = _mul(term, _block_moment(tuple(block), order, gaussian))
        total = _add(total, term, weight)
    return total


def _ratio_series(numerator_labels, order: int, gaussian: bool, max_j: int) -> sp.Expr:
    """``m^-2 E[N (1 + delta)^-2]`` with N a signed combination of products of sums."""
    total: Series = (sp.Integer(0),) * (order + 1)
    for j in range(max_j + 1):
        coef = sp.binomial(-2, j) / m_sym**j
        for sign, labels in numerator_labels:
            total = _add(total, _iid_moment(list(labels) + ["B"] * j, order, gaussian), sign * coef)
    return sum(
        (sp.factor(sp.cancel(c / m_sym**2)) * v_sym**k for k, c in enumerate(total)), sp.Integer(0)
    )


@lru_cache(maxsize=None)
def row_series(quantity: str, order: int = 2, gaussian: bool = False) -> sp.Expr:
    """Small-logit-variance series of a row quantity, to ``O(v^{order+1})``, symbolic m.

    ``quantity`` is ``"sum_sq"`` (``S2(m)``) or ``"coupling"`` (``X(m)``, already divided
    by v). Coefficients are rational functions of m (and of D for the sphere law).

    >>> sp.simplify(row_series("sum_sq", 1, gaussian=True) - (m_sym + v_sym * (m_sym - 1)) / m_sym**2)
    0
    """
    if quantity == "sum_sq":
        return _ratio_series([(1, ("A",))], order, gaussian, 2 * order)
    if quantity == "coupling":
        raw = _ratio_series([(1, ("P", "P")), (-1, ("Q",))], order + 1, gaussian, 2 * order + 2)
        return sp.expand(raw / v_sym, deep=False, mul=True, multinomial=False, power_base=False)
    raise ValueError(f"quantity must be 'sum_sq' or 'coupling', got {quantity!r}")


@lru_cache(maxsize=None)
def row_large_m(quantity: str) -> sp.Expr:
    """Large-m limit (law of large numbers) for Gaussian logits of variance v.

    ``m S2(m) -> E[e^{2l}]/E[e^l]^2 = e^v`` and ``X(m) -> (E[l e^l]/E[e^l])^2 / v = v``.
    Returns ``m S2`` (resp. ``X``) in the limit, from the Gaussian moment generating
    function (integrated by sympy in :mod:`theory._moments`).
    """
    if quantity == "sum_sq":
        ratio = gaussian_exp_moment(0, 2, v_sym) / gaussian_exp_moment(0, 1, v_sym) ** 2
    elif quantity == "coupling":
        ratio = (gaussian_exp_moment(1, 1, v_sym) / gaussian_exp_moment(0, 1, v_sym)) ** 2 / v_sym
    else:
        raise ValueError(f"quantity must be 'sum_sq' or 'coupling', got {quantity!r}")
    return sp.simplify(ratio)
