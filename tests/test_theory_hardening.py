"""theory's domain and size guards (issue 13): every legal spec gets numbers or one clear error.

Each test states an independent fact: a closed form, a limit, a finer quadrature, or the
message's naming of the field.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from theory import ModelSpec, check_domain, derive, predict
from theory import depth
from theory._domain import QUADRATURE_TOLERANCE, TAU2_SAFE, check_logit_variance, layer_one_logit_variance
from theory._layernorm import norm_moments_numeric
from theory._moments import beta_moment, chi2_moment
from theory._quadrature import row_expectations

SMALL = dict(d_model=16, n_heads=2, n_layers=2, seq_len=8)


@pytest.mark.parametrize("changes, field", [
    ({"d_model": 2, "n_heads": 1}, "d_model"),
    ({"positional": "sinusoidal"}, "positional"),  # rope and alibi are covered (issue 16)
    ({"vocab_size": 10}, "vocab_size"),
    ({"sigma_embed": 1e-300}, "sigma_embed"),
    ({"sigma_embed": 5e-324}, "sigma_embed"),
    ({"sigma_embed": 1e200}, "sigma_embed"),
    ({"sigma_embed": 1e308}, "sigma_embed"),
])
def test_outside_the_domain_is_one_error_naming_the_field(changes, field):
    spec = ModelSpec(**{**SMALL, **changes})
    for call in (lambda: check_domain(spec), lambda: derive(spec), lambda: predict(spec, [1, 2]),
                 lambda: depth.predict(spec)):
        with pytest.raises(ValueError, match=field):
            call()


@pytest.mark.parametrize("changes, fields", [
    ({"sigma_q": 1e154}, "sigma_q"), ({"sigma_v": 1e154}, "sigma_v"),
    ({"sigma_q": 100.0, "attn_scale": "linear"}, "sigma_q"),
    ({"d_model": 10**9, "n_heads": 1}, "d_model"),
])
def test_numbers_float64_cannot_carry_are_refused_before_evaluation(changes, fields):
    spec = ModelSpec(**{**SMALL, **changes})
    derive(spec)  # the derivation carries exact numbers (sympy): it still answers
    with pytest.raises(ValueError, match=fields):
        predict(spec, [1, 2])


def test_a_zero_input_is_predicted_as_zero_and_refused_by_derive():
    spec = ModelSpec(**SMALL, sigma_embed=0.0, ln_eps=1e-5)
    out = predict(spec, [1, 8]).to_dict()
    for tap, per_m in out["predictions"].items():
        for m, values in per_m.items():
            assert all(math.isfinite(v) for v in values.values()), (tap, values)
            if "var" in values:
                assert values["var"] == 0, tap
    assert out["predictions"]["blocks.0.attn.hook_pattern"]["8"]["sum_sq"] == pytest.approx(1 / 8)
    with pytest.raises(ValueError, match="sigma_embed = 0"):
        derive(spec)


def test_leading_level_zero_input_has_no_nan():
    pred = depth.predict(ModelSpec(**SMALL, sigma_embed=0.0, ln_eps=1e-5), "leading")
    for tap, quantities in pred.values.items():
        for q, v in quantities.items():
            assert np.all(np.isfinite(v)), (tap, q)


def test_layernorm_moments_survive_a_tiny_input():
    # c = d eps / sigma^2 = 1.6e56: nu_1 -> E[X]/c = k/c and nu_2 -> E[X^2]/c^2 = k(k+2)/c^2
    d, eps, sigma = 16, 1e-5, 1e-30
    c, k = d * eps / sigma**2, d - 1
    nu1, nu2 = norm_moments_numeric(d, eps, sigma)
    assert nu1 == pytest.approx(k / c, rel=1e-9)
    assert nu2 == pytest.approx(k * (k + 2) / c**2, rel=1e-9)


def test_moments_of_huge_parameters_are_closed_forms_not_products():
    # Beta(1/2, b): E[B^2] = (1/2)(3/2) / ((1/2 + b)(3/2 + b)); chi^2_k: E[X^2] = k(k + 2)
    b = (10**9 - 2) // 2
    assert beta_moment(0.5, b, 2) == pytest.approx(0.75 / ((0.5 + b) * (1.5 + b)), rel=1e-12)
    assert int(chi2_moment(10**9, 2)) == 10**9 * (10**9 + 2)


def test_below_tau2_safe_the_quadrature_needs_no_estimate():
    # TAU2_SAFE skips the estimate: there the default rule agrees with a 4x finer one
    # to a tenth of the tolerance (relative), for the narrowest and the widest mixtures theory meets.
    pos = np.array([2, 64, 4096])
    for d_head, dim in ((1, 1e7), (2, 767), (8, 15)):
        coarse = row_expectations(pos, TAU2_SAFE, d_head, dim, n_mixture=8, n_mixture_sphere=8)
        fine = row_expectations(pos, TAU2_SAFE, d_head, dim, n_logit=256, y_step=0.01, n_mixture=8, n_mixture_sphere=8)
        assert np.max(np.abs(coarse.sum_sq / fine.sum_sq - 1)) < QUADRATURE_TOLERANCE / 10  # measured 1.2e-6 at d_head = 1


def test_the_logit_variance_check_follows_the_error_estimate():
    check_logit_variance(2.0, 0, 8.0, 15.0)  # estimate ~1e-12: accepted
    check_logit_variance(64.0, 0, 8.0, 15.0)  # bounded sphere: the rule still holds (~5e-5)
    with pytest.raises(ValueError, match=r"layer 3 .*error estimate there is"):
        check_logit_variance(64.0, 3, 64.0, 767.0)  # near-Gaussian logits: ~1e-2 > the tolerance
    with pytest.raises(ValueError, match="cannot resolve"):
        check_logit_variance(1e6, 0, 8.0, 15.0)
    assert QUADRATURE_TOLERANCE == 1e-4


def test_layer_one_logit_variance_is_the_derivations():
    spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=8, sigma_q=1.0, sigma_k=1.0)
    from theory.steps import LayerOne

    ctx = LayerOne.from_spec(spec)
    assert layer_one_logit_variance(spec) == pytest.approx(float(ctx.tau2_bar), rel=1e-12)


def test_memory_guard_names_seq_len_and_the_limit():
    spec = ModelSpec(**{**SMALL, "seq_len": 10**9})
    with pytest.raises(ValueError, match=r"seq_len = 1000000000: .*limit"):
        predict(spec, [1])
    # an explicit budget: 1 kB refuses even the smallest recursion; force skips the guard
    small = ModelSpec(**SMALL)
    with pytest.raises(ValueError, match="limit 1 kB"):
        depth.predict(small, memory_limit=1000.0)
    assert depth.predict(small, memory_limit=1000.0, force=True).var("hook_resid_post", 1).shape == (8,)


def test_answer_size_guard_for_a_billion_layers():
    spec = ModelSpec(**{**SMALL, "n_layers": 10**9})
    with pytest.raises(ValueError, match="n_layers = 1000000000: the answer"):
        predict(spec, [1, 2])
    # asking for two layers of it is small
    out = predict(spec, [1, 2], layers=[0, 1]).to_dict()
    assert len(out["predictions"]) == 30  # 15 taps a block, two blocks


def test_time_guard_is_measured_on_layer_one():
    lines = []
    spec = ModelSpec(**{**SMALL, "n_layers": 3})
    with pytest.raises(ValueError, match=r"n_layers = 3: the depth recursion would take"):
        depth.predict(spec, progress=lines.append, time_limit=1e-9)
    assert any("layer 0 took" in line for line in lines)
    assert depth.predict(spec, time_limit=1e-9, force=True).var("hook_resid_post", 2).shape == (8,)


def test_kernels_can_be_left_out():
    pred = depth.predict(ModelSpec(**SMALL), keep_kernels=False)
    assert not pred.kernels
    with pytest.raises(KeyError, match="kept no kernels"):
        pred.kernel("hook_resid_post", 0)


def test_cli_default_positions_exist_and_bad_ones_are_named(tmp_path, capsys):
    from theory.cli import main

    path = tmp_path / "s.json"
    ModelSpec(**{**SMALL, "seq_len": 6}).save(path)
    assert main(["predict", "--spec", str(path), "--layers", "0", "--json"]) == 0
    import json

    out = json.loads(capsys.readouterr().out)
    assert set(out["predictions"]["blocks.0.hook_resid_pre"]) == {"1", "2", "6"}
    assert main(["predict", "--spec", str(path), "--positions", "1,7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--positions" in err[0] and "7" in err[0]
