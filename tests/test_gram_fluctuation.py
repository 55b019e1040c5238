"""The Gram fluctuation's second-order term (`theory.depth_maps._gram`), against independent computations."""

import sys

import numpy as np

from theory import ModelSpec
from theory._kernel_maps import gaussian_cosine_mean
from theory.depth_maps import DEPTH_MAPS

assert DEPTH_MAPS  # the package is loaded; its `_gram` module is read from sys.modules
G = sys.modules["theory.depth_maps._gram"]


def _psd(T, rng):
    A = rng.standard_normal((T, T))
    return A @ A.T / T + 0.3 * np.eye(T)


def test_the_closure_alone_has_no_excess():
    K = _psd(5, np.random.default_rng(0))
    mean, var = G.excess(K, G.entry(K, 63), 63)
    assert np.max(np.abs(mean)) < 1e-15 and np.max(np.abs(var)) < 1e-15


def test_writes_without_inheritance_telescope_to_the_closure():
    rng = np.random.default_rng(1)
    K0, Kw = _psd(4, rng), _psd(4, rng)
    comps = G.add_write(G.entry(K0, 64), [np.zeros((4, 4))], [], K0, K0 + Kw, 64)
    mean, var = G.excess(K0 + Kw, comps, 64)
    assert np.max(np.abs(mean)) < 1e-12 and np.max(np.abs(var)) < 1e-12


def test_compress_keeps_the_four_tensor():
    rng = np.random.default_rng(2)
    comps = [G.Component(float(q), _psd(5, rng)) for q in rng.normal(size=11)]

    def tensor(cs):
        return sum(c.q * np.outer(c.K.ravel(), c.K.ravel()) for c in cs)

    small = G.compress(comps, keep=25)
    assert len(small) <= 11
    np.testing.assert_allclose(tensor(small), tensor(comps), atol=1e-10 * np.abs(tensor(comps)).max())
    assert len(G.compress(comps)) == G.MAX_COMPONENTS


def test_mean_and_variance_of_the_cosine_with_a_shared_component_against_monte_carlo():
    # x_m = s + u_m: s common to the positions, in D_s of the d dimensions; u_m i.i.d. N(0, b I_d).
    # Cov(G) = (1/d) K (x) K + (1/D_s - 1/d) K_s (x) K_s (Wishart form), K = K_s + b I.
    rng = np.random.default_rng(3)
    d, Ds, a, b, T, n = 64, 16, 1.0, 1.0, 3, 200_000
    s = np.zeros((n, d))
    s[:, :Ds] = rng.standard_normal((n, Ds)) * np.sqrt(a)
    x = s[:, None, :] + rng.standard_normal((n, T, d)) * np.sqrt(b)
    g = np.einsum("nid,njd->nij", x, x) / d
    cos = g[:, 0, 1] / np.sqrt(g[:, 0, 0] * g[:, 1, 1])
    Ks = a * Ds / d * np.ones((T, T))
    K = Ks + b * np.eye(T)
    comps = [G.Component(1.0 / d, K), G.Component(1.0 / Ds - 1.0 / d, Ks)]
    mean, var = G.excess(K, comps, d)
    rho = K[0, 1] / K[0, 0]
    theory_mean = gaussian_cosine_mean(np.array([rho]), d)[0] + mean[0, 1]
    theory_var = (1 - rho**2) ** 2 / d + var[0, 1]
    se = cos.std() / np.sqrt(n)
    q = 1.0 / Ds
    # the excess is ~4x the closure's own finite-d shift here; neglected: O(q^2) (third order of the delta method)
    assert abs(mean[0, 1]) > 10 * se
    assert abs(cos.mean() - theory_mean) < 4 * se + q**2 * rho
    assert abs(cos.var() / theory_var - 1) < 0.03  # measured 0.7%; the closure's alone (0.0144) is 14% low


