"""Formula mutants: plausible slips in a derivation, to measure the power of the checks.

Each mutant maps a correct `TheoryTable` to a wrong one. A verifier worth trusting
rejects them at the sample size it is run with; `verify.calibrate` measures how often.

- ``variance x1.02``: every variance 2% too large (a small, uniform error).
- ``hook_z variance x1.02``: only the attention output's variance 2% too large (a slip
  in the softmax or coupling terms), carried into ``W_o z`` and the residual: the
  quantity the paper is about, and the hardest of these to detect.
- ``factor H dropped``: the output projection summed over the ``d_head`` coordinates of
  one head instead of all ``H d_head``: ``Var(W_o z) = sigma_o^2 d_head Var(z)`` (should
  be ``sigma_o^2 d Var(z)``); the residual inherits it.
- ``d in place of d-1``: the LayerNorm coordinate law written ``e_i^2/d ~ Beta(1/2,
  (d-2)/2)`` instead of ``e_i^2/(d-1)``, so ``Var(e_i)`` is ``d/(d-1)`` times too large,
  and every variance built on it (q, k, v, z, W_o z, the residual's attention part; the
  logits twice) with it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ._theory import TheoryTable

Mutant = Callable[[TheoryTable], TheoryTable]

RESID_PRE = "blocks.0.hook_resid_pre"
LN1 = "blocks.0.ln1.hook_normalized"
ATTN_OUT = "blocks.0.hook_attn_out"
RESID_MID = "blocks.0.hook_resid_mid"


def _embedding_var(table: TheoryTable) -> float:
    return float(table.spec.sigma_embed) ** 2


def variance_factor(factor: float = 1.02) -> Mutant:
    """Every ``var`` multiplied by ``factor``."""

    def mutate(table: TheoryTable) -> TheoryTable:
        values = table.copy_values()
        for quantities in values.values():
            if "var" in quantities:
                quantities["var"] = quantities["var"] * factor
        return table.mutated(f"variance x{factor:g}", values)

    return mutate


def drop_heads(table: TheoryTable) -> TheoryTable:
    """``Var(W_o z)`` over one head's ``d_head`` coordinates: divided by ``H``."""
    h = int(table.spec.n_heads)
    values = table.copy_values()
    if ATTN_OUT in values:
        values[ATTN_OUT]["var"] = values[ATTN_OUT]["var"] / h
    if RESID_MID in values:
        x = _embedding_var(table)
        values[RESID_MID]["var"] = x + (values[RESID_MID]["var"] - x) / h
    return table.mutated("factor H dropped", values)


# Variances that carry one factor Var(e_i) (two for the logits).
_ONE_FACTOR = (
    LN1,
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_z",
    ATTN_OUT,
)


def d_for_d_minus_one(table: TheoryTable) -> TheoryTable:
    """The LayerNorm coordinate variance ``d/(d-1)`` times too large, carried downstream."""
    d = int(table.spec.d_model)
    f = d / (d - 1)
    values = table.copy_values()
    for tap in _ONE_FACTOR:
        if tap in values and "var" in values[tap]:
            values[tap]["var"] = values[tap]["var"] * f
    scores = "blocks.0.attn.hook_attn_scores"
    if scores in values:
        values[scores]["var"] = values[scores]["var"] * f * f
    if RESID_MID in values:
        x = _embedding_var(table)
        values[RESID_MID]["var"] = x + (values[RESID_MID]["var"] - x) * f
    return table.mutated("d in place of d-1", values)


def attention_variance_factor(factor: float = 1.02) -> Mutant:
    """``Var(z)`` multiplied by ``factor`` (a small error in the softmax or coupling
    terms), carried into ``Var(W_o z)`` and the residual's attention part only."""

    def mutate(table: TheoryTable) -> TheoryTable:
        values = table.copy_values()
        for tap in ("blocks.0.attn.hook_z", ATTN_OUT):
            if tap in values and "var" in values[tap]:
                values[tap]["var"] = values[tap]["var"] * factor
        if RESID_MID in values:
            x = _embedding_var(table)
            values[RESID_MID]["var"] = x + (values[RESID_MID]["var"] - x) * factor
        return table.mutated(f"hook_z variance x{factor:g}", values)

    return mutate


MUTANTS: dict[str, Mutant] = {
    "variance x1.02": variance_factor(1.02),
    "hook_z variance x1.02": attention_variance_factor(1.02),
    "factor H dropped": drop_heads,
    "d in place of d-1": d_for_d_minus_one,
}


def expected_shift(table: TheoryTable, mutant_table: TheoryTable, checks) -> float:
    """How many standard errors the mutant moves the most sensitive check, beyond the
    check's declared relative error: ``max (|theory_mutant - theory| - rel_tol |theory|)
    / se``. A mutant is reliably detected when this clearly exceeds Holm's first critical
    value (about 4 for a few hundred checks at alpha = 0.01)."""
    best = 0.0
    for c in checks:
        if c.method != "holm" or not np.isfinite(c.se) or c.se <= 0:
            continue
        theory = table.value(c.tap, c.quantity, c.position)
        shift = abs(mutant_table.value(c.tap, c.quantity, c.position) - theory) - c.rel_tol * abs(theory)
        best = max(best, shift / c.se)
    return best
