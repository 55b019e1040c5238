"""Streaming statistics equal a two-pass numpy computation, for any chunking."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from simulate.engine.stats import BLOCK, Accumulator, RowValues, unit_moments
from tests.simulate_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(seed=0, U=150, P=5, C=40, masked=False):
    rng = np.random.default_rng(seed)
    # units with different means and scales, so the across-unit spread matters
    y = rng.normal(size=(U, P, C)) * rng.uniform(0.5, 2.0, size=(U, 1, 1)) + rng.normal(size=(U, 1, 1)) + 3.0
    y = y ** 3 / 10  # skewed, heavy tails: the third and fourth moments are not trivial
    mask = None
    if masked:
        mask = np.arange(C)[None, :] <= np.array([0, 3, 9, 20, 39])[:, None]  # (P, C): keys n <= m
    return y, mask


def _accumulate(y, mask, chunks):
    acc = Accumulator([("t", "value")], y.shape[1])
    first = 0
    for size in chunks:
        row = RowValues(torch.as_tensor(y[first:first + size]), None if mask is None else torch.as_tensor(mask), y.shape[2])
        moments = np.stack([m.numpy() for m in unit_moments(row)])[:, :, None]  # (4, U, 1, P)
        counts = (np.full(y.shape[1], y.shape[2]) if mask is None else mask.sum(-1)).astype(float)[None]
        acc.add(np.arange(first, first + size), moments, counts, first + size)
        first += size
    assert first == len(y)
    return acc.finalize()


@pytest.mark.parametrize("masked", [False, True])
def test_streaming_equals_two_pass_numpy(masked):
    y, mask = _data(masked=masked)
    got = _accumulate(y, mask, [7, 64, 1, 50, 28])
    U, P, C = y.shape
    for p in range(P):
        vals = y[:, p, :] if mask is None else y[:, p, mask[p]]  # (U, c)
        pooled = vals.ravel()
        mean = pooled.mean()
        dev = pooled - mean
        unit_means = vals.mean(axis=1)
        mean_se = unit_means.std(ddof=1) / np.sqrt(U)
        # the variance estimate and its delta-method standard error, computed directly
        b = (vals ** 2).mean(axis=1)
        grad_b_minus = b - 2 * unit_means.mean() * unit_means
        var_se = grad_b_minus.std(ddof=1) / np.sqrt(U)
        want = {
            "mean": mean,
            "m2": (dev ** 2).sum(),
            "m3": (dev ** 3).sum(),
            "m4": (dev ** 4).sum(),
            "mean_se": mean_se,
            "var": pooled.var() + mean_se ** 2,
            "var_se": var_se,
            "kurtosis": len(pooled) * (dev ** 4).sum() / (dev ** 2).sum() ** 2,
            "n_values": pooled.size,
            "units": U,
        }
        for key, value in want.items():
            assert np.isclose(got[key][0, p], value, rtol=1e-10, atol=1e-12), (key, p)


def test_result_does_not_depend_on_chunking():
    y, mask = _data(seed=1, U=2 * BLOCK + 9, masked=True)
    a = _accumulate(y, mask, [len(y)])
    b = _accumulate(y, mask, [1] * 3 + [5] * 20 + [len(y) - 103])
    c = _accumulate(y, mask, [BLOCK + 1, BLOCK - 1, 9])
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=True), key
        assert np.array_equal(a[key], c[key], equal_nan=True), key


def test_unbiased_variance_on_correlated_units():
    """Values within a unit share a random offset: `var` stays unbiased, `_se` honest."""
    rng = np.random.default_rng(5)
    est, se = [], []
    for rep in range(300):
        y = rng.normal(size=(20, 1, 1)) + 0.5 * rng.normal(size=(20, 1, 30))  # true var 1.25
        got = _accumulate(y, None, [20])
        est.append(got["var"][0, 0])
        se.append(got["var_se"][0, 0])
    est = np.array(est)
    # mean of the estimates within 4 standard errors of the truth (the biased M2/n fails)
    assert abs(est.mean() - 1.25) < 4 * est.std() / np.sqrt(len(est))
    # the reported standard error matches the actual spread of the estimate (to ~15%)
    assert 0.8 < np.mean(se) / est.std() < 1.2


def test_finalize_leaves_the_accumulator_unchanged():
    y, _ = _data(seed=2, U=BLOCK + 10)
    acc = Accumulator([("t", "value")], y.shape[1])
    row = RowValues(torch.as_tensor(y), None, 0)
    moments = np.stack([m.numpy() for m in unit_moments(row)])[:, :, None]
    acc.add(np.arange(len(y)), moments, np.full((1, y.shape[1]), float(y.shape[2])), len(y))
    first = acc.finalize()
    second = acc.finalize()
    for key in first:
        assert np.array_equal(first[key], second[key], equal_nan=True)
    assert acc.pending.shape[1] == 10


@pytest.mark.parametrize("measure", ["annealed", "quenched"])
def test_run_statistics_equal_numpy_on_the_raw_activations(measure):
    """`run` summarises exactly the activations `activations` returns for the same seed."""
    import simulate
    from tests.simulate_helpers import small_spec

    spec = small_spec(n_layers=1, attn_only=False, seq_len=7, sigma_q=0.6, sigma_k=0.6)
    taps = ["blocks.0.attn.hook_k", "blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_pattern", "blocks.0.mlp.hook_post"]
    U = 90
    result = simulate.run(spec, taps=taps, samples=U, seed=4, device="cpu", dtype="float64", measure=measure, chunk_size=32)
    cache = simulate.activations(spec, taps=taps, samples=U, seed=4, device="cpu", dtype="float64", measure=measure)
    T = spec.seq_len
    for tap in taps:
        act = cache[tap].numpy()
        if measure == "quenched":
            act = act[0][:, None]  # (U, 1, ...): the sequences are the units
        for m in range(1, T + 1):
            if tap.endswith(("scores", "pattern")):
                vals = act[:, :, :, m - 1, :m].reshape(U, -1)  # keys n <= m
            else:
                vals = act[:, :, m - 1].reshape(U, -1)
            unit_means = vals.mean(axis=1)
            mean_se = unit_means.std(ddof=1) / np.sqrt(U)
            got = result[tap].at(m)
            assert np.isclose(got["mean"], vals.mean(), rtol=1e-9, atol=1e-14), (tap, m)
            assert np.isclose(got["mean_se"], mean_se, rtol=1e-8, atol=1e-14), (tap, m)
            assert np.isclose(got["var"], vals.var() + mean_se**2, rtol=1e-9, atol=1e-14), (tap, m)
            if tap.endswith("pattern"):
                sum_sq = (act[:, :, :, m - 1, :m] ** 2).sum(-1).reshape(U, -1).mean(axis=1)
                assert np.isclose(got["sum_sq"], sum_sq.mean(), rtol=1e-9), m
                assert np.isclose(got["sum_sq_se"], sum_sq.std(ddof=1) / np.sqrt(U), rtol=1e-8, atol=1e-14), m


def test_memory_stays_flat_as_samples_grow():
    acc = Accumulator([("t", "value"), ("u", "value")], 3, reservoir=5)
    rng = np.random.default_rng(0)
    sizes = []
    for first in range(0, 40 * BLOCK, 37):
        units = np.arange(first, first + 37)
        acc.add(units, rng.normal(size=(4, 37, 2, 3)) ** 2, np.full((2, 3), 10.0), first + 37)
        sizes.append(sum(v.nbytes for v in acc.state_dict().values()))
    assert acc.unit["units"] + acc.pending.shape[1] == len(sizes) * 37  # every unit counted once
    assert acc.pending.shape[1] < BLOCK + 37  # at most one block (and a chunk) waits
    half = len(sizes) // 2
    assert max(sizes[half:]) <= max(sizes[:half])  # the state does not grow with the samples
