"""`theory.law` for RMSNorm with eps > 0 (and the QK-norm / temperature scores on it) against plain numpy draws.

Each law is the exact law by quadrature (theory/laws.py); the reference draws the layer-1 construction
itself: Gaussian embeddings, ``e = x / sqrt(mean(x^2) + eps)``, Gaussian ``W_q``, ``W_k``, QK-norm
``q / sqrt(mean(q^2) + eps)`` over ``d_head``, the key drawn uniformly among ``n <= m``. Every law is
also checked to be *refuted* where it must differ (the eps = 0 law, LayerNorm's d - 1 sphere).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from theory import ModelSpec
from theory.laws import law
from theory.steps import LayerOne
from theory.steps.modern import rms_moments, rmsnorm

N = 20_000
N_SCORES = 5_000  # the scores' cdf is a 176-scale mixture of variance-gamma cdfs: fewer draws keep the KS test fast
D, H = 16, 2  # d_head = 8


def _spec(**kw):
    base = dict(d_model=D, n_heads=H, n_layers=1, seq_len=8, attn_only=True, normalization="rmsnorm",
                sigma_embed=0.02, ln_eps=2e-4)  # c = d eps / sigma_e^2 = 8: R^2 = X/(X + 8), X ~ chi^2_16
    base.update(kw)
    return ModelSpec(**base)


def _rms(x, eps):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)


def _draw_scores(spec, m, rng, qk=False, gamma=1.0, N=N_SCORES):
    """One score l_mn per draw, n uniform in 1..m (fresh weights and inputs per draw)."""
    d, dh, eps = spec.d_model, spec.d_head, spec.ln_eps
    e = _rms(rng.standard_normal((N, m, d)) * spec.sigma_embed, eps)
    q = np.einsum("shd,sd->sh", rng.standard_normal((N, dh, d)) * spec.sigma_q, e[:, -1])
    n = rng.integers(0, m, N)
    k = np.einsum("shd,sd->sh", rng.standard_normal((N, dh, d)) * spec.sigma_k, e[np.arange(N), n])
    if qk:
        q, k = _rms(q, eps), _rms(k, eps)
    return (q * k).sum(-1) / math.sqrt(dh) * gamma


def _ks(sample, dist):
    return stats.kstest(sample, dist.cdf).pvalue


def test_rmsnorm_coordinate_and_projection_laws_with_eps():
    rng = np.random.default_rng(5)
    spec = _spec()
    e = _rms(rng.standard_normal((N, D)) * spec.sigma_embed, spec.ln_eps)
    coord = law(spec, "blocks.0.ln1.hook_normalized")
    assert _ks(e[:, 0], coord) > 1e-3
    # its variance is nu_1 = E[X/(X+c)], X ~ chi^2_d, by the step's independent Gauss rule
    assert float(coord.var()) == pytest.approx(float(rms_moments(spec)[0]), rel=1e-8)
    assert abs(float(coord.var()) - e[:, 0].var()) < 4 * e[:, 0].var() * math.sqrt(2 / N)
    # theory derive's RMSNorm step prints the same variance and excess kurtosis
    step = rmsnorm(LayerOne.from_spec(spec), "best")
    assert float(step.quantities["var"]) == pytest.approx(float(coord.var()), rel=1e-8)
    assert float(step.quantities["excess_kurtosis"]) == pytest.approx(float(coord.stats(moments="k")), rel=1e-6)
    assert _ks(e[:, 0], law(_spec(ln_eps=0.0), "blocks.0.ln1.hook_normalized")) < 1e-6  # eps matters here
    small = dict(d_model=4, ln_eps=1e-4)  # c = 1: RMSNorm's sphere and radius (d dims) against LayerNorm's (d - 1)
    e4 = _rms(rng.standard_normal((N, 4)) * 0.02, 1e-4)[:, 0]
    assert _ks(e4, law(_spec(**small), "blocks.0.ln1.hook_normalized")) > 1e-3
    assert _ks(e4, law(_spec(normalization="layernorm", **small), "blocks.0.ln1.hook_normalized")) < 1e-6
    q = (rng.standard_normal((N, D)) * spec.sigma_q * e).sum(-1)
    assert _ks(q, law(spec, "blocks.0.attn.hook_q")) > 1e-3


def test_rmsnorm_scores_with_eps_and_temperature():
    rng = np.random.default_rng(6)
    spec = _spec(sigma_q=0.3, sigma_k=0.3)
    assert _ks(_draw_scores(spec, 3, rng), law(spec, "blocks.0.attn.hook_attn_scores", 3)) > 1e-3
    temp = _spec(sigma_q=0.3, sigma_k=0.3, attn_temperature={"floor_scale": 2, "scale": 0.5})
    gamma = temp.attn_temperature.factor(5)
    draws = _draw_scores(temp, 6, rng, gamma=gamma)
    assert _ks(draws, law(temp, "blocks.0.attn.hook_attn_scores", 6)) > 1e-3
    plain = float(law(spec, "blocks.0.attn.hook_attn_scores", 6).var())
    assert float(law(temp, "blocks.0.attn.hook_attn_scores", 6).var()) == pytest.approx(plain * gamma**2, rel=1e-12)
    assert draws.var() > 2 * plain  # the draws refute the law without the temperature (gamma^2 = 2.9)
    with pytest.raises(NotImplementedError, match="position"):
        law(temp, "blocks.0.attn.hook_attn_scores")


def test_qk_norm_scores_with_eps():
    """Small sigma_q, sigma_k: the projections' r.m.s. is comparable to sqrt(eps), so r_q, r_k < 1 visibly."""
    rng = np.random.default_rng(8)
    spec = _spec(qk_norm=True, sigma_q=0.0025, sigma_k=0.004)
    draws = _draw_scores(spec, 3, rng, qk=True, N=N)
    scores = law(spec, "blocks.0.attn.hook_attn_scores", 3)
    assert _ks(draws, scores) > 1e-3
    assert abs(float(scores.var()) - draws.var()) < 4 * math.sqrt(np.var(draws**2) / N)
    assert _ks(draws, law(_spec(qk_norm=True, ln_eps=0.0), "blocks.0.attn.hook_attn_scores", 3)) < 1e-6
