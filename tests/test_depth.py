"""Theory through depth (`theory.depth`): identities, kernel maps, and the recursion against simulation.

Tables of identities first (each map against an independent computation), then the
reductions the recursion must obey (layer 1 = the layer-1 derivation; attention off =
the MLP-only kernel recursion), then Monte Carlo at fixed seeds for small specs
(2-3 layers, d = 64-128) with the declared tolerance plus 4 standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate

from theory import ModelSpec, predict
from theory import _activations as act
from theory._kernel_maps import gaussian_cosine_mean, key_spread, layernorm_kernel, uniform_average
from theory._quadrature import row_expectations
from theory.depth import predict as depth_predict, softmax_rows
from theory.taps import ATTENTION_TAPS, all_taps, parse_tap, tap_name

# ----------------------------------------------------------------- activation kernels

def _dblquad_kernel(activation: str, s1: float, s2: float, rho: float) -> float:
    """E[phi(u) phi(v)] by scipy's adaptive 2-d quadrature in (z1, z2) standard normals."""
    phi = act.activation_function(activation)
    c = math.sqrt(1 - rho * rho)

    def f(z2, z1):
        u, v = s1 * z1, s2 * (rho * z1 + c * z2)
        return float(phi(np.array(u)) * phi(np.array(v))) * math.exp(-(z1 * z1 + z2 * z2) / 2) / (2 * math.pi)

    return integrate.dblquad(f, -9, 9, -9, 9, epsabs=1e-11, epsrel=1e-9)[0]


