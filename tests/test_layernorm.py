"""LayerNorm norm moments: closed form, quadrature, series, and Monte Carlo agree."""

import numpy as np
import pytest
import sympy as sp

from theory import ModelSpec, derive
from theory._layernorm import norm_moments, norm_moments_numeric, norm_moments_series


@pytest.mark.parametrize("d, eps, sigma", [(64, 1e-5, 0.02), (16, 1e-3, 0.05), (8, 0.5, 1.0), (768, 1e-5, 0.02)])
def test_closed_form_equals_quadrature(d, eps, sigma):
    closed = norm_moments(d, sp.Float(eps, 30), sp.Float(sigma, 30))
    numeric = norm_moments_numeric(d, eps, sigma)
    for c, q in zip(closed, numeric):
        assert float(sp.N(c, 20)) == pytest.approx(q, rel=1e-10)


@pytest.mark.parametrize("d, eps, sigma", [(64, 1e-5, 0.02), (16, 1e-3, 0.05)])
def test_quadrature_against_monte_carlo(d, eps, sigma):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200_000, d)) * sigma
    xc = x - x.mean(1, keepdims=True)
    e = xc / np.sqrt((xc**2).mean(1, keepdims=True) + eps)
    r2 = (e**2).sum(1) / d
    nu1, nu2 = norm_moments_numeric(d, eps, sigma)
    assert abs(r2.mean() - nu1) < 5 * r2.std() / np.sqrt(r2.size)
    assert abs((r2**2).mean() - nu2) < 5 * (r2**2).std() / np.sqrt(r2.size)


def test_series_matches_closed_form_at_small_eps():
    d, sigma = 64, 0.02
    for eps in (1e-6, 1e-7):
        exact = norm_moments_numeric(d, eps, sigma)
        series = [float(s) for s in norm_moments_series(d, eps, sigma, 2)]
        c = d * eps / sigma**2
        # The next term is O(c^3 E[X^-3]) ~ (c/d)^3.
        for e_, s_ in zip(exact, series):
            assert abs(e_ - s_) < 10 * (c / d) ** 3


def test_eps_zero_is_exactly_one():
    assert norm_moments(64, 0, 0.02) == (1, 1)
    assert norm_moments_numeric(64, 0.0, 0.02) == (1.0, 1.0)


def test_ln1_step_identities_at_eps_zero():
    # e_i^2/(d-1) ~ Beta(1/2, (d-2)/2): variance 1, excess kurtosis -6/(d+1), Cov -1/(d-1).
    d = sp.Symbol("d", positive=True, integer=True)
    spec = ModelSpec(ln_eps=0.0).symbolic("d_model")
    best = derive(spec)["blocks.0.ln1.hook_normalized"].best
    assert best.quantities["var"] == 1
    assert sp.simplify(best.quantities["excess_kurtosis"] + 6 / (d + 1)) == 0
    assert sp.simplify(best.quantities["cov_coordinates"] + 1 / (d - 1)) == 0
