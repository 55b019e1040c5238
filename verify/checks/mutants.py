"""Formula mutants: plausible slips in a derivation, to measure the power of the checks.

Each mutant maps a correct `TheoryTable` to a wrong one: the same records (levels,
errors, tolerances) carrying other numbers (`TheoryTable.with_values`). A verifier worth
trusting rejects them at the sample size it is run with; `verify.calibrate` measures how
often. The residual after the first layer's attention (``hook_resid_mid`` of a full block,
``hook_resid_post`` of an attention-only one) is read from the block declaration.

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

from theory.block import block

from .theory import TheoryTable

Mutant = Callable[[TheoryTable], TheoryTable]

ATTN_OUT = "blocks.0.hook_attn_out"
HOOK_Z = "blocks.0.attn.hook_z"
SCORES = "blocks.0.attn.hook_attn_scores"
# Variances that carry one factor Var(e_i) (the logits: two).
_ONE_FACTOR = ("blocks.0.ln1.hook_normalized", "blocks.0.attn.hook_q", "blocks.0.attn.hook_k",
               "blocks.0.attn.hook_v", HOOK_Z, ATTN_OUT)


def attention_residual(spec) -> str:
    """The residual write after the first layer's attention, by the block declaration."""
    attention_branch = block(spec).branches()[0]
    return f"blocks.0.{attention_branch[-1].tap_suffixes[-1]}"


def _var(table: TheoryTable, tap: str) -> np.ndarray | None:
    return table[tap].values.get("var") if tap in table else None


def _scaled(table: TheoryTable, taps, factor: float) -> dict[str, dict[str, np.ndarray]]:
    """``var`` of ``taps`` times ``factor``, and the residual's attention part with it."""
    changes = {tap: {"var": _var(table, tap) * factor} for tap in taps if _var(table, tap) is not None}
    resid = attention_residual(table.spec)
    if _var(table, resid) is not None:
        x = float(table.spec.sigma_embed) ** 2  # the embedding's share of the residual
        changes[resid] = {"var": x + (_var(table, resid) - x) * factor}
    return changes


def variance_factor(factor: float = 1.02) -> Mutant:
    """Every ``var`` multiplied by ``factor``."""

    def mutate(table: TheoryTable) -> TheoryTable:
        return table.with_values(f"variance x{factor:g}", {
            tap: {"var": r.values["var"] * factor} for tap, r in table.items() if "var" in r.values})

    return mutate


def attention_variance_factor(factor: float = 1.02) -> Mutant:
    """``Var(z)`` multiplied by ``factor`` (a small error in the softmax or coupling
    terms), carried into ``Var(W_o z)`` and the residual's attention part only."""

    def mutate(table: TheoryTable) -> TheoryTable:
        return table.with_values(f"hook_z variance x{factor:g}", _scaled(table, (HOOK_Z, ATTN_OUT), factor))

    return mutate


def drop_heads(table: TheoryTable) -> TheoryTable:
    """``Var(W_o z)`` over one head's ``d_head`` coordinates: divided by ``H``."""
    return table.with_values("factor H dropped", _scaled(table, (ATTN_OUT,), 1.0 / int(table.spec.n_heads)))


def d_for_d_minus_one(table: TheoryTable) -> TheoryTable:
    """The LayerNorm coordinate variance ``d/(d-1)`` times too large, carried downstream."""
    d = int(table.spec.d_model)
    f = d / (d - 1)
    changes = _scaled(table, _ONE_FACTOR, f)
    if _var(table, SCORES) is not None:
        changes[SCORES] = {"var": _var(table, SCORES) * f * f}
    return table.with_values("d in place of d-1", changes)


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


__all__ = ["Mutant", "MUTANTS", "variance_factor", "attention_variance_factor", "drop_heads", "d_for_d_minus_one",
           "expected_shift", "attention_residual"]