# the tanh GELU has no closed form: the adaptive quadrature is its independent reference
@pytest.mark.parametrize(
    "activation, s1, s2, rho",
    [("gelu_tanh", 0.5, 0.7, 0.3), ("gelu_tanh", 1.2, 0.9, -0.6), ("gelu_tanh", 0.3, 0.3, 0.95), ("relu", 0.5, 0.7, 0.3)],
)
def test_mehler_kernel_equals_adaptive_quadrature(activation, s1, s2, rho):
    cov = np.array([[s1 * s1, rho * s1 * s2], [rho * s1 * s2, s2 * s2]])
    F, tail = act.mehler_kernel(activation, cov)
    assert tail < 1e-9
    assert F[0, 1] == pytest.approx(_dblquad_kernel(activation, s1, s2, rho), rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_closed_form_conditional_means_agree_with_mehler(activation):
    # two independent routes: sympy's closed-form E[phi(a + bZ)] under 1-d quadrature,
    # and the Hermite (Mehler) series
    rng = np.random.default_rng(3)
    X = rng.standard_normal((12, 40))
    cov = X @ X.T / 40 * 0.4 + 0.05
    F_closed = act.activation_kernel(activation, cov)
    F_mehler, _ = act.mehler_kernel(activation, cov)
    np.testing.assert_allclose(F_closed, F_mehler, rtol=1e-10, atol=1e-13)


def test_gelu_conditional_mean_is_the_known_formula():
    g = act.conditional_mean("gelu")
    a, b = sorted(g.free_symbols, key=lambda s: s.name)
    f = __import__("sympy").lambdify((a, b), g, "scipy")
    from scipy.stats import norm

    for av, bv in [(0.3, 0.5), (-1.2, 2.0), (2.0, 0.1)]:
        r = math.sqrt(1 + bv * bv)
        assert f(av, bv) == pytest.approx(av * norm.cdf(av / r) + bv * bv / r * norm.pdf(av / r), rel=1e-12)


def test_activation_moments_match_known_values():
    mean, second = act.activation_moments("relu", np.array([1.0, 4.0]))
    np.testing.assert_allclose(mean, [1 / math.sqrt(2 * math.pi), 2 / math.sqrt(2 * math.pi)], rtol=1e-12)
    np.testing.assert_allclose(second, [0.5, 2.0], rtol=1e-12)
    # GELU: E[u Phi(u)] = s^2 phi_N(0)/sqrt(1 + s^2)
    s2 = 0.3
    mean, _ = act.activation_moments("gelu", np.array([s2]))
    assert mean[0] == pytest.approx(s2 / math.sqrt(2 * math.pi) / math.sqrt(1 + s2), rel=1e-12)


# ----------------------------------------------------------------- LayerNorm and attention maps

@pytest.mark.parametrize("dim", [3, 10, 63])
@pytest.mark.parametrize("r", [0.0, 0.4, 0.9])
def test_gaussian_cosine_mean_against_monte_carlo(dim, r):
    rng = np.random.default_rng(11)
    n = 100_000
    u = rng.standard_normal((n, dim))
    v = r * u + math.sqrt(1 - r * r) * rng.standard_normal((n, dim))
    cos = (u * v).sum(1) / np.linalg.norm(u, axis=1) / np.linalg.norm(v, axis=1)
    se = cos.std() / math.sqrt(n)
    assert abs(gaussian_cosine_mean(r, dim) - cos.mean()) < 4.5 * se + 1e-12
    assert gaussian_cosine_mean(1.0, dim) == pytest.approx(1.0, rel=1e-12)


def test_layernorm_kernel_diagonal_is_nu1_of_the_layer1_theory():
    from theory._layernorm import norm_moments_numeric

    K = 0.02**2 * np.eye(4)
    E, nu2 = layernorm_kernel(K, 64, 1e-5)
    nu1_ref, nu2_ref = norm_moments_numeric(64, 1e-5, 0.02)
    np.testing.assert_allclose(np.diag(E), nu1_ref, rtol=1e-10)
    np.testing.assert_allclose(nu2, nu2_ref, rtol=1e-10)
    assert np.all(E[~np.eye(4, dtype=bool)] == 0)


def test_uniform_average_and_key_spread_by_brute_force():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((9, 30))
    E = X @ X.T / 30
    U = uniform_average(E)
    for m in range(1, 10):
        for n in range(1, 10):
            assert U[m - 1, n - 1] == pytest.approx(E[:m, :n].mean(), rel=1e-12)
    # keys g + h_k (shared g, i.i.d. h): the spread is E|h|^2/d at every m
    shared = 0.7 * np.ones((9, 9)) + 0.3 * np.eye(9)
    np.testing.assert_allclose(key_spread(shared, uniform_average(shared)), [1.0] + [0.3] * 8, rtol=1e-12)


def test_softmax_rows_interpolation_matches_direct_quadrature():
    T = 120
    tau2 = np.linspace(0.05, 0.4, T)
    s2, xi = softmax_rows(tau2, 16, 63)
    for m in (2, 31, 33, 77, 120):
        direct = row_expectations(np.array([m]), float(tau2[m - 1]), 16, 63)
        assert s2[m - 1] == pytest.approx(direct.sum_sq[0], rel=2e-6)
        assert xi[m - 1] == pytest.approx(direct.coupling[0], rel=2e-5)


# ----------------------------------------------------------------- reductions of the recursion

@pytest.mark.parametrize("eps", [0.0, 1e-5])
@pytest.mark.parametrize("level", ["best", "leading"])
def test_layer_one_of_the_recursion_is_the_layer_one_derivation(eps, level):
    spec = ModelSpec(d_model=64, n_heads=4, n_layers=1, seq_len=48, sigma_q=0.1, sigma_k=0.1, ln_eps=eps)
    pos = [1, 2, 5, 33, 48]
    layer_one = predict(spec, pos, level, taps=ATTENTION_TAPS).to_dict()["predictions"]
    pred = depth_predict(spec, level).at(pos).values
    for tap, per_m in layer_one.items():
        for i, m in enumerate(pos):
            for q, value in per_m[str(m)].items():
                if q in pred[tap]:
                    assert pred[tap][q][i] == pytest.approx(value, rel=3e-6, abs=1e-15), (tap, m, q)


def test_without_attention_the_recursion_is_the_mlp_only_kernel():
    # sigma_o = 0 switches every attention write off: each block is x + W_out phi(W_in LN(x)).
    # Independent check: the scalar NNGP recursion for the variance q and the covariance c
    # of two positions, with the MLP kernel by adaptive 2-d quadrature.
    spec = ModelSpec(d_model=128, n_heads=4, n_layers=3, seq_len=6, sigma_o=0.0, ln_eps=0.0,
                     sigma_embed=0.5, sigma_mlp_in=0.1, sigma_mlp_out=0.05, activation="gelu")
    pred = depth_predict(spec)
    d, d_mlp, D = 128, 512, 127
    q, c = 0.25, 0.0
    for layer in range(3):
        s2 = 0.1**2 * d  # LayerNorm output has |e|^2 = d at eps = 0
        r = gaussian_cosine_mean(c / q, D)
        second = _dblquad_kernel("gelu", math.sqrt(s2), math.sqrt(s2), 1.0 - 1e-12)
        cross = _dblquad_kernel("gelu", math.sqrt(s2), math.sqrt(s2), float(r))
        q, c = q + 0.05**2 * d_mlp * second, c + 0.05**2 * d_mlp * cross
        K = pred.kernel("hook_resid_post", layer)
        np.testing.assert_allclose(np.diag(K), q, rtol=1e-7)
        off = K[~np.eye(6, dtype=bool)]
        # the closure; the best level adds the Gram fluctuation's second-order term (theory.depth_maps._gram:
        # the MLP's mean write is common to all positions, its norm fluctuates over d and d_mlp), O(1/d)
        np.testing.assert_allclose(off, c, rtol=1e-3)
        # no attention: nothing depends on position
        assert np.ptp(pred.var("hook_resid_mid", layer)) < 1e-12 * q


def test_gpt2_output_scaling_flows_through():
    base = ModelSpec(d_model=64, n_heads=4, n_layers=3, seq_len=16, ln_eps=0.0)  # eps = 0: |e2|^2 = d exactly
    scaled = base.replace(output_scaling="gpt2")
    a, b = depth_predict(base), depth_predict(scaled)
    ratio = b.var("hook_attn_out", 0) / a.var("hook_attn_out", 0)
    np.testing.assert_allclose(ratio, 1 / 6, rtol=1e-12)
    np.testing.assert_allclose(b.var("hook_mlp_out", 0) / a.var("hook_mlp_out", 0), 1 / 6, rtol=1e-12)
    assert np.all(b.var("hook_resid_post", 2) < a.var("hook_resid_post", 2))


def test_a_zero_input_gives_a_zero_network():
    # sigma_embed = 0 with eps > 0 is a valid spec: LN(0) = 0, so every write is 0 and
    # attention is uniform (all logits 0). The recursion must say so, not divide 0 by 0.
    pred = depth_predict(ModelSpec(d_model=16, n_heads=2, n_layers=2, seq_len=6, sigma_embed=0.0))
    m = np.arange(1, 7)
    for tap, quantities in pred.values.items():
        if tap.endswith("hook_pattern"):
            np.testing.assert_allclose(quantities["sum_sq"], 1 / m, rtol=1e-12)
            continue
        assert np.all(quantities["var"] == 0) and np.all(quantities["mean"] == 0), tap


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="level must be one of"):
        depth_predict(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4), "exact")
    with pytest.raises(ValueError, match="numeric"):
        depth_predict(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4).symbolic("sigma_q"))
    with pytest.raises(ValueError, match="positional"):
        depth_predict(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, positional="learned"))  # rope, alibi: covered (issue 16)
    with pytest.raises(ValueError, match="vocab_size"):
        depth_predict(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, vocab_size=10))
    with pytest.raises(KeyError, match="blocks.1"):
        depth_predict(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4)).var("hook_z", 1)


