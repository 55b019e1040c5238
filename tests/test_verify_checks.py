"""Check semantics: Holm, judging, a right formula passes and wrong ones fail (fixed seeds),
and the calibration's bookkeeping."""

import math

import numpy as np
import pytest

import dataclasses

import simulate
import verify
from theory import Level, ModelSpec
from verify.checks import comparisons, holm, judge, logit_variance, relative_tolerance
from verify.checks.mutants import attention_residual
from verify.checks.statistics import binomial_range, clopper_pearson, critical_z, two_sided_p
from verify import Comparison

# Logit variance ~0.4 at d = 64: the softmax and the weight-value coupling matter, and
# the paper's leading order is measurably wrong at m = 32 (tests/test_theory_mc.py).
SPEC = ModelSpec(d_model=64, n_heads=4, n_layers=1, seq_len=32, attn_only=True, sigma_q=0.05, sigma_k=0.2,
                 sigma_v=0.5, sigma_o=0.1, ln_eps=1e-5)
EXACT_SPEC = SPEC.replace(ln_eps=0.0, sigma_embed=1.0)
POSITIONS = [1, 2, 4, 8, 16, 32]


@pytest.fixture(scope="module")
def case():
    table = verify.theory_table(SPEC, POSITIONS)
    sim = simulate.run(SPEC, taps=table.taps, samples=800, seed=11, positions=POSITIONS, device="cpu",
                       progress=False, threads=1)
    return table, sim


@pytest.fixture(scope="module")
def exact_case():
    table = verify.theory_table(EXACT_SPEC, POSITIONS)
    sim = simulate.run(EXACT_SPEC, taps=table.taps, samples=800, seed=12, positions=POSITIONS, device="cpu",
                       progress=False, threads=1)
    return table, sim


# ------------------------------------------------------------------------------ Holm
def _holm_reference(p, alpha):
    """Textbook Holm: adjusted p_(i) = max_{j<=i} min(1, (K - j) p_(j)); reject if <= alpha."""
    p = np.asarray(p)
    order = np.argsort(p, kind="stable")
    adjusted = np.maximum.accumulate(np.minimum(1.0, (len(p) - np.arange(len(p))) * p[order]))
    out = np.zeros(len(p), bool)
    out[order] = adjusted <= alpha
    return out


@pytest.mark.parametrize("seed", range(20))
def test_holm_matches_adjusted_p_values(seed):
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.uniform(0, 1, 30), rng.uniform(0, 1e-3, rng.integers(0, 6))])
    rng.shuffle(p)
    rejected, thresholds = holm(p, 0.05)
    assert (rejected == _holm_reference(p, 0.05)).all()
    assert np.isclose(np.sort(thresholds), np.sort(0.05 / np.arange(len(p), 0, -1))).all()


def test_holm_steps_down_and_stops():
    rejected, _ = holm([0.001, 0.011, 0.02, 0.9], 0.05)  # thresholds 0.0125, 0.0167, 0.025, 0.05
    assert rejected.tolist() == [True, True, True, False]
    # 0.02 > 0.0167 stops the procedure: 0.021 is not rejected although 0.021 < 0.025.
    rejected, _ = holm([0.001, 0.02, 0.021, 0.9], 0.05)
    assert rejected.tolist() == [True, False, False, False]
    assert holm([], 0.05)[0].size == 0


def test_holm_family_wise_error_under_the_null():
    # 4000 families of 40 independent true nulls: the rate of any rejection is <= alpha.
    rng = np.random.default_rng(0)
    z = rng.standard_normal((4000, 40))
    hits = sum(holm([two_sided_p(v) for v in row], 0.05)[0].any() for row in z)
    lo, hi = binomial_range(4000, 0.05)
    assert hits <= hi


def test_few_networks_use_student_t():
    from scipy import stats

    assert two_sided_p(2.0, units=3) == pytest.approx(2 * stats.t.sf(2.0, 2))
    assert two_sided_p(2.0, units=3) > two_sided_p(2.0, units=1000) == pytest.approx(two_sided_p(2.0))
    few = judge([_row(5.0, units=4)], alpha=0.01)[0]  # t with 3 df: 5 is not extreme
    assert few.passed and few.critical_z > 5
    assert not judge([_row(5.0, units=1000)], alpha=0.01)[0].passed


