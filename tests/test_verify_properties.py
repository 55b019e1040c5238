"""Property-based tests: specs drawn from `verify.strategies`, simulated, and checked
where each formula claims to hold. Small budgets (d_model <= 32, T <= 8, a few hundred
networks) keep each example well under a second; `@settings` bounds the examples."""

import math

from hypothesis import given, settings
from hypothesis import strategies as st

import simulate
import verify
from verify.checks import logit_variance
from verify.presets import LAYER1_SPEC
from theory import ModelSpec
from verify.checks.mutants import variance_factor
from verify.strategies import GPT2_INIT_LOGITS, MODERATE_LOGITS, SMALL_LOGITS, attention_flops, specs

# A stricter family-wise alpha than the main job's: a derandomised suite must not flake
# on another machine's rounding.
ALPHA = 1e-3
SMALL = dict(max_d_model=32, max_seq_len=8)


def _simulate(spec: ModelSpec, samples: int, seed: int):
    positions = verify.positions_for(int(spec.seq_len))
    table = verify.theory_table(spec, positions)
    sim = simulate.run(spec, taps=table.taps, samples=samples, seed=seed, positions=positions, device="cpu",
                       progress=False, threads=1)
    return table, sim


@settings(max_examples=30)
@given(specs(max_d_model=64, max_seq_len=32, max_flops=400_000, logit_variance=(0.05, 0.8)))
def test_specs_are_valid_and_in_budget(spec):
    assert isinstance(spec, ModelSpec) and spec.n_layers == 1 and spec.attn_only and spec.vocab_size is None
    assert 8 <= spec.d_model <= 64 and spec.d_model % spec.n_heads == 0 and 2 <= spec.seq_len <= 32
    assert attention_flops(spec) <= 400_000 or spec.seq_len == 2
    assert spec.ln_eps in (0.0, 1e-5) and spec.attn_scale in ("sqrt", "linear")


@settings(max_examples=12)
@given(specs(**SMALL, logit_variance=MODERATE_LOGITS) | specs(**SMALL, logit_variance=SMALL_LOGITS))
def test_specs_hit_their_logit_variance_regime(spec):
    # The mean logit variance with the exact nu_1 (theory's LayerNorm variance) lies in the
    # union of the two regimes, up to the strategy's 1% estimate of nu_1.
    tau2 = logit_variance(spec)
    assert SMALL_LOGITS[0] * 0.98 <= tau2 <= MODERATE_LOGITS[1] * 1.02


@settings(max_examples=6)
@given(specs(**SMALL, logit_variance=MODERATE_LOGITS, ln_eps=(0.0,)), st.integers(0, 2**16))
def test_exact_results_hold_exactly(spec, seed):
    # ln_eps = 0: every best-level result claims to be exact, and every check passes.
    table, sim = _simulate(spec, 300, seed)
    assert all(record.level.value == "exact" for record in table.values())
    checks = verify.compare(table, sim, alpha=ALPHA)
    assert checks.passed, "\n".join(c.describe() for c in checks.failed)


@settings(max_examples=6)
@given(specs(**SMALL, logit_variance=MODERATE_LOGITS, ln_eps=(1e-5,)), st.integers(0, 2**16))
def test_approximate_results_hold_within_their_error(spec, seed):
    table, sim = _simulate(spec, 300, seed)
    checks = verify.compare(table, sim, alpha=ALPHA)
    assert checks.passed, "\n".join(c.describe() for c in checks.failed)


@settings(max_examples=5)
@given(specs(**SMALL, logit_variance=SMALL_LOGITS), st.integers(0, 2**16))
def test_gross_formula_errors_are_caught(spec, seed):
    # A 25% error in every variance, or the output projection over one head, never passes.
    table, sim = _simulate(spec, 300, seed)
    assert not verify.compare(variance_factor(1.25)(table), sim, alpha=ALPHA).passed
    if spec.n_heads > 1:
        assert not verify.compare(verify.MUTANTS["factor H dropped"](table), sim, alpha=ALPHA).passed


def test_gpt2_regime_contains_gpt2():
    spec = LAYER1_SPEC  # GPT-2 small, one attention layer
    tau2 = logit_variance(spec)
    assert GPT2_INIT_LOGITS[0] <= tau2 <= GPT2_INIT_LOGITS[1]
    assert math.isclose(tau2, 0.0898, rel_tol=1e-3)