# ----------------------------------------------------------------- structure over random specs

@st.composite
def small_specs(draw):
    d_head = draw(st.sampled_from([4, 8, 16]))
    heads = draw(st.sampled_from([1, 2, 4]))
    return ModelSpec(
        d_model=d_head * heads,
        n_heads=heads,
        n_layers=draw(st.integers(1, 3)),
        seq_len=draw(st.integers(2, 24)),
        sigma_embed=draw(st.floats(0.01, 1.0)),
        sigma_q=draw(st.floats(0.0, 0.3)),
        sigma_k=draw(st.floats(0.0, 0.3)),
        sigma_v=draw(st.floats(0.01, 0.3)),
        sigma_o=draw(st.floats(0.0, 0.3)),
        sigma_mlp_in=draw(st.floats(0.01, 0.3)),
        sigma_mlp_out=draw(st.floats(0.0, 0.3)),
        ln_eps=draw(st.sampled_from([0.0, 1e-5, 1e-3])),
        activation=draw(st.sampled_from(["gelu", "gelu_tanh", "relu"])),
        attn_only=draw(st.booleans()),
        output_scaling=draw(st.sampled_from(["none", "gpt2"])),
    )


@settings(max_examples=6)
@given(small_specs())
def test_recursion_structure_over_random_specs(spec):
    pred = depth_predict(spec)
    assert set(pred.values) == set(all_taps(spec.n_layers, spec.attn_only))
    T = spec.seq_len
    previous = None
    for layer in range(spec.n_layers):
        for tap in ("hook_resid_pre",) + (() if spec.attn_only else ("hook_resid_mid",)) + ("hook_resid_post",):
            K = pred.kernel(tap, layer)
            assert np.all(np.isfinite(K)) and np.allclose(K, K.T)
            scale = np.max(np.diag(K))
            assert np.linalg.eigvalsh(K).min() > -1e-9 * scale  # a covariance
            if previous is not None:
                # each residual write adds a covariance: the kernel only grows
                assert np.linalg.eigvalsh(K - previous).min() > -1e-9 * scale
            previous = K
        s2 = pred.values[tap_name("attn.hook_pattern", layer)]["sum_sq"]
        m = np.arange(1, T + 1)
        assert np.all(s2 >= 1 / m - 1e-12) and np.all(s2 <= 1 + 1e-12)
        ln = pred.var("ln1.hook_normalized", layer)
        assert np.all((ln > 0) & (ln <= 1 + 1e-12))
        for name in pred.values:
            tol = pred.tolerances[name]
            # derived (theory.tolerance.depth_tolerance): 0 if exact, else at least the closure of the blocks below
            assert tol == 0.0 or tol >= 1e-4
            if parse_tap(name)[1] == layer and layer > 0 and tol > 0:
                assert tol >= layer / spec.d_model - 1e-12


