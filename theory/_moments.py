"""The moment engine: exact moments where sympy.stats cannot help.

sympy.stats cannot take i.i.d. sums over a *symbolic* number of terms, and its
integrator does not finish softmax or LayerNorm expectations. The rules needed by the
NoPE layer are few and exact, and this module implements them:

* **Isserlis (Wick)**: for a centred Gaussian vector,
  ``E[x_1 ... x_2k] = sum over pairings of prod Cov(x_i, x_j)``; one coordinate:
  ``E[x^r] = (r-1)!! var^(r/2)`` for even r, 0 for odd r.
* **Independence**: ``E[(XY)^r] = E[X^r] E[Y^r]`` and ``E[(cX)^r] = c^r E[X^r]``.
* **i.i.d. sums over a symbolic count n**, two equivalent routes:
  - cumulants add: ``kappa_r(X_1 + ... + X_n) = n kappa_r(X)``
    (:meth:`MomentSequence.iid_sum`);
  - mixed moments of several i.i.d. sums ``A_i = sum_k f_i(Y_k)`` by set partitions:
    ``E[A_1 ... A_p] = sum_{partitions P of {1..p}} n^(|P|) prod_{B in P} E[prod_{i in B} f_i(Y)]``,
    with ``n^(j) = n (n-1) ... (n-j+1)`` the falling factorial (distinct blocks take
    distinct summation indices) (:func:`iid_sums_mixed_moment`).
* **Known densities**: chi-square moments ``E[X^r]`` for any real r > -k/2, from the
  integral of the density (sympy does this one with symbolic k).

Every result here is a sympy expression; tests check each rule against an independent
closed form or a quadrature.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import sympy as sp
from sympy.utilities.iterables import multiset_partitions


# --------------------------------------------------------------------------- Gaussian
def gaussian_moment(order: int, var: sp.Expr) -> sp.Expr:
    """``E[x^order]`` for ``x ~ N(0, var)`` by Isserlis: ``(order-1)!! var^(order/2)``."""
    if order % 2:
        return sp.Integer(0)
    return sp.factorial2(order - 1) * sp.sympify(var) ** sp.Rational(order, 2)


def isserlis(indices: Sequence[int], cov: Callable[[int, int], sp.Expr]) -> sp.Expr:
    """``E[x_{i1} x_{i2} ... x_{ik}]`` for a centred Gaussian vector with covariance ``cov``.

    Sum over all perfect pairings of the factors of the product of covariances
    (Isserlis 1918). Odd k gives 0.
    """
    items = list(indices)
    if not items:
        return sp.Integer(1)
    if len(items) % 2:
        return sp.Integer(0)
    first, rest = items[0], items[1:]
    total = sp.Integer(0)
    for j, partner in enumerate(rest):
        remaining = rest[:j] + rest[j + 1 :]
        total += cov(first, partner) * isserlis(remaining, cov)
    return total


_mgf_arg = sp.Symbol("t", real=True)
_var_sym = sp.Symbol("v", positive=True)
_dof_sym = sp.Symbol("k", positive=True)


@lru_cache(maxsize=None)
def _gaussian_mgf_formula() -> sp.Expr:
    """``E[e^{t x}]`` for ``x ~ N(0, v)``, integrated from the density by sympy once."""
    x = sp.Symbol("x", real=True)
    density = sp.exp(-(x**2) / (2 * _var_sym)) / sp.sqrt(2 * sp.pi * _var_sym)
    integral = sp.integrate(sp.exp(_mgf_arg * x) * density, (x, -sp.oo, sp.oo), conds="none", heurisch=False)
    return sp.simplify(integral)


def gaussian_mgf(t: sp.Expr, var: sp.Expr) -> sp.Expr:
    """``E[e^{t x}]`` for ``x ~ N(0, var)``: ``exp(t^2 var / 2)``."""
    return _gaussian_mgf_formula().subs({_mgf_arg: t, _var_sym: var})


def gaussian_exp_moment(power: int, rate: sp.Expr, var: sp.Expr) -> sp.Expr:
    """``E[x^power e^{rate x}]`` for ``x ~ N(0, var)``: the power-th t-derivative of the MGF."""
    t = sp.Dummy("t")
    return sp.diff(gaussian_mgf(t, var), t, power).subs(t, rate)


@lru_cache(maxsize=None)
def _chi2_mgf_formula() -> sp.Expr:
    """``E[e^{t X}]`` for ``X ~ chi^2_k`` (t < 1/2), integrated from the density once."""
    x = sp.Symbol("x", positive=True)
    s = sp.Symbol("s", positive=True)  # s = 1/2 - t > 0 keeps the integral convergent
    density = x ** (_dof_sym / 2 - 1) * sp.exp(-x / 2) / (2 ** (_dof_sym / 2) * sp.gamma(_dof_sym / 2))
    integral = sp.integrate(density * sp.exp(x / 2 - s * x), (x, 0, sp.oo), conds="none", heurisch=False)
    return sp.simplify(integral.subs(s, sp.Rational(1, 2) - _mgf_arg))


def chi2_mgf(t: sp.Expr, dof: sp.Expr) -> sp.Expr:
    """``E[e^{t X}]`` for ``X ~ chi^2_dof``: ``(1 - 2t)^{-dof/2}`` for ``t < 1/2``."""
    return _chi2_mgf_formula().subs({_mgf_arg: t, _dof_sym: dof})


# --------------------------------------------------------------------------- chi-square
@lru_cache(maxsize=None)
def _chi2_moment_formula() -> tuple[sp.Expr, sp.Symbol, sp.Symbol]:
    """``E[X^r]`` for ``X ~ chi^2_k``, integrated from the density by sympy once."""
    x = sp.Symbol("x", positive=True)
    k = sp.Symbol("k", positive=True)
    r = sp.Symbol("r", real=True)
    density = x ** (k / 2 - 1) * sp.exp(-x / 2) / (2 ** (k / 2) * sp.gamma(k / 2))
    integral = sp.integrate(x**r * density, (x, 0, sp.oo), conds="none")
    return sp.simplify(sp.gammasimp(integral)), k, r


def chi2_moment(dof: sp.Expr, power: sp.Expr) -> sp.Expr:
    """``E[X^power]`` for ``X ~ chi^2_dof``: ``2^power Gamma(dof/2 + power) / Gamma(dof/2)``.

    Valid for ``power > -dof/2``; integer powers simplify to rising factorials.
    """
    _, k, _ = _chi2_moment_formula()
    return sp.factor(_chi2_moment_at(sp.sympify(power)).subs(k, sp.sympify(dof)))


@lru_cache(maxsize=None)
def _chi2_moment_at(power: sp.Expr) -> sp.Expr:
    """``E[X^power]`` simplified with the degrees of freedom still a symbol (see `_beta_moment_at`)."""
    formula, k, r = _chi2_moment_formula()
    return sp.factor(sp.expand_func(sp.gammasimp(formula.subs(r, power))))


# --------------------------------------------------------------------------- sequences
@dataclass(frozen=True)
class MomentSequence:
    """Raw moments ``E[X^0] = 1, E[X^1], ..., E[X^K]`` of one scalar random variable.

    Operations implement the exact rules of the module docstring; the order K of the
    result is the smallest order of the operands.

    >>> g = MomentSequence.gaussian(1, 4)
    >>> (g * g).moments[2], (g * g).moments[4]   # product of two independent N(0,1)
    (1, 9)
    >>> s = (g * g).iid_sum(sp.Symbol("n", positive=True))
    >>> sp.simplify(s.excess_kurtosis)
    6/n
    """

    moments: tuple[sp.Expr, ...]

    # --- constructors
    @classmethod
    def gaussian(cls, var: sp.Expr, order: int = 4) -> "MomentSequence":
        return cls(tuple(gaussian_moment(r, var) for r in range(order + 1)))

    @classmethod
    def constant(cls, value: sp.Expr, order: int = 4) -> "MomentSequence":
        value = sp.sympify(value)
        return cls(tuple(value**r for r in range(order + 1)))

    @classmethod
    def chi2(cls, dof: sp.Expr, order: int = 4) -> "MomentSequence":
        return cls(tuple(chi2_moment(dof, r) for r in range(order + 1)))

    @classmethod
    def from_cumulants(cls, cumulants: Sequence[sp.Expr]) -> "MomentSequence":
        """Raw moments from cumulants ``kappa_1..kappa_K`` by the recursion
        ``mu_n = sum_{j=1}^{n} C(n-1, j-1) kappa_j mu_{n-j}``."""
        mu = [sp.Integer(1)]
        for n in range(1, len(cumulants) + 1):
            mu.append(sp.expand(sum(sp.binomial(n - 1, j - 1) * cumulants[j - 1] * mu[n - j] for j in range(1, n + 1))))
        return cls(tuple(mu))

    # --- views
    @property
    def order(self) -> int:
        return len(self.moments) - 1

    def cumulants(self) -> tuple[sp.Expr, ...]:
        """``kappa_1..kappa_K`` by ``kappa_n = mu_n - sum_{j=1}^{n-1} C(n-1, j-1) kappa_j mu_{n-j}``."""
        mu = self.moments
        kappa: list[sp.Expr] = []
        for n in range(1, len(mu)):
            kappa.append(sp.expand(mu[n] - sum(sp.binomial(n - 1, j - 1) * kappa[j - 1] * mu[n - j] for j in range(1, n))))
        return tuple(kappa)

    @property
    def mean(self) -> sp.Expr:
        return self.moments[1]

    @property
    def var(self) -> sp.Expr:
        return sp.simplify(self.moments[2] - self.moments[1] ** 2)

    def central(self, r: int) -> sp.Expr:
        mu, m1 = self.moments, self.moments[1]
        return sp.expand(sum(sp.binomial(r, j) * mu[j] * (-m1) ** (r - j) for j in range(r + 1)))

    @property
    def excess_kurtosis(self) -> sp.Expr:
        return sp.simplify(self.central(4) / self.central(2) ** 2 - 3)

    # --- operations
    def __mul__(self, other: "MomentSequence") -> "MomentSequence":
        """Product of *independent* variables: ``E[(XY)^r] = E[X^r] E[Y^r]``."""
        k = min(self.order, other.order)
        return MomentSequence(tuple(sp.expand(self.moments[r] * other.moments[r]) for r in range(k + 1)))

    def scale(self, c: sp.Expr) -> "MomentSequence":
        """``cX``: ``E[(cX)^r] = c^r E[X^r]``."""
        c = sp.sympify(c)
        return MomentSequence(tuple(c**r * m for r, m in enumerate(self.moments)))

    def power(self, p: int) -> "MomentSequence":
        """``X^p`` (moments up to the order this sequence allows)."""
        top = self.order // p
        return MomentSequence(tuple(self.moments[p * r] for r in range(top + 1)))

    def iid_sum(self, n: sp.Expr) -> "MomentSequence":
        """Sum of n i.i.d. copies, n possibly symbolic: cumulants add."""
        return MomentSequence.from_cumulants([sp.sympify(n) * k for k in self.cumulants()])


# --------------------------------------------------------------------------- i.i.d. sums
def falling_factorial(n: sp.Expr, j: int) -> sp.Expr:
    """``n (n-1) ... (n-j+1)``: the number of ways to give j blocks distinct indices."""
    return sp.prod([sp.sympify(n) - i for i in range(j)])


def iid_sums_mixed_moment(
    n: sp.Expr,
    functions: Sequence[object],
    joint_moment: Callable[[tuple[object, ...]], sp.Expr],
) -> sp.Expr:
    """``E[A_1 A_2 ... A_p]`` with ``A_i = sum_{k=1}^{n} f_i(Y_k)``, Y_k i.i.d., n symbolic.

    ``functions`` lists the labels f_1..f_p (repeats allowed); ``joint_moment`` maps a
    tuple of labels (one block of a partition) to ``E[prod f(Y)]`` for one Y. The sum
    runs over the set partitions of the p factors: factors in one block share a
    summation index, different blocks take distinct indices, counted by the falling
    factorial ``n^(|P|)``.
    """
    labels = list(functions)
    if not labels:
        return sp.Integer(1)
    total = sp.Integer(0)
    cache: dict[tuple, sp.Expr] = {}
    for partition in multiset_partitions(list(range(len(labels)))):
        term = falling_factorial(n, len(partition))
        for block in partition:
            key = tuple(sorted(labels[i] for i in block))
            if key not in cache:
                cache[key] = joint_moment(key)
            term *= cache[key]
        total += term
    return total


@lru_cache(maxsize=None)
def _beta_moment_formula() -> tuple[sp.Expr, sp.Symbol, sp.Symbol, sp.Symbol]:
    """``E[B^r]`` for ``B ~ Beta(a, b)``, integrated from the density by sympy once.

    ``E[B^r] = int_0^1 x^{a+r-1} (1-x)^{b-1} dx / B(a, b)``; the integral is taken with
    ``s = a + r`` as one symbol (sympy returns it as a Gauss hypergeometric at 1, which
    ``hyperexpand`` turns into gamma functions).
    """
    x = sp.Symbol("x", positive=True)
    a, b, r, s = sp.symbols("a b r s", positive=True)
    integral = sp.hyperexpand(sp.integrate(x ** (s - 1) * (1 - x) ** (b - 1), (x, 0, 1), conds="none", heurisch=False))
    formula = integral.subs(s, a + r) / integral.subs(s, a)  # the normaliser is B(a, b)
    return formula, a, b, r


@lru_cache(maxsize=None)
def _beta_moment_at(power: sp.Expr) -> sp.Expr:
    """``E[B^power]`` simplified with ``a`` and ``b`` still symbols.

    Simplifying first and substituting after keeps the cost independent of the values:
    ``gamma(a + b + 2) / gamma(a + b)`` expanded at a numeric ``b = (d - 2)/2`` would
    otherwise multiply out ~b factors (d_model = 1e9 hung here).
    """
    formula, a, b, r = _beta_moment_formula()
    return sp.factor(sp.expand_func(sp.gammasimp(formula.subs(r, power))))


def beta_moment(a: sp.Expr, b: sp.Expr, power: sp.Expr) -> sp.Expr:
    """``E[B^power]`` for ``B ~ Beta(a, b)``: ``B(a + power, b) / B(a, b)``."""
    _, sa, sb, _ = _beta_moment_formula()
    value = _beta_moment_at(sp.sympify(power)).subs({sa: sp.sympify(a), sb: sp.sympify(b)})
    return sp.factor(value)
