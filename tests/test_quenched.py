"""The quenched theory (theory.quenched, issue 17): its pieces against independent Monte Carlo,
and the within-network law of log |h_m|^2/d against many frozen networks of the engine.

Declared tolerances: the pieces are exact (expectations of Gaussian matrices, spheres), so
they are held to 4 standard errors; the law of layer 1 is asymptotic in d with O(1/d)
relative error (second-order terms 2.5 R^2 - kappa_3 and the per-network fluctuation of
gamma), declared as 8% at d = 32, plus 3 standard errors over networks.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch

from simulate.engine import Sampler
from theory import ModelSpec
from theory.information import position_information, predicted_probe
from theory.quenched import (averaged_relative_variance, chain_gamma, chain_gamma_expr, fuss_catalan, mean_cosine,
                             quenched_law, sphere_relative_variance)
from tests.simulate_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _sphere(rng, n, count):
    g = rng.normal(size=(count, n))
    return g / np.linalg.norm(g, axis=1, keepdims=True) * np.sqrt(n)


def test_wick_moments_of_a_gaussian_matrix_against_monte_carlo():
    rng = np.random.default_rng(0)
    n_out, n_in, draws = 6, 5, 40000
    C = np.diag([3.0, 1.0, 0.5, 0.5, 0.2])
    W = rng.normal(size=(draws, n_out, n_in))
    out = W @ C @ W.transpose(0, 2, 1)  # (draws, n_out, n_out)
    tr = np.trace(out, axis1=1, axis2=2)
    tr2 = np.einsum("kij,kji->k", out, out)
    trC, trC2 = np.trace(C), np.trace(C @ C)
    for sample, expected in ((tr2, n_out * trC**2 + (n_out + n_out**2) * trC2), (tr**2, n_out**2 * trC**2 + 2 * n_out * trC2)):
        assert abs(sample.mean() - expected) < 4 * sample.std() / np.sqrt(draws), (sample.mean(), expected)
    gamma = chain_gamma(n_out, n_in, trC2 / trC**2)
    assert gamma == pytest.approx(tr2.mean() / (tr**2).mean(), rel=0.02)


def test_fuss_catalan_numbers_are_the_large_d_limit_of_the_chain():
    assert [fuss_catalan(1, 2), fuss_catalan(2, 2), fuss_catalan(2, 3)] == [2, 3, 12]
    expr, (n_out, n_in, g) = chain_gamma_expr()
    d = sp.Symbol("d", positive=True)
    one = expr.subs({n_out: d, n_in: d, g: 1 / d})
    two = expr.subs({n_out: d, n_in: d, g: one})
    assert sp.limit(d * one, d, sp.oo) == fuss_catalan(1, 2)
    assert sp.limit(d * two, d, sp.oo) == fuss_catalan(2, 2)  # W_o W_v: effective dof d/3
    # the product of two Ginibre matrices itself: d tr(A^2)/tr(A)^2 -> 3
    rng = np.random.default_rng(1)
    M = rng.normal(size=(256, 256)) @ rng.normal(size=(256, 256))
    A = M.T @ M
    assert 256 * np.trace(A @ A) / np.trace(A) ** 2 == pytest.approx(3.0, rel=0.03)


def test_sphere_and_averaged_relative_variance_against_monte_carlo():
    rng = np.random.default_rng(2)
    n, count = 24, 60000
    M = rng.normal(size=(n, n)) @ rng.normal(size=(n, n))
    A = M.T @ M
    gamma = np.trace(A @ A) / np.trace(A) ** 2
    e = _sphere(rng, n, count)
    q = np.einsum("ki,ij,kj->k", e, A, e)
    rel = q / q.mean()
    se = np.sqrt(np.var((rel - 1) ** 2) / count)
    assert abs(rel.var() - sphere_relative_variance(gamma, n)) < 4 * se
    m = 5
    ebar = _sphere(rng, n, count * m).reshape(count, m, n).mean(axis=1)
    q = np.einsum("ki,ij,kj->k", ebar, A, ebar)
    rel = q / q.mean()
    se = np.sqrt(np.var((rel - 1) ** 2) / count)
    pred = averaged_relative_variance(np.array([m]), sphere_relative_variance(gamma, n), gamma)[0]
    assert abs(rel.var() - pred) < 4 * se


def _frozen_log_s(spec, taps, networks, sequences, seed0=1000):
    """log |h|^2/d per network, (networks, sequences, T), for each tap."""
    out = {t: np.empty((networks, sequences, spec.seq_len)) for t in taps}
    for k in range(networks):
        with Sampler(spec, seed=seed0 + k, measure="quenched", method="explicit", device=torch.device("cpu"),
                     dtype=torch.float32) as sampler:
            cache = sampler.taps(0, sequences, taps)
            for t in taps:
                h = cache[t][0].reshape(sequences, spec.seq_len, -1).double()
                out[t][k] = torch.log(h.pow(2).mean(-1)).numpy()
    return out


def test_within_network_spread_against_many_frozen_networks():
    spec = ModelSpec(d_model=32, n_heads=2, n_layers=1, seq_len=16)
    law = quenched_law(spec)
    taps = ["blocks.0.attn.hook_z", "blocks.0.hook_attn_out", "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out",
            "blocks.0.hook_resid_post"]
    logs = _frozen_log_s(spec, taps, networks=8, sequences=200)
    for t, tol in zip(taps, (0.08, 0.08, 0.10, 0.10, 0.10)):  # layer-1 attention asymptotic; the rest approximate
        ratio = (logs[t].var(axis=1, ddof=1) / law.var(t)).mean(axis=1)  # (networks,)
        se = ratio.std(ddof=1) / np.sqrt(len(ratio))
        assert abs(ratio.mean() - 1.0) < tol + 3 * se, (t, ratio.mean(), se)
    # the shape in m: 4/d at m = 1 (a sphere point) rising to 6/d (the chain W_o W_v): d/3 channels
    v = law.var("hook_attn_out", 0)
    assert v[0] * 32 == pytest.approx(2 * (chain_gamma(32, 32, chain_gamma(32, 31, 1 / 31)) - 1 / 31) * 31 / 33 * 32)
    measured = logs["blocks.0.hook_attn_out"].var(axis=1, ddof=1).mean(axis=0)
    assert measured[-4:].mean() > 1.3 * measured[0]


def test_network_to_network_spread_of_the_per_position_mean():
    spec = ModelSpec(d_model=32, n_heads=2, n_layers=1, seq_len=4)
    law = quenched_law(spec)
    t = "blocks.0.hook_attn_out"
    logs = _frozen_log_s(spec, [t], networks=48, sequences=48, seed0=5000)[t]
    means = logs.mean(axis=(1, 2))  # the scale factor tr(W_o W_v ...) is the same at every m
    noise = logs.var(axis=1, ddof=1).mean() / (48 * 4)
    sd = np.sqrt(max(means.var(ddof=1) - noise, 0.0))
    pred = float(law[t].network_sd.mean())
    assert pred == pytest.approx(np.sqrt(6) / 32, rel=0.05)  # Var tr(A) / E^2 = 6/d^2
    assert sd == pytest.approx(pred, rel=0.35)  # sd of an sd from 48 networks: ~10%, and O(1/d)


def test_predicted_probe_is_the_bayes_error_of_a_planted_law():
    T = 32
    mu = -np.log(np.arange(1, T + 1.0))
    var = np.full(T, 0.05)
    pred = predicted_probe(mu, var)
    rng = np.random.default_rng(3)
    draws = mu[None, :] + np.sqrt(var)[None, :] * rng.normal(size=(4000, T))
    ll = -0.5 * (draws.reshape(-1, 1) - mu[None, :]) ** 2 / var[None, :]
    post = np.exp(ll - ll.max(axis=1, keepdims=True))
    cdf = np.cumsum(post, axis=1)
    med = (cdf < 0.5 * cdf[:, -1:]).sum(axis=1) + 1
    mae = np.abs(med - np.tile(np.arange(1, T + 1), 4000))
    assert abs(pred["mae"] - mae.mean()) < 4 * mae.std() / np.sqrt(mae.size)
    assert predicted_probe(mu, var * 4)["mae"] > pred["mae"]  # more noise, larger error
    with pytest.raises(ValueError, match="var_log"):
        predicted_probe(mu, -var)


def test_information_uses_the_quenched_noise():
    spec = ModelSpec(d_model=64, n_heads=4, n_layers=2, seq_len=16)
    info = position_information(spec)
    chi2 = position_information(spec, noise="chi2")
    law = quenched_law(spec)
    name = "blocks.0.hook_resid_post"
    np.testing.assert_allclose(info.var[name], law[name].var * law[name].level ** 2)
    assert "blocks.0.hook_attn_out" in info.mean and "blocks.0.hook_attn_out" not in chi2.mean
    # d/3 channels at the attention output: less information than chi^2_d would say
    a = info.fisher("hook_attn_out", 0)
    chi_d = 2.0 * law["blocks.0.hook_attn_out"].level ** 2 / 64
    from theory.information import fisher_information
    assert np.all(a[1:-1] < fisher_information(law["blocks.0.hook_attn_out"].level, chi_d)[1:-1])
    with pytest.raises(ValueError, match="noise"):
        position_information(spec, noise="poisson")


def test_mean_cosine_of_uniform_causal_attention():
    T = 6
    m = np.arange(1, T + 1)
    K = np.minimum.outer(m, m) / np.multiply.outer(m, m)  # ebar_m . ebar_n / d for uniform attention
    expected = [(np.sqrt(np.minimum(i, m) / np.maximum(i, m)).sum() - 1) / (T - 1) for i in m]
    np.testing.assert_allclose(mean_cosine(K), expected)


def test_quenched_law_refuses_what_it_does_not_cover():
    with pytest.raises(ValueError, match="positional"):
        quenched_law(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, positional="learned"))