# ----------------------------------------------------------------- against simulation

SIM_SPECS = {
    "gpt2-like d=64 x3": ModelSpec(d_model=64, n_heads=4, n_layers=3, seq_len=32),
    "relu, gpt2 scaling, d=128 x2": ModelSpec(d_model=128, n_heads=4, n_layers=2, seq_len=32, activation="relu",
                                              output_scaling="gpt2", sigma_embed=0.05, ln_eps=0.0),
    "attention only, larger logits d=64 x3": ModelSpec(d_model=64, n_heads=2, n_layers=3, seq_len=32, attn_only=True,
                                                       sigma_q=0.1, sigma_k=0.1, sigma_v=0.1, sigma_o=0.1),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIM_SPECS))
def test_recursion_against_simulation(name):
    import simulate

    spec = SIM_SPECS[name]
    positions = [1, 2, 4, 8, 16, 32]
    suffixes = ["hook_resid_post", "attn.hook_z"] + ([] if spec.attn_only else ["mlp.hook_post", "hook_resid_mid"])
    taps = [tap_name(s, l) for l in range(spec.n_layers) for s in suffixes]
    sim = simulate.run(spec, taps=taps, samples=1000, seed=7, positions=positions, threads=1, progress=False)
    pred = depth_predict(spec)
    at = pred.at(positions).values
    for tap in taps:
        tol = pred.tolerances[tap]
        for quantity in ("var", "mean"):
            theory = at[tap][quantity]
            if quantity == "mean" and not np.any(theory):
                continue
            stats = sim[tap]
            value, se = getattr(stats, quantity), getattr(stats, quantity + "_se")
            allowed = tol * np.abs(theory) + 4 * se
            worst = np.max(np.abs(theory - value) - allowed)
            assert worst <= 0, (tap, quantity, theory / value - 1, (theory - value) / se)


# ----------------------------------------------------------------- Fisher information about position

def test_fisher_information_of_known_families():
    from theory.information import fisher_information

    m = np.arange(1, 41, dtype=float)
    # linear mean, constant variance: I = slope^2 / v exactly (central differences are exact)
    np.testing.assert_allclose(fisher_information(3.0 + 0.5 * m, np.full(40, 2.0)), 0.125, rtol=1e-12)
    # constant mean, variance e^{a m}: I = a^2 / 2 (v'/v = a), up to the difference error of exp
    a = 0.01
    np.testing.assert_allclose(fisher_information(np.ones(40), np.exp(a * m))[1:-1], a * a / 2, rtol=1e-4)
    with pytest.raises(ValueError, match="> 0"):
        fisher_information(m, -m)


def test_position_information_follows_the_kernel():
    from theory.information import position_information

    spec = ModelSpec(d_model=64, n_heads=4, n_layers=2, seq_len=32)
    pred = depth_predict(spec)
    info = position_information(spec, prediction=pred, noise="chi2")
    K = pred.kernel("hook_resid_post", 1)
    np.testing.assert_allclose(info.mean["blocks.1.hook_resid_post"], np.diag(K), rtol=1e-15)
    np.testing.assert_allclose(info.var["blocks.1.hook_resid_post"], 2 * np.diag(K) ** 2 / 64, rtol=1e-15)
    # (d/2 + 2) (d log K / dm)^2 in the continuum; on the grid up to the difference error
    logk = np.gradient(np.log(np.diag(K)))
    I = info.fisher("hook_resid_post", 1)
    assert np.all(np.diff(info.resolution("hook_resid_post", 1)[1:]) > 0)  # position blurs with m
    assert I[5] == pytest.approx((32 + 2) * (np.gradient(np.diag(K))[5] / K[5, 5]) ** 2, rel=1e-3)
    assert np.isfinite(logk).all()
    # fewer degrees of freedom: less information, in proportion
    half = position_information(spec, effective_dof=32, prediction=pred)
    assert np.all(half.fisher("hook_resid_post", 1) < I)
    with pytest.raises(ValueError, match="effective_dof"):
        position_information(spec, effective_dof=0, prediction=pred)