def test_normal_helpers():
    assert math.isclose(two_sided_p(1.959963984540054), 0.05, rel_tol=1e-9)
    assert math.isclose(critical_z(0.05), 1.959963984540054, rel_tol=1e-9)
    assert math.isclose(critical_z(0.01, 10), 3.290526731491926, rel_tol=1e-9)
    assert clopper_pearson(0, 10)[0] == 0.0 and clopper_pearson(10, 10)[1] == 1.0


# ------------------------------------------------------------------------------ judge
def _row(z, level="exact", theory=1.0, se=0.01, tap="blocks.0.attn.hook_q", scale=math.nan, units=0):
    return Comparison(tap=tap, position=4, quantity="var", level=level, theory=theory, sim=theory - z * se, se=se,
                      z=z, assumption="an assumption", scale=scale, units=units)


def test_judge_exact_by_z_score():
    checks = judge([_row(0.3), _row(-1.0), _row(9.0)], alpha=0.01)
    assert [c.passed for c in checks] == [True, True, False]
    failed = checks.failed[0]
    assert failed.assumption == "an assumption" and failed.method == "holm" and failed.rel_tol == 0.0
    assert failed.comparison.z == failed.z == 9.0 and not failed.verdict.passed
    assert failed.verdict.threshold == pytest.approx(0.01 / 3) and failed.p_value < failed.verdict.threshold
    assert math.isclose(failed.tolerance, failed.critical_z * failed.se)
    assert failed.critical_z == pytest.approx(critical_z(0.01, 3))  # first Holm step = Bonferroni
    assert not checks.passed and not checks.exact_passed


def test_judge_approximate_allows_the_declared_error():
    # 30 SE off but within 1% of the theory: an approximate result with rel_tol 1% passes.
    row = _row(30.0, level="approximate", theory=1.0, se=1e-4)
    assert judge([row], rel_tols={row.tap: 0.01})[0].passed
    assert not judge([row], rel_tols={row.tap: 0.001})[0].passed
    assert not judge([_row(30.0, theory=1.0, se=1e-4)], rel_tols={row.tap: 0.01})[0].passed  # exact: no slack


def test_judge_deterministic_statistics():
    row = Comparison(tap="blocks.0.attn.hook_pattern", position=1, quantity="sum_sq", level="exact", theory=1.0,
                     sim=1.0 + 1e-7, se=0.0, z=math.nan, scale=1.0)
    check = judge([row])[0]
    assert check.passed and check.method == "deterministic" and math.isnan(check.z)
    assert check.comparison is row and math.isnan(check.verdict.p_value)
    assert not judge([dataclasses.replace(row, sim=1.01)])[0].passed


def test_judge_rejects_bad_alpha():
    with pytest.raises(ValueError, match="alpha"):
        judge([], alpha=1.5)


# ------------------------------------------------------------------------------ right and wrong formulas
def test_right_formula_passes(case, exact_case):
    for table, sim in (case, exact_case):
        checks = verify.compare(table, sim)
        assert checks.passed, "\n".join(c.describe() for c in checks.failed)
        taps = {c.tap for c in checks}
        assert taps == set(table.taps)
        assert {c.quantity for c in checks.for_tap("blocks.0.attn.hook_pattern")} == {"sum_sq"}


def test_levels_follow_the_theory(case, exact_case):
    by_tap = verify.compare(*case).by_tap()
    assert by_tap["blocks.0.attn.hook_z"]["level"] == "approximate"  # eps > 0
    assert by_tap["blocks.0.attn.hook_q"]["level"] == "exact"
    assert all(row["level"] == "exact" for row in verify.compare(*exact_case).by_tap().values())  # eps = 0


@pytest.mark.parametrize("mutant", ["variance x1.02", "factor H dropped", "d in place of d-1"])
def test_mutants_fail(case, exact_case, mutant):
    for table, sim in (case, exact_case):
        checks = verify.compare(verify.MUTANTS[mutant](table), sim)
        assert not checks.passed, mutant


