"""Layer-1 theory as a table of identities: symbolic results against independent closed forms."""

import numpy as np
import pytest
import sympy as sp

from theory import Level, ModelSpec, derive, predict
from theory.steps import NU1, STEPS
from theory.taps import ATTENTION_TAPS, all_taps

d = sp.Symbol("d", positive=True, integer=True)
H = sp.Symbol("H", positive=True, integer=True)
sq, sk = sp.Symbol("sigma_q", positive=True), sp.Symbol("sigma_k", positive=True)
m = sp.Symbol("m", positive=True, integer=True)


@pytest.fixture(scope="module")
def symbolic_eps0():
    return {
        rule: derive(ModelSpec(ln_eps=0.0, attn_scale=rule).symbolic("d_model", "n_heads", "sigma_q", "sigma_k"))
        for rule in ("sqrt", "linear")
    }


@pytest.mark.parametrize("rule, scale", [("sqrt", sp.sqrt(H / d)), ("linear", H / d)])
def test_scaled_logit_variance_symbolic(symbolic_eps0, rule, scale):
    # l = s sum_{j<=d_head} q_j k_j with q_j ~ N(0, sigma_q^2 d), k_j ~ N(0, sigma_k^2 d) at eps = 0.
    expected = scale**2 * (d / H) * (sq**2 * d) * (sk**2 * d)
    step = symbolic_eps0[rule]["blocks.0.attn.hook_attn_scores"]
    for level in ("leading", "best"):
        assert sp.simplify(step.at(level).quantities["var"] - expected) == 0
    assert sp.simplify(step.best.quantities["excess_kurtosis"] - 6 * H / d) == 0  # 6/d_head


def test_logit_variance_with_symbolic_eps_uses_nu():
    spec = ModelSpec().symbolic("d_model", "sigma_q", "sigma_k", "ln_eps")
    step = derive(spec)["blocks.0.attn.hook_attn_scores"].best
    off = step.forms["var (n != m)"]
    # sqrt rule: s^2 d_head = 1, so Var = sigma_q^2 sigma_k^2 (E|e|^2)^2 = sigma_q^2 sigma_k^2 d^2 nu_1^2.
    assert sp.simplify(off - sq**2 * sk**2 * d**2 * NU1**2) == 0
    ln = derive(spec)["blocks.0.ln1.hook_normalized"].best
    assert ln.quantities["var"] == NU1 and "nu_1" in ln.forms


def test_projection_and_output_chain_symbolic(symbolic_eps0):
    der = symbolic_eps0["sqrt"]
    sv, so, se = sp.Float(0.02), sp.Float(0.02), sp.Float(0.02)
    assert sp.simplify(der["blocks.0.attn.hook_v"].best.quantities["var"] - sv**2 * d) == 0
    z_lead = der["blocks.0.attn.hook_z"].leading.quantities["var"]
    assert sp.simplify(z_lead - sv**2 * d / m) == 0  # the paper's 1/m shrinkage
    out = der["blocks.0.hook_attn_out"].leading.quantities["var"]
    assert sp.simplify(out - so**2 * d * z_lead) == 0
    mid = der["blocks.0.hook_resid_mid"].leading.quantities["var"]
    assert sp.simplify(mid - se**2 - out) == 0


def test_every_layer1_tap_has_one_theory_step():
    assert tuple(STEPS) == ATTENTION_TAPS
    der = derive(ModelSpec(d_model=32, n_heads=2, seq_len=16))
    assert list(der) == [f"blocks.0.{t}" for t in ATTENTION_TAPS]
    assert der[("hook_z", 0)].tap == "blocks.0.attn.hook_z"
    with pytest.raises(KeyError):
        der["blocks.1.attn.hook_z"]


def test_best_reduces_to_leading_without_logits_or_eps():
    # sigma_q = 0: every logit is 0, attention is exactly uniform, nothing couples.
    spec = ModelSpec(d_model=64, n_heads=4, seq_len=512, sigma_q=0.0, ln_eps=0.0)
    positions = [1, 3, 17, 512]
    best, lead = (predict(spec, positions, level, taps=ATTENTION_TAPS).to_dict()["predictions"] for level in ("best", "leading"))
    for tap in ATTENTION_TAPS:
        for p in map(str, positions):
            for q, value in lead[f"blocks.0.{tap}"][p].items():
                assert best[f"blocks.0.{tap}"][p][q] == pytest.approx(value, rel=1e-9, abs=1e-15), (tap, p, q)