def test_carried_only_where_the_effective_dimension_is_small_and_the_expansion_holds():
    assert not G.carried(ModelSpec())  # GPT-2 small: within the closure's declared 1/d
    assert G.carried(ModelSpec(d_model=64, n_heads=4))
    assert G.effective_dim(ModelSpec(d_model=64, n_heads=4, n_kv_heads=1)) == 16
    assert not G.carried(ModelSpec(d_model=32, n_heads=4, n_kv_heads=1))  # D_eff = 8: not small


def test_centred_pair_variance_against_direct_centring():
    rng = np.random.default_rng(5)
    T = 9
    A = _psd(T, rng)
    fast = G.centred_pair_variance(A)
    assert fast[0] == 0.0
    for m in range(2, T + 1):
        C = np.eye(m) - np.ones((m, m)) / m
        B = C @ A[:m, :m] @ C
        off = ~np.eye(m, dtype=bool)
        direct = (np.outer(np.diag(B), np.diag(B)) + B * B)[off].mean()
        assert abs(fast[m - 1] - direct) <= 1e-12 * abs(direct)


def test_centred_pair_variance_is_the_variance_of_the_centred_gram_of_a_wishart():
    # x_m = s + u_m as above; the keys <= m centred on their centroid; the entries of their Gram
    # (1/d) sum_i x_ai x_bi have variance sum_c q_c (B_aa B_bb + B_ab^2) with B = C A_c C.
    rng = np.random.default_rng(6)
    d, Ds, T, n = 48, 4, 4, 100_000
    s = np.zeros((n, d))
    s[:, :Ds] = 2.0 * rng.standard_normal((n, Ds))
    # a position-dependent share of the common part, so that centring does not remove it: the
    # second component is then half (m = 4) to three quarters (m = 2) of the variance, 20-50 se
    share = np.array([1.5, -1.0, 0.5, 0.0])
    x = share[None, :, None] * s[:, None, :] + rng.standard_normal((n, T, d))
    Ks = np.outer(share, share) * 4.0 * Ds / d
    comps = [G.Component(1.0 / d, Ks + np.eye(T)), G.Component(1.0 / Ds - 1.0 / d, Ks)]
    predicted = sum(c.q * G.centred_pair_variance(c.K) for c in comps)
    for m in (2, 4):
        xc = x[:, :m] - x[:, :m].mean(1, keepdims=True)
        g = np.einsum("nid,njd->nij", xc, xc) / d
        off = ~np.eye(m, dtype=bool)
        pair_var = g[:, off].var(0)  # (pairs,)
        # the estimate's standard error: the variance of a variance, ~ var * sqrt(2/n) per pair (heavier tails: x3)
        se = 3 * pair_var.mean() * np.sqrt(2.0 / n)
        assert abs(pair_var.mean() - predicted[m - 1]) < 4 * se, (m, pair_var.mean(), predicted[m - 1])


def test_effective_key_dim_is_the_sphere_for_the_closure_and_smaller_with_a_shared_component():
    rng = np.random.default_rng(7)
    T, D = 6, 63
    K = _psd(T, rng)
    nu1 = np.full(T, 1.0)
    closure = G.entry(K, D)
    dim = G.effective_key_dim(K, closure, nu1, D)
    np.testing.assert_allclose(dim, D, rtol=1e-12)
    # an extra Wishart component of kernel K and weight 1/32: 1/D_eff = 1/D + 1/32 exactly
    extra = closure + [G.Component(1.0 / 32, K)]
    dim = G.effective_key_dim(K, extra, nu1, D)
    np.testing.assert_allclose(dim[1:], 1.0 / (1.0 / D + 1.0 / 32), rtol=1e-12)
    assert dim[0] == D  # one key: no pair
    # a weight pushing below MIN_EFFECTIVE_DIM is clipped there
    big = closure + [G.Component(1.0, K)]
    dim = G.effective_key_dim(K, big, nu1, D)
    np.testing.assert_allclose(dim[1:], G.MIN_EFFECTIVE_DIM)
