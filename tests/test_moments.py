"""The moment engine: each rule against an independent closed form, quadrature or MC."""

import itertools
import math

import numpy as np
import pytest
import sympy as sp
from scipy import stats

from theory._moments import (
    MomentSequence,
    beta_moment,
    chi2_mgf,
    chi2_moment,
    falling_factorial,
    gaussian_exp_moment,
    gaussian_moment,
    gaussian_mgf,
    iid_sums_mixed_moment,
    isserlis,
)

n = sp.Symbol("n", positive=True, integer=True)
k = sp.Symbol("k", positive=True)


@pytest.mark.parametrize("order, expected", [(0, 1), (1, 0), (2, 3), (4, 27), (6, 405)])
def test_gaussian_moment_table(order, expected):
    # N(0, 3): E[x^r] = (r-1)!! 3^(r/2)  (scipy's norm.moment is the independent check)
    assert gaussian_moment(order, 3) == expected
    assert math.isclose(stats.norm(scale=math.sqrt(3)).moment(order), expected, rel_tol=1e-9, abs_tol=1e-12)


def test_isserlis_against_direct_monte_carlo_free_formula():
    # E[x1 x2 x3 x4] = S12 S34 + S13 S24 + S14 S23 for a 4-dim Gaussian.
    cov = np.array([[2.0, 0.5, 0.3, 0.1], [0.5, 1.0, 0.2, 0.4], [0.3, 0.2, 1.5, 0.6], [0.1, 0.4, 0.6, 1.2]])
    value = isserlis([0, 1, 2, 3], lambda i, j: sp.Float(cov[i, j]))
    direct = cov[0, 1] * cov[2, 3] + cov[0, 2] * cov[1, 3] + cov[0, 3] * cov[1, 2]
    assert math.isclose(float(value), direct, rel_tol=1e-12)
    # Repeated indices: E[x1^4] = 3 S11^2, odd orders vanish.
    assert float(isserlis([0, 0, 0, 0], lambda i, j: sp.Float(cov[i, j]))) == pytest.approx(3 * cov[0, 0] ** 2)
    assert isserlis([0, 1, 2], lambda i, j: 1) == 0


def test_gaussian_mgf_and_exp_moments():
    t, v = sp.symbols("t v", positive=True)
    assert sp.simplify(gaussian_mgf(t, v) - sp.exp(t**2 * v / 2)) == 0
    # E[x e^{x}] for N(0, v) = v e^{v/2}: Stein's identity E[x f(x)] = v E[f'(x)].
    assert sp.simplify(gaussian_exp_moment(1, 1, v) - v * sp.exp(v / 2)) == 0
    assert sp.simplify(chi2_mgf(t, k) - (1 - 2 * t) ** (-k / 2)) == 0


@pytest.mark.parametrize("power", [1, 2, 3, -1, -2, sp.Rational(1, 2)])
def test_chi2_moments_against_scipy(power):
    dof = 9
    expected = stats.chi2(dof).expect(lambda x: x ** float(power))
    assert float(chi2_moment(dof, power)) == pytest.approx(expected, rel=1e-7)


def test_chi2_symbolic_moments():
    assert sp.expand(chi2_moment(k, 2)) == sp.expand(k * (k + 2))
    assert sp.simplify(chi2_moment(k, -1) - 1 / (k - 2)) == 0


@pytest.mark.parametrize("a, b, p", [(0.5, 3.0, 1), (0.5, 3.0, 2), (2.0, 5.0, 3), (1.5, 0.7, 2)])
def test_beta_moments_against_scipy(a, b, p):
    value = beta_moment(sp.nsimplify(a), sp.nsimplify(b), p)
    assert float(value) == pytest.approx(stats.beta(a, b).moment(p), rel=1e-10)


def test_iid_sum_of_squared_gaussians_is_chi_square():
    # sum of n squared N(0,1) is chi^2_n: the engine's cumulant rule against the
    # chi-square moments integrated from the density.
    square = MomentSequence.gaussian(1, 8).power(2)  # moments of g^2 up to order 4
    total = square.iid_sum(n)
    for r in range(1, 5):
        assert sp.expand(total.moments[r] - chi2_moment(n, r)) == 0


def test_product_and_sum_kurtosis_of_scores():
    # One score is a sum of d_head products of independent Gaussians: excess kurtosis 6/d_head.
    g = MomentSequence.gaussian(1)
    dot = (g * g).iid_sum(n)
    assert sp.simplify(dot.excess_kurtosis - 6 / n) == 0
    assert sp.simplify(dot.var - n) == 0
    # Numeric check of the same law by Monte Carlo-free quadrature: E[(gh)^4] = 9.
    assert (g * g).moments[4] == 9


def test_scale_and_cumulant_round_trip():
    seq = MomentSequence((1, sp.Integer(2), sp.Integer(7), sp.Integer(30), sp.Integer(160)))
    again = MomentSequence.from_cumulants(seq.cumulants())
    assert again.moments == tuple(sp.Integer(m) for m in seq.moments)
    assert seq.scale(3).moments[3] == 27 * 30
    assert seq.central(2) == 3


@pytest.mark.parametrize("labels", [("f",), ("f", "g"), ("f", "f", "g"), ("g", "g", "g")])
def test_iid_sums_mixed_moment_against_brute_force(labels):
    # Y uniform on {0, 1, 2}; f(y) = y + 1, g(y) = y^2 - 1. Enumerate every sample of size 3.
    values = [0, 1, 2]
    fns = {"f": lambda y: y + 1, "g": lambda y: y * y - 1}

    def joint(key):
        return sp.Rational(sum(math.prod(fns[l](y) for l in key) for y in values), len(values))

    size = 3
    formula = iid_sums_mixed_moment(n, labels, joint).subs(n, size)
    brute = 0
    for sample in itertools.product(values, repeat=size):
        sums = {l: sum(fns[l](y) for y in sample) for l in "fg"}
        brute += math.prod(sums[l] for l in labels)
    assert formula == sp.Rational(brute, len(values) ** size)


def test_falling_factorial():
    assert falling_factorial(5, 3) == 60
    assert sp.expand(falling_factorial(n, 2)) == sp.expand(n * (n - 1))