def test_spec_changes_flow_through():
    base = ModelSpec(d_model=64, n_heads=4, seq_len=64, sigma_k=0.2)
    pos = [1, 8, 64]

    def zvar(spec):
        return np.array([v["var"] for v in predict(spec, pos, taps=["attn.hook_z"]).to_dict()["predictions"]["blocks.0.attn.hook_z"].values()])

    assert np.allclose(zvar(base.replace(sigma_v=0.04)), 4 * zvar(base), rtol=1e-9)
    # The linear rule shrinks the logits by sqrt(d_head): less coupling, smaller variance.
    assert (zvar(base.replace(attn_scale="linear"))[1:] < zvar(base)[1:]).all()
    # eps lowers the LayerNorm variance.
    v0 = predict(base.replace(ln_eps=0.0), [1], taps=["ln1.hook_normalized"]).to_dict()["predictions"]["blocks.0.ln1.hook_normalized"]["1"]["var"]
    v1 = predict(base.replace(ln_eps=1e-4), [1], taps=["ln1.hook_normalized"]).to_dict()["predictions"]["blocks.0.ln1.hook_normalized"]["1"]["var"]
    assert v0 == 1.0 and v1 < 0.9


def test_levels_and_metadata():
    der = derive(ModelSpec(d_model=64, n_heads=4, seq_len=64, ln_eps=0.0))
    assert der["blocks.0.attn.hook_z"].best.level is Level.EXACT
    assert der["blocks.0.attn.hook_z"].leading.level is Level.APPROXIMATE
    assert der["blocks.0.attn.hook_q"].best.level is Level.EXACT
    for step in der.steps:
        for level in ("leading", "best"):
            r = step.at(level)
            assert r.assumptions and r.regime and r.measure == "annealed"
            assert r.latex().startswith("\\begin{aligned}")
    eps = derive(ModelSpec(d_model=64, n_heads=4, seq_len=64))
    assert eps["blocks.0.attn.hook_z"].best.level is Level.APPROXIMATE
    assert "delta" in eps["blocks.0.attn.hook_z"].best.error


def test_predict_format():
    out = predict(ModelSpec(d_model=64, n_heads=4, n_layers=2, seq_len=64), [1, 2, 64]).to_dict()
    assert out["measure"] == "annealed" and out["level"] == "best"
    assert list(out["predictions"]) == all_taps(2)
    assert out["meta"]["blocks.1.hook_resid_post"]["tolerance"] > 0
    only = predict(ModelSpec(d_model=64, n_heads=4, n_layers=3, seq_len=64), [1, 64], taps=["attn.hook_z", "blocks.1.hook_resid_mid"]).to_dict()
    assert list(only["predictions"]) == ["blocks.0.attn.hook_z", "blocks.1.hook_resid_mid"]
    with pytest.raises(ValueError, match="layers must lie in 0..2"):
        predict(ModelSpec(d_model=64, n_heads=4, n_layers=3, seq_len=64), [1], layers=[3])
    pattern = out["predictions"]["blocks.0.attn.hook_pattern"]
    assert pattern["1"]["sum_sq"] == 1.0 and pattern["64"]["mean"] == pytest.approx(1 / 64)
    assert pattern["2"]["sum_sq"] > 0.5
    for per_m in out["predictions"].values():
        assert set(per_m) == {"1", "2", "64"}
        assert all(np.isfinite(v) for vals in per_m.values() for v in vals.values())
    with pytest.raises(ValueError, match="positions"):
        predict(ModelSpec(seq_len=8), [9])
    with pytest.raises(ValueError, match="level"):
        predict(ModelSpec(), [1], "exactest")
    with pytest.raises(ValueError, match="symbolic"):
        predict(ModelSpec().symbolic("d_model"), [1])


def test_finite_vocabulary_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="vocab_size"):
        predict(ModelSpec(d_model=16, n_heads=2, vocab_size=100), [1])


def test_symbolic_step_refuses_numeric_evaluation():
    r = derive(ModelSpec(ln_eps=0.0).symbolic("sigma_v"))["blocks.0.attn.hook_v"].best
    with pytest.raises(ValueError, match="sigma_v"):
        r.evaluate([1])
