"""Issue 15: softmax rows at larger logits, the first-layer radius inside the softmax, the
per-network fluctuation of the keys' spread, rows sharing keys, and derived tolerances.

Each identity is held against an independent computation: the row law against the
i.i.d.-key quadrature and against Monte Carlo of the stated law; the fluctuation and
pair formulas against Monte Carlo of the random rows they describe; the recursion
against `simulate` at fixed seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from theory import ModelSpec
from theory._quadrature import row_expectations
from theory._row_law import (chi2_mixture, compress_rule, gamma_factor_rule, layer_one_rows, radius_rule, row_law,
                             sphere_key_law)
from theory.depth import predict as depth_predict
from theory.depth_maps._fluctuation import attention_spread_rel_var, combine
from theory.depth_maps.attention import RowAverages, row_averages, row_pair_excess, rows_at_key_dim
from theory.taps import tap_name
from theory.tolerance import DEFAULT_TOLERANCE, depth_tolerance


def _softmax(logits):
    a = np.exp(logits - logits.max(-1, keepdims=True))
    return a / a.sum(-1, keepdims=True)


# ----------------------------------------------------------------- the row law
@pytest.mark.parametrize("tau2, d_head, dim", [(0.4, 16, 63), (2.6, 32, 63), (0.05, 64, 767)])
def test_row_law_with_one_group_is_the_iid_quadrature(tau2, d_head, dim):
    pos = np.array([1, 2, 3, 5, 16, 64, 1000])
    a = row_expectations(pos, tau2, d_head, dim)
    b = row_law(pos, tau2, sphere_key_law(64, dim), mixture=chi2_mixture(d_head, dim, 12))
    np.testing.assert_allclose(b.sum_sq, a.sum_sq, rtol=1e-12)
    np.testing.assert_allclose(b.coupling[1:], a.coupling[1:], rtol=1e-12)
    np.testing.assert_allclose(b.sum_sq_r, b.sum_sq, rtol=1e-15)  # no radii: the same


def test_row_law_against_monte_carlo_with_offsets_scales_and_a_mixture():
    rng = np.random.default_rng(0)
    m, tau2, n = 6, 1.7, 400_000
    scales = np.array([0.5, 1.0, 1.5, 1.0, 0.7, 1.2])
    offsets = np.array([0.3, -0.2, 0.0, 0.5, -1.0, 0.1])  # e.g. ALiBi's -slope (m - k)
    mixture = gamma_factor_rule(8, 0.2)  # a random logit-variance factor of the row
    quad = row_law(np.eye(m).sum(0)[None], tau2, sphere_key_law(48, math.inf), offsets=offsets, scales=scales,
                   mixture=mixture, mean_weights=True)
    g = rng.gamma(5.0, 0.2, size=(n, 1))  # Gamma, mean 1, relative variance 0.2
    y = scales * rng.standard_normal((n, m))
    a = _softmax(offsets + np.sqrt(tau2 * g) * y)
    samples = {
        "sum_sq": (a**2).sum(1),
        "coupling": (a * y).sum(1) ** 2 - (a**2 * y**2).sum(1),
        "sum_sq2": (a**2).sum(1) ** 2,
        "sum_cube": (a**3).sum(1),
    }
    for name, x in samples.items():
        se = x.std() / math.sqrt(n)
        assert abs(getattr(quad, name)[0] - x.mean()) < 4 * se + 1e-6, name
    se = a.std(0) / math.sqrt(n)
    assert np.all(np.abs(quad.mean_weight[0] - a.mean(0)) < 4 * se + 1e-6)


def test_row_law_rejects_bad_input():
    law = sphere_key_law(16, math.inf)
    with pytest.raises(ValueError, match="counts"):
        row_law([0], 1.0, law)
    with pytest.raises(ValueError, match="tau2"):
        row_law([2], float("nan"), law)
    with pytest.raises(ValueError, match="one per group"):
        row_law(np.ones((1, 2)), 1.0, law, offsets=[0.0])


def test_compress_rule_keeps_mass_and_mean():
    rule = chi2_mixture(16, 63, 8, 8)
    x, w = compress_rule(rule, 10)
    assert x.size <= 10
    assert w.sum() == pytest.approx(1.0, rel=1e-13)
    assert w @ x == pytest.approx(rule[1] @ rule[0], rel=1e-13)


# ----------------------------------------------------------------- layer 0: the radius inside the softmax
def test_layer_one_radius_rows_against_monte_carlo_of_the_stated_law():
    """d = 16, sigma_e = 0.002, eps = 1e-5: c = 40, delta = 0.26, tau_bar^2 ~ 2. Draw the row exactly
    (LayerNorm of Gaussian inputs, Gaussian W_q, W_k; the query from its own token, as the law
    states) and compare S_2 and the value average ``E|sum_n a_n e_n|^2 = rho^2 (S_2 + Xi/(d-1))``."""
    rng = np.random.default_rng(3)
    d, dh, m, se, sq, n = 16, 8, 8, 0.002, 0.55, 40_000
    eps = 1e-5
    x = rng.standard_normal((n, m + 1, d)) * se
    x = x - x.mean(-1, keepdims=True)
    e = x / np.sqrt((x * x).mean(-1, keepdims=True) + eps)
    Wq = rng.standard_normal((n, d, dh)) * sq
    Wk = rng.standard_normal((n, d, dh)) * sq
    q = np.einsum("nd,ndh->nh", e[:, m], Wq)  # the query's token is not among the keys
    keys = e[:, :m]
    k = np.einsum("nmd,ndh->nmh", keys, Wk)
    a = _softmax(np.einsum("nh,nmh->nm", q, k) / math.sqrt(dh))
    zbar = np.einsum("nm,nmd->nd", a, keys)
    s2_mc, z_mc = (a**2).sum(1), (zbar**2).sum(1)
    rho2 = (e * e).sum(-1).mean()
    tau2_bar = sq**4 * rho2**2  # s^2 sigma_q^2 sigma_k^2 d_head rho^4 with s^2 = 1/d_head
    _, s2, xi, _, _ = layer_one_rows([m], tau2_bar, dh, d, d * eps / se**2)
    z_theory = rho2 * (s2[0] + xi[0] / (d - 1))
    z_se = z_mc.std() / math.sqrt(n)
    assert abs(s2[0] - s2_mc.mean()) < 4 * s2_mc.std() / math.sqrt(n) + 1e-3 * s2[0]
    assert abs(z_theory - z_mc.mean()) < 4 * z_se + 1e-3 * z_theory
    # the r.m.s. radius (the former layer-1 best level) misses the value average here
    old = row_expectations(np.array([m]), tau2_bar, dh, d - 1)
    z_old = rho2 * (old.sum_sq[0] + old.coupling[0] / (d - 1))
    assert abs(z_old - z_mc.mean()) > 4 * z_se


def test_radius_rule_has_mean_one_and_no_spread_without_eps():
    r2, w = radius_rule(8, 64, 160.0)
    assert w @ r2 == pytest.approx(1.0, rel=1e-13) and np.ptp(r2) > 0.2
    r2, w = radius_rule(8, 64, 0.0)
    assert r2.tolist() == [1.0] and w.tolist() == [1.0]


# ----------------------------------------------------------------- the spread's fluctuation, rows sharing keys
def test_attention_spread_rel_var_against_monte_carlo_of_random_rows():
    """Rows k = 1..m, each an independent softmax of its own i.i.d. Gaussian logits (variance tau^2);
    the spread of the averaged values e_j (orthonormal) is Q_m/(m-1)."""
    rng = np.random.default_rng(5)
    T, tau2, n = 8, 2.0, 40_000
    Q = {m: [] for m in range(2, T + 1)}
    A = np.zeros((n, T, T))
    for k in range(1, T + 1):
        A[:, k - 1, :k] = _softmax(math.sqrt(tau2) * rng.standard_normal((n, k)))
    for m in range(2, T + 1):
        Am = A[:, :m, :m]
        centred = Am - Am.mean(1, keepdims=True)
        Q[m] = (centred**2).sum((1, 2))  # sum_k |ebar_k - mean|^2 = Q_m
    s2 = np.array([(A[:, k - 1] ** 2).sum(1).mean() for k in range(1, T + 1)])
    s2sq = np.array([((A[:, k - 1] ** 2).sum(1) ** 2).mean() for k in range(1, T + 1)])
    kappa = attention_spread_rel_var(s2, s2sq, n_heads=1)
    for m in range(2, T + 1):
        q = Q[m]
        mc = q.var() / q.mean() ** 2
        # the standard error of a relative variance, by the delta method on (q, q^2)
        se = math.sqrt(np.var((q - q.mean()) ** 2) / n) / q.mean() ** 2
        assert abs(kappa[m - 1] - mc) < 4 * se + 0.02 * mc, m
    assert attention_spread_rel_var(s2, s2sq, n_heads=4)[3] == pytest.approx(kappa[3] / 4)


def test_combine_adds_independent_relative_variances():
    k = combine(np.array([0.1]), np.array([1.0]), np.array([3.0]), np.array([0.2]))
    assert k[0] == pytest.approx((1 + (3 / 4) ** 2 * 0.2) * 1.1 - 1)
    assert combine(np.array([0.1]), np.array([1.0]), np.array([0.0]), np.array([5.0]))[0] == pytest.approx(0.1)


def test_row_pair_excess_against_monte_carlo():
    """Two rows (m = 4 and n = 6 keys, the first 4 shared) whose logits over a shared key are
    correlated through their queries: E[sum_k a_mk a_nk] - 1/n to second order in rho."""
    rng = np.random.default_rng(9)
    T, tau2, r, dh, D, n = 6, 1.0, 0.3, 10 ** 9, 10 ** 9, 400_000
    # the rows' quantities for Gaussian logits of variance tau2 (point mixture)
    rows = row_law(np.arange(1, T + 1), tau2, sphere_key_law(48, math.inf))
    ra = RowAverages(rows.sum_sq, rows.sum_sq2, rows.sum_cube, rows.sum_sq - 1 / np.arange(1, T + 1), rows.coupling)
    cos = np.full((T, T), r)
    excess, _ = row_pair_excess(ra, np.full(T, tau2), cos, dh, D)
    x = rng.standard_normal((n, T))
    y = r * x + math.sqrt(1 - r * r) * rng.standard_normal((n, T))
    am = _softmax(math.sqrt(tau2) * x[:, :4])
    an = _softmax(math.sqrt(tau2) * y[:, :6])
    overlap = (am * an[:, :4]).sum(1)
    mc = overlap.mean() - 1 / 6
    se = overlap.std() / math.sqrt(n)
    # second order in rho: the neglected O(rho^3 tau^6) is ~ 1e-3 here
    assert abs(excess[3, 5] - mc) < 4 * se + 2e-3
    assert excess[3, 5] > 0 and excess[3, 5] == excess[5, 3] and excess[2, 2] == 0


def test_row_averages_of_a_fluctuating_spread_against_direct_quadrature():
    T = 24
    tau2 = np.full(T, 0.8)
    plain = row_averages(tau2, 16, 63)
    direct = row_expectations(np.array([2, 17, 24]), 0.8, 16, 63, n_mixture=8, n_mixture_sphere=8)
    np.testing.assert_allclose(plain.sum_sq[[1, 16, 23]], direct.sum_sq, rtol=1e-10)
    kappa = np.full(T, 0.1)
    wide = row_averages(tau2, 16, 63, kappa=kappa)
    # E_W[S_2(tau^2 W)] by a finer Gamma rule and direct quadrature at each node
    w, p = gamma_factor_rule(16, 0.1)
    for m in (2, 24):
        ref = sum(pi * row_expectations(np.array([m]), 0.8 * wi, 16, 63, n_mixture=8, n_mixture_sphere=8).sum_sq[0]
                  for wi, pi in zip(w, p))
        assert wide.sum_sq[m - 1] == pytest.approx(ref, rel=2e-5)
    np.testing.assert_allclose(wide.plain[0][[1, 16, 23]], direct.sum_sq, rtol=1e-5)


def test_rows_at_an_effective_key_dimension_against_direct_quadrature():
    T, D = 24, 127
    tau2 = np.full(T, 1.2)
    at_D = row_averages(tau2, 16, D)
    same = rows_at_key_dim(tau2, 16, D, np.full(T, float(D)))
    np.testing.assert_array_equal(same.sum_sq, at_D.sum_sq)
    key_dim = np.linspace(D, 40, T)
    rows = rows_at_key_dim(tau2, 16, D, key_dim)
    for m in (2, 12, 24):  # interpolation in 1/D between 127 and 40: second-order error
        direct = row_averages(tau2, 16, key_dim[m - 1])
        assert rows.sum_sq[m - 1] == pytest.approx(direct.sum_sq[m - 1], rel=1e-4)
        assert rows.sum_sq2[m - 1] == pytest.approx(direct.sum_sq2[m - 1], rel=1e-4)
        # the coupling is carried as Xi/D_eff, read by `attention` as coupling / D
        assert rows.coupling[m - 1] / D == pytest.approx(direct.coupling[m - 1] / key_dim[m - 1], rel=5e-3)
    # the smaller sphere moves S_2 by far more than the tolerance above (2% at m = 24)
    assert rows.sum_sq[-1] / at_D.sum_sq[-1] - 1 < -0.01


# ----------------------------------------------------------------- derived tolerances
def test_depth_tolerances_are_derived_and_the_leading_level_states_its_default():
    spec = ModelSpec(d_model=64, n_heads=4, n_layers=3, seq_len=16, sigma_q=0.1, sigma_k=0.1)
    best, leading = depth_predict(spec), depth_predict(spec, "leading")
    for layer in (1, 2):
        rec = best[tap_name("attn.hook_z", layer)]
        assert rec.tolerance >= layer / 64 and rec.tolerance_source.startswith("estimate")
        assert leading[tap_name("attn.hook_z", layer)].tolerance == DEFAULT_TOLERANCE
    value, source = depth_tolerance(2.0, 64, 0.01)
    assert value == pytest.approx(2 / 64 + 0.01) and "closure" in source


# ----------------------------------------------------------------- the recursion against simulation
@pytest.mark.slow
def test_larger_logits_through_depth_against_simulation():
    """d = 128, 4 heads, tau_bar^2 ~ 1.6 at layer 1, three layers: every tap within its derived
    tolerance + 4 SE (before issue 15, layer 2's hook_z was 5-8% low here at m >= 64)."""
    import simulate

    spec = ModelSpec(d_model=128, n_heads=4, n_layers=3, seq_len=64, sigma_q=0.1, sigma_k=0.1)
    positions = [1, 2, 4, 8, 16, 32, 64]
    suffixes = ["attn.hook_pattern", "attn.hook_z", "hook_resid_mid", "hook_resid_post"]
    taps = [tap_name(s, l) for l in range(spec.n_layers) for s in suffixes]
    sim = simulate.run(spec, taps=taps, samples=600, seed=15, positions=positions, threads=1, progress=False)
    pred = depth_predict(spec).at(positions)
    for tap in taps:
        quantity = "sum_sq" if tap.endswith("hook_pattern") else "var"
        theory = pred[tap].values[quantity]
        stats = sim[tap]
        value, se = getattr(stats, quantity), getattr(stats, quantity + "_se")
        allowed = pred[tap].tolerance * np.abs(theory) + 4 * se
        assert np.all(np.abs(theory - value) <= allowed), (tap, theory / value - 1, (theory - value) / se)


def test_small_width_through_four_layers_against_simulation():
    """d = 64, 4 heads, four layers: the attention path within 3% or 4 SE at every layer (the target
    of issue 15 for the attention path). The Gram fluctuation decides it: with the components
    inherited by the kernel's linear response ``hook_z`` was 4.3% low at layer 1, with the congruence
    alone (radial noise in the norm's mean cosine) 4.9% low at layer 3 (m = 49)."""
    import simulate

    spec = ModelSpec(d_model=64, n_heads=4, n_layers=4, seq_len=64, sigma_q=0.1, sigma_k=0.1)
    positions = [2, 4, 8, 16, 32, 48, 64]
    suffixes = ["attn.hook_pattern", "attn.hook_z", "hook_attn_out"]
    taps = [tap_name(s, l) for l in range(1, spec.n_layers) for s in suffixes]
    sim = simulate.run(spec, taps=taps, samples=3000, seed=15, positions=positions, threads=2, progress=False)
    pred = depth_predict(spec).at(positions)
    for tap in taps:
        quantity = "sum_sq" if tap.endswith("hook_pattern") else "var"
        theory = pred[tap].values[quantity]
        stats = sim[tap]
        value, se = getattr(stats, quantity), getattr(stats, quantity + "_se")
        rel, z = theory / value - 1, (theory - value) / se
        assert np.all((np.abs(rel) <= 0.03) | (np.abs(z) <= 4)), (tap, rel, z)


# ------------------------------------------------- the norm's radius at large eps
def test_radius_moments_with_a_radial_law_against_monte_carlo_of_the_stated_law():
    """``X = D Y (1 - s + s W)``, Y and W Gamma of mean 1 (relative variances 2/D + excess, kappa):
    the Gauss rules against 400k draws of that law; all-zero extras give the chi^2_D rule exactly."""
    from theory._kernel_maps import RadialLaw, layernorm_radius_moments

    d, eps, var, D = 64, 0.5, np.array([1.0, 2.5]), 63
    plain = layernorm_radius_moments(var, d, eps)
    zero = layernorm_radius_moments(var, d, eps, radial=RadialLaw(np.zeros(2), np.zeros(2), np.zeros(2)))
    np.testing.assert_allclose(zero, plain, rtol=1e-12)
    excess, share, kappa = np.array([0.05, 0.02]), np.array([0.8, 0.3]), np.array([0.3, 0.6])
    got = layernorm_radius_moments(var, d, eps, radial=RadialLaw(excess, share, kappa))
    rng = np.random.default_rng(3)
    for i in range(2):
        rel = 2 / D + excess[i]
        Y = rng.gamma(1 / rel, rel, 400_000)
        W = rng.gamma(1 / kappa[i], kappa[i], 400_000)
        X = D * Y * (1 - share[i] + share[i] * W)
        R = X / (X + d * eps / var[i])
        for k, f in enumerate((R, R * R, np.sqrt(R))):
            assert abs(got[k][i] - f.mean()) < 4 * f.std() / math.sqrt(f.size) + 1e-12, (i, k)
    assert np.all(got[0] < plain[0])  # a wider radius law lowers the concave mean


def test_mlp_norm_radius_at_large_eps_against_simulation(monkeypatch):
    """C.json's first layer (sigma_embed = 0.002, eps = 1e-5: eps/Var(x) up to 0.5 at the MLP's
    norm): ``ln2.hook_normalized`` and the MLP write within 1.5% or 4 SE at every position. With
    chi^2_D radii (the closure) the norm is 3-4% high at m >= 16: the per-token norm then
    fluctuates 3-10x more than chi^2_D, through W_v, W_o and the rows' sum a^2 (measured)."""
    import importlib

    import simulate

    # the module, not the function of the same name that theory.depth_maps re-exports
    ln_map = importlib.import_module("theory.depth_maps.layernorm")

    spec = ModelSpec(d_model=64, n_heads=2, n_layers=1, seq_len=64, sigma_embed=0.002, sigma_q=0.3, sigma_k=0.3,
                     ln_eps=1e-5)
    positions = [1, 2, 4, 8, 16, 32, 64]
    taps = ["blocks.0.ln2.hook_normalized", "blocks.0.hook_mlp_out"]
    sim = simulate.run(spec, taps=taps, samples=1500, seed=21, positions=positions, threads=1, progress=False)
    pred = depth_predict(spec).at(positions)
    for tap in taps:
        theory, stats = pred[tap].values["var"], sim[tap]
        rel, z = theory / stats.var - 1, (theory - stats.var) / stats.var_se
        assert np.all((np.abs(rel) <= 0.015) | (np.abs(z) <= 4)), (tap, rel, z)
    monkeypatch.setattr(ln_map, "radial_law", lambda *args: None)
    closure = depth_predict(spec).at(positions)["blocks.0.ln2.hook_normalized"].values["var"]
    stats = sim["blocks.0.ln2.hook_normalized"]
    z = (closure - stats.var) / stats.var_se
    assert np.max(closure / stats.var - 1) > 0.02 and np.max(z) > 4  # the test can tell the two apart
