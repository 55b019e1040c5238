"""The fast numerical kernels of the depth recursion (issue 19 item 4) against direct evaluation:
Mehler's series by Horner in blocks against the plain power sum of every term, the LayerNorm
cosine's Taylor series against scipy's hyp2f1, the causal double cumsum against numpy's, the
Gamma rule against its dense Jacobi matrix, and the row law's shorter t range against the long one.
Speed is measured in benchmarks/theory_depth_speed.py, never here."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import gammaln, hyp2f1

from theory import _activations as act
from theory import _kernel_maps as km
from theory._quadrature import gamma_rule, gamma_rules
from theory._row_law import row_law, sphere_key_law


def _kernel(T: int, rng, spread: float = 0.02) -> np.ndarray:
    """A covariance with strongly correlated positions and slightly different variances."""
    X = rng.normal(size=(T, 3 * T)) + 1.5 * rng.normal(size=(1, 3 * T))
    C = X @ X.T / (3 * T)
    s = 1.0 + spread * rng.uniform(-1, 1, T)
    return 0.3 * C * np.outer(s, s)


def _power_sum(activation: str, cov: np.ndarray, order: int = 120) -> np.ndarray:
    """``sum_{k<=order} r^k b_k b_k^T``, every term, powers accumulated (the direct evaluation)."""
    var = np.diag(cov).copy()
    b = act.hermite_coefficients(activation, np.sqrt(var), order)
    corr = km.correlation(cov)
    np.fill_diagonal(corr, 0.0)
    F, power = np.zeros_like(cov), np.ones_like(cov)
    for k in range(order + 1):
        F += power * np.outer(b[:, k], b[:, k])
        power *= corr
    np.fill_diagonal(F, act.activation_moments(activation, var)[1])
    return F


@pytest.mark.parametrize("activation", ["gelu_tanh", "gelu", "relu", "silu"])
def test_mehler_horner_blocks_equal_the_power_sum(activation):
    cov = _kernel(37, np.random.default_rng(3))  # 37: blocks of 16 and a remainder
    F, bound = act.mehler_kernel(activation, cov)
    direct = _power_sum(activation, cov)
    scale = float(np.min(np.diag(direct)))
    # the early stop drops only terms below float64 rounding of the smallest entry; ReLU's
    # slowly decaying coefficients run to the order and the bound says what is left
    assert np.max(np.abs(F - direct)) <= 1e-14 * scale + bound
    np.testing.assert_array_equal(F, F.T)
    if activation != "relu":
        assert bound < 1e-16 * scale  # smooth activations: the series converged
    # a negative correlation and a constant position (variance 0)
    cov2 = np.array([[1.0, -0.7, 0.0], [-0.7, 1.0, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(act.mehler_kernel(activation, cov2)[0], _power_sum(activation, cov2),
                               rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("dim", [3, 15, 31, 127, 767, 4095])
def test_cosine_series_equals_hyp2f1(dim):
    rng = np.random.default_rng(dim)
    r = rng.uniform(-0.99, 0.99, (40, 40))
    r[0, :3] = [1.0, -1.0, 0.0]
    got = km.gaussian_cosine_mean(r, dim)
    ratio = math.exp(2.0 * (gammaln((dim + 1) / 2.0) - gammaln(dim / 2.0))) * 2.0 / dim
    inside = np.abs(r) < 1.0
    want = r * ratio * hyp2f1(0.5, 0.5, dim / 2.0 + 1.0, r * r)
    np.testing.assert_allclose(got[inside], want[inside], rtol=4e-15, atol=0)
    # |r| = 1: the cosine of identical (or opposite) vectors is exactly +-1
    np.testing.assert_allclose(got[0, :3], [1.0, -1.0, 0.0], rtol=1e-13, atol=0)


def test_cosine_series_bound():
    # the series is used only where its remainder bound is below 2^-56, and refused near z = 1
    a = km._cosine_series(384.5, 0.95)
    assert a is not None and len(a) < 15 and a[0] == 1.0
    z = 0.95
    tail = sum(_term(384.5, n) * z**n for n in range(len(a), len(a) + 60))
    assert tail < 2.0**-56
    assert km._cosine_series(2.5, 0.999) is None  # slow convergence: scipy's hyp2f1


def _term(c: float, n: int) -> float:
    return math.exp(2 * (gammaln(n + 0.5) - gammaln(0.5)) - (gammaln(c + n) - gammaln(c)) - gammaln(n + 1))


def test_uniform_average_is_numpys_double_cumsum():
    E = _kernel(50, np.random.default_rng(1))
    pos = np.arange(1, 51, dtype=float)
    want = np.cumsum(np.cumsum(E, axis=0), axis=1) / np.outer(pos, pos)
    np.testing.assert_array_equal(km.uniform_average(E), want)  # the same additions in the same order


def test_correlation_and_gamma_rule_are_bit_identical_to_the_dense_forms():
    cov = _kernel(20, np.random.default_rng(2))
    cov[4, :] = cov[:, 4] = 0.0
    s = np.sqrt(np.diag(cov))
    scale = np.outer(s, s)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.where(scale > 0, cov / np.where(scale > 0, scale, 1.0), 0.0)
    np.testing.assert_array_equal(km.correlation(cov), want)
    for n, shape in ((6, 0.7), (8, 383.5), (48, 12.25)):
        alpha = shape - 1.0
        i = np.arange(n)
        off = np.sqrt(np.arange(1, n) * (np.arange(1, n) + alpha))
        nodes, vectors = np.linalg.eigh(np.diag(2 * i + alpha + 1) + np.diag(off, 1) + np.diag(off, -1))
        x, w = gamma_rule(n, shape)
        np.testing.assert_array_equal(x, nodes)
        np.testing.assert_array_equal(w, vectors[0] ** 2)
        assert x @ w == pytest.approx(shape, rel=1e-13)  # E[X] = shape


@pytest.mark.parametrize("tau2", [0.05, 1.0, 3.0])
def test_row_law_short_t_range_matches_the_long_one(tau2):
    # mean_weights=True integrates from 30 units left of the heaviest row, False from 20: the
    # four expectations they share agree to rounding (the left tail falls like e^{2y} or faster)
    counts = np.array([1, 2, 3, 7, 40, 300, 2000])
    law = sphere_key_law(64, 255)
    short = row_law(counts, tau2, law)
    long = row_law(counts, tau2, law, mean_weights=True)
    for q in ("sum_sq", "sum_sq2", "sum_cube"):
        np.testing.assert_allclose(getattr(short, q), getattr(long, q), rtol=1e-12, atol=0)
    np.testing.assert_allclose(short.coupling[1:], long.coupling[1:], rtol=1e-11, atol=0)


def test_gamma_rules_are_gamma_rule_per_shape():
    shapes = np.array([0.6, 1.0, 7.3, 250.0, 1e4])
    nodes, weights = gamma_rules(6, shapes)
    for i, shape in enumerate(shapes):
        x, w = gamma_rule(6, float(shape))
        np.testing.assert_array_equal(nodes[i], x)  # the same matrices, the same LAPACK call
        np.testing.assert_array_equal(weights[i], w)


def test_row_pair_excess_outer_products_equal_the_indexed_form():
    # the pair correction built from outer products on the upper triangle, mirrored, is the
    # min/max-indexed formula of its docstring, bit for bit
    import importlib
    from types import SimpleNamespace

    attention = importlib.import_module("theory.depth_maps.attention")
    T = 64
    rng = np.random.default_rng(3)
    r = np.arange(1, T + 1, dtype=float)
    s2 = (1 + 0.2 * rng.random(T)) / r
    rows = SimpleNamespace(sum_sq=s2, sum_cube=s2**2 * (1 + 0.2 * rng.random(T)))
    tau2 = 0.1 + rng.random(T)
    cosine = rng.random((T, T))
    cosine = (cosine + cosine.T) / 2
    excess, second = attention.row_pair_excess(rows, tau2, cosine, 16, 63)
    S2, S3 = rows.sum_sq, rows.sum_cube
    with np.errstate(divide="ignore", invalid="ignore"):
        b1, c1 = (1 - S2) / r, (1 - 3 * S2 + 2 * S3) / r
        b2 = np.where(r > 1, -(1 - S2) / (r * (r - 1)), 0.0)
        c2 = np.where(r > 1, (3 * S2 - 2 * S3 - 1) / (r * (r - 1)), 0.0)
        c3 = np.where(r > 2, 2 * (1 - 3 * S2 + 2 * S3) / (r * (r - 1) * (r - 2)), 0.0)
    lo, hi = np.minimum.outer(np.arange(T), np.arange(T)), np.maximum.outer(np.arange(T), np.arange(T))
    m = r[lo]
    F1 = m * b1[lo] * b1[hi] + m * (m - 1.0) * b2[lo] * b2[hi]
    F2 = m * c1[lo] * c1[hi] + 3.0 * m * (m - 1.0) * c2[lo] * c2[hi] + m * (m - 1.0) * (m - 2.0) * c3[lo] * c3[hi]
    rho2 = cosine**2 + (1 - cosine**2) ** 2 * (1 / 16 + 1 / 63)
    want_second = 0.5 * np.outer(tau2, tau2) * rho2 * F2
    want = np.outer(np.sqrt(tau2), np.sqrt(tau2)) * cosine * F1 + want_second
    np.fill_diagonal(want, 0.0)
    np.fill_diagonal(want_second, 0.0)
    assert np.array_equal(excess, want) and np.array_equal(second, want_second)


@pytest.mark.parametrize("dim", [63, 767])
def test_row_law_many_equals_row_law_per_logit_variance(dim):
    # all nodes of all logit variances in one batched evaluation (padded t grids, exp's argument
    # cut at -700 where its bound holds) against one row_law call per variance: rounding only
    from theory._row_law import chi2_mixture, row_law_many

    counts = np.array([1, 2, 3, 5, 8, 32, 33, 90, 400, 1024])
    law = sphere_key_law(64, dim)
    mixture = chi2_mixture(64, dim, 8, 6)
    tau2s = [0.0, 1e-4, 0.02, 0.3, 1.7, 4.0, 12.0, 40.0]  # 12, 40: t past e^75 (no cut), t^4 past e^700 (log branch)
    many = row_law_many(counts, tau2s, law, mixture=mixture, y_step=0.16)
    for tau2, got in zip(tau2s, many):
        want = row_law(counts, tau2, law, mixture=mixture, y_step=0.16)
        for q in ("sum_sq", "sum_sq_r", "sum_sq2", "sum_cube"):
            np.testing.assert_allclose(getattr(got, q), getattr(want, q), rtol=1e-14, atol=0)
        # the coupling is 0 at one key (the rounding of a difference there)
        np.testing.assert_allclose(got.coupling[1:], want.coupling[1:], rtol=1e-13, atol=0)
        assert abs(got.coupling[0]) < 1e-15
    with pytest.raises(ValueError, match="counts"):
        row_law_many([0, 1], [0.1], law)


@pytest.mark.parametrize("T", [1, 2, 45, 100])
def test_pair_corrected_blocks_equal_the_full_matrices(T):
    # A = U + sqrt(v v^T) row_pair_excess(correlation(E)) with its diagonal set, and the size of the
    # second-order part, a block of rows at a time: bit for bit the T x T composition
    import importlib
    from types import SimpleNamespace

    attention = importlib.import_module("theory.depth_maps.attention")
    rng = np.random.default_rng(T)
    r = np.arange(1, T + 1, dtype=float)
    s2 = (1 + 0.2 * rng.random(T)) / r
    s2[0] = 1.0
    rows = SimpleNamespace(sum_sq=s2, sum_cube=s2**2 * (1 + 0.2 * rng.random(T)))
    E = _kernel(T, rng) if T > 2 else np.eye(T) + 0.1
    E[0, 1:] *= 1 + 1e-16 * rng.standard_normal(T - 1)  # not exactly symmetric, as the recursion's kernels
    U = km.uniform_average(E)
    tau2, spread = 0.1 + rng.random(T), 0.01 + rng.random(T)
    diag = np.diag(U) + spread * 0.01
    pair, second = attention.row_pair_excess(rows, tau2, km.correlation(E), 16, 63)
    want = U.copy()
    want += np.sqrt(np.outer(spread, spread)) * pair
    want[np.diag_indices(T)] = diag
    scale = np.sqrt(np.outer(np.diag(want), np.diag(want)))
    want_size = float(np.max(np.abs(np.sqrt(np.outer(spread, spread)) * second) / np.where(scale > 0, scale, np.inf)))
    for block in (32, 7):
        attention._PAIR_BLOCK, saved = block, attention._PAIR_BLOCK
        try:
            A, size = attention.pair_corrected(U, E, rows, tau2, spread, diag, 16, 63)
        finally:
            attention._PAIR_BLOCK = saved
        np.testing.assert_array_equal(A, want)
        assert size == want_size


@pytest.mark.parametrize("dof", [3, 255, 767])
def test_cosine_kernel_blocks_equal_the_full_form(dof):
    # layernorm_kernel's off-diagonal a block of rows at a time: bit for bit the T x T form,
    # with a zero-variance position, |r| = 1 entries and (dof = 3) the hyp2f1 fallback
    T = 70
    K = _kernel(T, np.random.default_rng(dof))
    K[5, :] = K[:, 5] = 0.0
    K[9, 10] = K[10, 9] = math.sqrt(K[9, 9] * K[10, 10]) * 1.5  # clipped to 1
    g = 1.0 + 0.01 * np.random.default_rng(1).random(T)
    want = km.gaussian_cosine_mean(km.correlation(K), dof) * np.outer(g, g)
    for block in (32, 5):
        saved, km._COSINE_BLOCK = km._COSINE_BLOCK, block
        try:
            got = km._cosine_kernel(K, dof, g)
        finally:
            km._COSINE_BLOCK = saved
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("T", [1, 2, 63, 64, 65, 150])
def test_uniform_average_diagonal_is_the_diagonal(T):
    # the diagonal alone (block boundaries at 64), bit for bit; key_spread without U reads it
    E = _kernel(T, np.random.default_rng(T)) if T > 1 else np.full((1, 1), 0.3)
    E[0, -1] *= 1 + 1e-15  # not exactly symmetric
    U = km.uniform_average(E)
    np.testing.assert_array_equal(km.uniform_average_diagonal(E), np.diag(U))
    np.testing.assert_array_equal(km.key_spread(E), km.key_spread(E, U))
