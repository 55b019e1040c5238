"""Per-coordinate laws: normalisation, moments against the moment engine, cdf against
quadrature of the pdf, and simulation not rejecting them."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats

from theory import ModelSpec, derive
from theory.laws import law

TAPS = ["blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q", "blocks.0.attn.hook_v", "blocks.0.attn.hook_attn_scores"]


@st.composite
def small_specs(draw):
    d_head = draw(st.sampled_from([1, 2, 4, 8, 16]))
    n_heads = draw(st.sampled_from([4, 8]))  # d_model >= 4: the LayerNorm law needs d >= 3
    return ModelSpec(
        d_model=d_head * n_heads,
        n_heads=n_heads,
        seq_len=8,
        sigma_embed=draw(st.sampled_from([0.02, 0.1, 1.0])),
        sigma_q=draw(st.floats(0.01, 1.0)),
        sigma_k=draw(st.floats(0.01, 1.0)),
        sigma_v=draw(st.floats(0.01, 1.0)),
        ln_eps=draw(st.sampled_from([0.0, 1e-5, 1e-3])),
        attn_scale=draw(st.sampled_from(["sqrt", "linear"])),
    )


def _check_law(spec, tap):
    dist = law(spec, tap)
    sd = math.sqrt(dist.var())
    lo, hi = max(dist.support()[0], -30 * sd), min(dist.support()[1], 30 * sd)
    total = integrate.quad(dist.pdf, lo, hi, limit=400, points=[0.0])[0]
    assert total == pytest.approx(1.0, abs=1e-6)
    second = integrate.quad(lambda x: x * x * dist.pdf(x), lo, hi, limit=400, points=[0.0])[0]
    assert second == pytest.approx(dist.var(), rel=1e-5)
    # The law's variance is the moment engine's (the scores law is one score with n != m).
    result = derive(spec)[tap].best
    key = "var (n != m)" if tap.endswith("scores") else "var"
    expr = result.forms[key] if key in result.forms else result.quantities[key]
    assert dist.var() == pytest.approx(float(expr), rel=1e-8)
    for c in (0.1 * sd, sd, 2.5 * sd):
        by_quadrature = 0.5 + integrate.quad(dist.pdf, 0.0, c, limit=400)[0]
        assert dist.cdf(c) == pytest.approx(by_quadrature, abs=2e-6)
    grid = np.linspace(lo, hi, 101)
    assert np.all(np.diff(dist.cdf(grid)) >= -1e-12)  # monotone


@settings(max_examples=10)
@given(small_specs(), st.sampled_from(TAPS))
def test_laws_normalised_moments_and_cdf(spec, tap):
    _check_law(spec, tap)


def test_ln_coordinate_closed_form_eps0():
    spec = ModelSpec(d_model=10, n_heads=2, ln_eps=0.0)
    dist = law(spec, "blocks.0.ln1.hook_normalized")
    # e^2/(d-1) ~ Beta(1/2, (d-2)/2): compare cdfs through the Beta law.
    for e in (0.2, 1.0, 2.5):
        beta_cdf = stats.beta(0.5, 4.0).cdf(e * e / 9)
        assert dist.cdf(e) - dist.cdf(-e) == pytest.approx(beta_cdf, rel=1e-10)
    assert dist.support() == pytest.approx((-3.0, 3.0))
    assert dist.stats(moments="k") == pytest.approx(-6 / 11)


def test_scores_excess_kurtosis_is_6_over_d_head():
    for d_head in (1, 4, 64):
        spec = ModelSpec(d_model=2 * d_head, n_heads=2, ln_eps=0.0)
        assert float(law(spec, "blocks.0.attn.hook_attn_scores").stats(moments="k")) == pytest.approx(6 / d_head)


def test_pooled_scores_law_mixes_the_diagonal():
    spec = ModelSpec(d_model=16, n_heads=4, ln_eps=1e-3, sigma_embed=0.05)
    off = law(spec, "blocks.0.attn.hook_attn_scores").var()
    diag = law(spec, "blocks.0.attn.hook_attn_scores", position=1).var()
    pooled = law(spec, "blocks.0.attn.hook_attn_scores", position=4).var()
    assert diag > off and pooled == pytest.approx((3 * off + diag) / 4, rel=1e-12)
    predicted = derive(spec)["blocks.0.attn.hook_attn_scores"].best.evaluate([4])["var"][0]
    assert pooled == pytest.approx(predicted, rel=1e-6)


def test_no_law_is_a_clear_error():
    spec = ModelSpec(d_model=16, n_heads=2)
    for tap in ("blocks.0.attn.hook_z", "blocks.0.attn.hook_pattern"):
        with pytest.raises(NotImplementedError, match="no law"):
            law(spec, tap)
    with pytest.raises(ValueError, match="unknown tap"):
        law(spec, "blocks.0.hook_nothing")


@pytest.mark.slow
def test_simulation_does_not_reject_the_exact_laws():
    simulate = pytest.importorskip("simulate")
    spec = ModelSpec(d_model=16, n_heads=4, n_layers=1, seq_len=4, sigma_q=0.5, sigma_k=0.5, ln_eps=1e-3,
                     sigma_embed=0.05, attn_only=True)
    taps = ["blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q", "blocks.0.attn.hook_attn_scores"]
    result = simulate.run(spec, taps=taps, samples=3000, seed=5, device="cpu", progress=False, reservoir=3000)
    pvalues = {}
    for tap in taps:
        # One value per independent network (position 4: for scores a key n < m is drawn).
        draws = np.asarray(result[tap].reservoir)[:, -1]
        pvalues[tap] = stats.kstest(draws, law(spec, tap, position=4).cdf).pvalue
    # Holm at family-wise 1%: the smallest p-value must exceed 0.01/3, etc.
    ordered = sorted(pvalues.values())
    assert all(p > 0.01 / (len(ordered) - i) for i, p in enumerate(ordered)), pvalues


@pytest.mark.parametrize("k", [1, 3, 64, 150, 300])
def test_variance_gamma_representations_agree(k):
    # Bessel closed form and the chi-square mixture sqrt(W) Z are the same law.
    from theory.laws import _variance_gamma_pdf, _variance_gamma_pdf_mixture

    x = np.sqrt(k) * np.array([1e-9, 0.01, 0.3, 1.0, 3.0])
    closed, mixture = _variance_gamma_pdf(x, k), _variance_gamma_pdf_mixture(x, k)
    assert np.allclose(closed[1:], mixture[1:], rtol=1e-7)
    assert np.all(np.isfinite(closed[1:]))
