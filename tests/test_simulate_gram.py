"""The Gram fast path equals the explicit-weights path in distribution.

Under the annealed measure a projection ``Y = X W^T`` (X: R x d_in fixed, W: d_out x d_in
with i.i.d. N(0, s^2) entries) has i.i.d. columns N(0, s^2 X X^T); the fast path draws
``s L G`` with ``L L^T = X X^T``. We test the conditional law directly, then whole networks
tap by tap (means, variances, attention ``sum_sq``, and two-sample KS on raw values).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

import simulate
from simulate import Projections
from simulate.engine.draw import sample_plan
from tests.simulate_helpers import one_thread, small_spec  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def _column_covariance(project, kind, X, draws_fn, n_draws):
    """Sample covariance (R x R) of the output columns over many draws."""
    cols = []
    for i in range(n_draws):
        proj = Projections(project, draws_fn(i))
        Y = proj(0, kind, X.unsqueeze(0))[0]  # (R, d_out)
        cols.append(Y)
    Y = torch.cat(cols, dim=1).double()  # (R, n_draws * d_out), columns i.i.d.
    return (Y @ Y.T / Y.shape[1]).numpy(), Y.shape[1]


@pytest.mark.parametrize("singular", [False, True])
def test_conditional_law_of_one_projection(singular):
    spec = small_spec(d_model=48, n_heads=4, sigma_o=0.7)
    R, d = 10, spec.d_model
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(R, d, generator=gen, dtype=torch.float64)
    if singular:
        X[7] = X[2]  # a repeated token: X X^T is singular
    truth = spec.sigma_o**2 * (X @ X.T).numpy()
    paths = {
        "gram": lambda i: {(0, "o"): ("G", torch.randn(1, R, d, generator=gen, dtype=torch.float64))},
        "explicit": lambda i: {(0, "o"): ("W", torch.randn(1, d, d, generator=gen, dtype=torch.float64))},
    }
    for name, draws in paths.items():
        cov, n = _column_covariance(spec, "o", X, draws, 400)
        # a sample covariance of n Gaussian vectors: sd of entry (i, j) is sqrt((S_ii S_jj + S_ij^2) / n)
        sd = np.sqrt((np.outer(np.diag(truth), np.diag(truth)) + truth**2) / n)
        z = (cov - truth) / sd
        assert np.abs(z).max() < 5.0, (name, np.abs(z).max())


def _compare(spec, taps, samples, seed, reservoir=0, **kw):
    a = simulate.run(spec, taps=taps, samples=samples, seed=seed, device="cpu", method="explicit", reservoir=reservoir, **kw)
    b = simulate.run(spec, taps=taps, samples=samples, seed=seed + 1, device="cpu", method="gram", reservoir=reservoir, **kw)
    assert b.meta["gram_projections"] and not a.meta["gram_projections"]
    worst = 0.0
    for tap in a.taps:
        sa, sb = a[tap], b[tap]
        pairs = [(sa.mean, sa.mean_se, sb.mean, sb.mean_se), (sa.var, sa.var_se, sb.var, sb.var_se)]
        if sa.sum_sq is not None:
            pairs.append((sa.sum_sq, sa.sum_sq_se, sb.sum_sq, sb.sum_sq_se))
        for xa, ea, xb, eb in pairs:
            se = np.sqrt(ea**2 + eb**2)
            ok = se > 0  # exact quantities (pattern mean 1/m, m = 1) have no spread
            assert np.allclose(xa[~ok], xb[~ok], rtol=1e-6, atol=1e-12), tap
            z = np.abs(xa[ok] - xb[ok]) / se[ok]
            worst = max(worst, z.max(initial=0.0))
    # a few hundred comparisons: |z| < 4.5 holds for all with probability ~0.998
    assert worst < 4.5, worst
    return a, b


def test_whole_network_same_law_on_every_tap():
    spec = small_spec(d_model=32, n_heads=2, n_layers=2, seq_len=8, attn_only=False, activation="gelu",
                      sigma_q=0.4, sigma_k=0.4, sigma_v=0.3, sigma_o=0.3, sigma_mlp_in=0.3, sigma_mlp_out=0.3, sigma_embed=0.5)
    plan = sample_plan(spec, spec.seq_len, with_weights=True, method="auto")
    assert {e.form for e in plan.entries if e.form != "x"} == {"G"}  # auto takes the Gram path here
    a, b = _compare(spec, None, samples=1500, seed=100, reservoir=400)
    for tap in ("blocks.0.attn.hook_z", "blocks.1.hook_resid_post", "blocks.1.attn.hook_attn_scores"):
        for p in (0, spec.seq_len - 1):
            ks = stats.ks_2samp(a[tap].reservoir[:, p], b[tap].reservoir[:, p])
            assert ks.pvalue > 1e-4, (tap, p, ks)


def test_same_law_with_a_small_vocabulary():
    """Repeated tokens make the Gram matrix singular; the root falls back to eigh."""
    spec = small_spec(d_model=32, n_heads=2, seq_len=10, vocab_size=3, sigma_q=0.5, sigma_k=0.5, sigma_embed=1.0)
    _compare(spec, ["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.0.hook_resid_post"], samples=1500, seed=7)


def test_same_law_with_several_sequences_per_network():
    spec = small_spec(d_model=48, n_heads=3, seq_len=6, sigma_q=0.5, sigma_k=0.5)
    _compare(spec, ["blocks.0.attn.hook_z", "blocks.0.hook_attn_out"], samples=800, seed=3, batch=3)
