"""Softmax row quantities: series, large-m limit and quadrature agree where both hold."""

import math

import numpy as np
import pytest
import sympy as sp

from theory._quadrature import gamma_rule, row_expectations, sphere_coordinate_rule
from theory._softmax import D_sym, m_sym, row_large_m, row_series, v_sym


def test_series_identities():
    s2 = row_series("sum_sq", 2, gaussian=True)
    xi = row_series("coupling", 2, gaussian=True)
    # One key: a_11 = 1 whatever the logits.
    assert sp.simplify(s2.subs(m_sym, 1) - 1) == 0
    assert sp.simplify(xi.subs(m_sym, 1)) == 0
    # First order is the textbook (1 + tau^2 (m-1)/m)/m.
    assert sp.simplify(row_series("sum_sq", 1, gaussian=True) - (1 + v_sym * (m_sym - 1) / m_sym) / m_sym) == 0
    # Large m: the series of e^{tau^2} and tau^2 (law of large numbers).
    assert sp.simplify(sp.limit(m_sym * s2, m_sym, sp.oo) - sp.series(sp.exp(v_sym), v_sym, 0, 3).removeO()) == 0
    assert sp.simplify(sp.limit(xi, m_sym, sp.oo) - v_sym) == 0
    assert row_large_m("sum_sq") == sp.exp(v_sym)
    assert row_large_m("coupling") == v_sym


def test_sphere_series_tends_to_gaussian():
    sphere = row_series("sum_sq", 2)
    gauss = row_series("sum_sq", 2, gaussian=True)
    assert sp.simplify(sp.limit(sphere, D_sym, sp.oo) - gauss) == 0


def test_quadrature_rules():
    x, w = gamma_rule(12, 400.0)  # shape far beyond scipy's closed-form weights
    assert w.sum() == pytest.approx(1, abs=1e-12)
    assert (w * x).sum() == pytest.approx(400, rel=1e-12)
    assert (w * x * x).sum() == pytest.approx(400 * 401, rel=1e-12)
    z, wz = sphere_coordinate_rule(40, 63)
    assert (wz * z**2).sum() == pytest.approx(1, rel=1e-12)
    assert (wz * z**4).sum() == pytest.approx(3 * 63 / 65, rel=1e-12)  # 3D/(D+2)


@pytest.mark.parametrize("tau2", [0.02, 0.05])
def test_series_against_quadrature_small_logit_variance(tau2):
    # Fixed tau^2 and Gaussian logits on both sides (infinite degrees of freedom).
    positions = np.array([2, 3, 8, 64, 1024])
    quad = row_expectations(positions, tau2, math.inf, math.inf)
    for name, values in (("sum_sq", quad.sum_sq), ("coupling", quad.coupling)):
        series = row_series(name, 2, gaussian=True).subs(v_sym, tau2)
        for m, q in zip(positions, values):
            s = float(series.subs(m_sym, int(m)))
            scale = 1 / m if name == "sum_sq" else 1.0  # Xi is already divided by tau^2
            # error of the tau^4 series: O(tau^6) relative to the leading term
            assert abs(s - q) < 4 * tau2**3 * scale, (name, m, s, q)


def test_mixed_sphere_series_against_quadrature():
    # The series averaged over the law of tau^2 (chi-square factors, sphere logits), as
    # the best-level steps use it, against the full quadrature for a small spec.
    from theory import ModelSpec
    from theory.steps import LayerOne, mixed_series

    spec = ModelSpec(d_model=64, n_heads=4, sigma_q=0.02, sigma_k=0.2, ln_eps=0.0)
    ctx = LayerOne.from_spec(spec)
    tau2 = float(ctx.tau2_bar)
    positions = np.array([2, 8, 64, 256])
    quad = ctx.row(positions)
    for name, values in (("sum_sq", quad.sum_sq), ("coupling", quad.coupling)):
        series = mixed_series(ctx, name)
        for m, q in zip(positions, values):
            s = float(series.subs(m_sym, int(m)))
            scale = 1 / m if name == "sum_sq" else 1.0  # Xi is already divided by tau^2
            assert abs(s - q) < 6 * tau2**3 * scale, (name, m, s, q)


def test_large_m_limit_against_quadrature():
    tau2 = 0.4
    big = np.array([20_000, 100_000])
    quad = row_expectations(big, tau2, math.inf, math.inf)
    assert np.allclose(quad.sum_sq * big, math.exp(tau2), rtol=2e-3)  # O(1/m) corrections
    assert np.allclose(quad.coupling, tau2, rtol=2e-3)


def test_quadrature_against_monte_carlo():
    rng = np.random.default_rng(7)
    tau2, positions = 0.4, [2, 16, 128]
    quad = row_expectations(np.array(positions), tau2, math.inf, math.inf)
    for i, m in enumerate(positions):
        N = 200_000 // m
        logits = rng.standard_normal((N, m)) * math.sqrt(tau2)
        a = np.exp(logits)
        a /= a.sum(1, keepdims=True)
        s2 = (a * a).sum(1)
        xi = ((a * logits).sum(1) ** 2 - (a * a * logits * logits).sum(1)) / tau2
        assert abs(s2.mean() - quad.sum_sq[i]) < 4.5 * s2.std() / math.sqrt(N)
        assert abs(xi.mean() - quad.coupling[i]) < 4.5 * xi.std() / math.sqrt(N)


def test_quadrature_converged():
    positions = np.array([1, 2, 8, 256, 4096])
    a = row_expectations(positions, 0.4, 64, 767)
    b = row_expectations(positions, 0.4, 64, 767, n_logit=128, n_mixture=20, y_step=0.02)
    assert np.allclose(a.sum_sq, b.sum_sq, rtol=1e-8)
    assert np.allclose(a.coupling, b.coupling, rtol=1e-8)
    assert a.sum_sq[0] == 1 and a.coupling[0] == 0


def test_quadrature_rejects_bad_input():
    with pytest.raises(ValueError, match="positions"):
        row_expectations([0, 1], 0.1, 64, 63)
    with pytest.raises(ValueError, match="logit variance"):
        row_expectations([1], float("nan"), 64, 63)
    zero = row_expectations([1, 4], 0.0, 64, 63)
    assert np.allclose(zero.sum_sq, [1, 0.25]) and np.allclose(zero.coupling, 0)