def test_subtle_mutant_moves_the_attention_checks(case):
    # hook_z x1.02 alone is the hardest mutant: it moves only z, W_o z and the residual.
    table, sim = case
    mutant = verify.MUTANTS["hook_z variance x1.02"](table)
    resid = attention_residual(SPEC)  # the block's output: hook_resid_post of an attention-only block
    changed = {t for t in table.taps if not all(np.array_equal(table[t].values[q], mutant[t].values[q])
                                                 for q in table[t].values)}
    assert changed == {"blocks.0.attn.hook_z", "blocks.0.hook_attn_out", resid}
    assert mutant.label == "hook_z variance x1.02" and mutant["blocks.0.attn.hook_z"].level == table["blocks.0.attn.hook_z"].level
    assert mutant.value("blocks.0.attn.hook_z", "var", 8) == pytest.approx(1.02 * table.value("blocks.0.attn.hook_z", "var", 8))
    x = SPEC.sigma_embed**2
    assert mutant.value(resid, "var", 8) - x == pytest.approx(1.02 * (table.value(resid, "var", 8) - x))


def test_leading_order_fails_at_long_range(case):
    table, sim = case
    leading = verify.theory_table(SPEC, POSITIONS, level="leading")
    rows = {(r.tap, r.position, r.quantity): r for r in comparisons(leading, sim)}
    z = rows[("blocks.0.attn.hook_z", 32, "var")]
    assert z.z < -10 and z.rel_error < -0.2  # the paper's variance is far too small at m = 32
    # Judged as if it were exact, the leading order fails.
    records = tuple(dataclasses.replace(r, level=Level.EXACT, tolerance=0.0) for r in leading.prediction.records)
    exact_leading = verify.TheoryTable(dataclasses.replace(leading.prediction, records=records), "leading as exact")
    assert not verify.compare(exact_leading, sim).passed


def test_comparisons_skip_unrecorded_taps_and_positions(case):
    table, _ = case
    sim = simulate.run(SPEC, taps=["blocks.0.attn.hook_q"], samples=50, seed=0, positions=[1, 8], device="cpu",
                       progress=False, threads=1)
    rows = comparisons(table, sim)
    assert {r.tap for r in rows} == {"blocks.0.attn.hook_q"}
    assert {r.position for r in rows} == {1, 8}


def test_relative_tolerance_follows_the_stated_order(case, exact_case):
    assert relative_tolerance(exact_case[0], "blocks.0.attn.hook_z") == 0.0
    assert relative_tolerance(case[0], "blocks.0.attn.hook_q") == 0.0
    assert relative_tolerance(case[0], "blocks.0.attn.hook_z") == pytest.approx(1e-4)  # the floor
    big = SPEC.replace(n_heads=2, sigma_embed=0.002, sigma_q=0.3, sigma_k=0.3)  # c = d eps / sigma_e^2 = 160
    t = verify.theory_table(big, [1, 4])
    nu1 = t.value("blocks.0.ln1.hook_normalized", "var", 1)
    assert logit_variance(big) == pytest.approx(0.3**4 * (64 * nu1) ** 2, rel=1e-12)  # s^2 d_head = 1
    delta = 160 / (63 + 160) * math.sqrt(2 / 63)
    expected = logit_variance(big) * delta**2
    assert 0.03 < expected < 0.06
    # the radii are averaged jointly there (issue 15): what is left is the key n = m's shared radius
    # (worst at m = 2) plus the compressed mixture rule
    assert relative_tolerance(t, "blocks.0.attn.hook_z") == pytest.approx(expected / 2 + 3e-4)
    assert t["blocks.0.attn.hook_z"].tolerance == relative_tolerance(t, "blocks.0.attn.hook_z")  # what theory declares


# ------------------------------------------------------------------------------ calibration
def test_calibration_bookkeeping():
    cal = verify.calibrate(runs=12, samples=200, seed=3)
    d = cal.to_dict()
    assert d["false_alarm"]["runs"] == 12 and 0 <= d["false_alarm"]["rejected"] <= 12
    assert d["zscores"]["n"] > 12 * 40
    assert abs(d["zscores"]["mean"]) < 0.2 and 0.85 < d["zscores"]["sd"] < 1.15
    assert set(d["power"]) == set(verify.MUTANTS)
    assert d["power"]["factor H dropped"]["detected"] == 12
    assert d["family_wise"]["rate"] <= 2 / 12
    assert cal.ok


def test_binomial_range():
    lo, hi = binomial_range(300, 0.05)
    assert lo < 15 < hi and (lo, hi) == (6, 25)
