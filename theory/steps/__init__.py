"""The catalogue of first-layer steps: one function per tap, two levels each, by sublayer kind.

The first branch of the declared block (`theory.block`: the entry, ``ln1``, the
attention, its residual write) is derived in closed form at layer 0 (the first layer); every other tap
comes from the depth recursion (`theory.depth`). Each kind's steps live in the module of
that kind, under the kind's name:

===========  ==========================================  =====================================
kind         steps (``theory/steps/<kind>.py``)           taps
===========  ==========================================  =====================================
(entry)      `residual.embedding`                         ``hook_resid_pre``
layernorm    `layernorm.layernorm`                        ``ln1.hook_normalized``
attention    `attention.projection`, `attention.scores`,  ``attn.hook_q|k|v``, ``attn.hook_attn_scores``,
             `attention.pattern`, `attention.z`,          ``attn.hook_pattern``, ``attn.hook_z``,
             `attention.attn_out`                         ``hook_attn_out``
residual     `residual.residual`                          ``hook_resid_mid`` (``hook_resid_post``
                                                          in an attention-only block)
===========  ==========================================  =====================================

A step is ``step(ctx, level, tap) -> StepResult`` with ``ctx`` the `LayerOne` context of
the spec and ``level`` one of `LEVELS`.

>>> from theory import ModelSpec
>>> [tap for tap, _ in layer_one_steps(ModelSpec(attn_only=True))][-1]
'hook_resid_post'
"""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Callable

from .._result import StepResult
from ..block import ENTRY_TAP, FULL_BLOCK, Sublayer, block
from ..taps import ATTENTION_TAPS
from . import attention, layernorm, modern, residual
from .attention import large_m_limit, mixed_series
from ._context import LEVELS, NU1, NU2, PLACEHOLDERS, S2, SERIES_ORDER, TAU_BAR2, LayerOne, Xi

Step = Callable[..., StepResult]

# every step's prose, from the module of its kind
_TEXT = {**residual.TEXT, **layernorm.TEXT, **attention.TEXT}


def _with_text(step: Step, text) -> Step:
    """The step, its result carrying the step's prose (``TEXT`` of its module)."""
    def with_text(ctx: LayerOne, level: str, tap: str) -> StepResult:
        return replace(step(ctx, level, tap=tap), text=text)
    with_text.__name__, with_text.__doc__ = step.__name__, step.__doc__
    return with_text


def steps_of(sub: Sublayer) -> dict[str, Step]:
    """The first-layer steps a declared sublayer contributes, by the tap suffix each produces."""
    return {suffix: _with_text(step, _TEXT[suffix]) for suffix, step in _bare_steps_of(sub).items()}


def _bare_steps_of(sub: Sublayer) -> dict[str, Step]:
    if sub.kind == "layernorm":
        return {sub.taps[0].suffix: layernorm.layernorm}
    if sub.kind == "rmsnorm":  # theory.steps.modern (issue 16)
        return {sub.taps[0].suffix: modern.rmsnorm}
    if sub.kind == "attention":
        own = {"attn.hook_q": attention.projection, "attn.hook_k": attention.projection,
               "attn.hook_v": attention.projection, "attn.hook_attn_scores": attention.scores,
               "attn.hook_pattern": attention.pattern, "attn.hook_z": attention.z,
               "hook_attn_out": attention.attn_out}
        return {t: own[t] for t in sub.tap_suffixes}
    if sub.kind == "residual":
        return {sub.taps[0].suffix: residual.residual}
    raise ValueError(f"sublayer kind {sub.kind!r} has no first-layer derivation (the depth recursion covers it)")


def layer_one_steps(spec) -> list[tuple[str, Step]]:
    """``(tap suffix, step)`` for the derived taps of ``spec``: the entry and the first branch."""
    first_branch = block(spec, 0).branches()[0]
    out: list[tuple[str, Step]] = [(ENTRY_TAP, _with_text(residual.embedding, _TEXT[ENTRY_TAP]))]
    variant = modern.uses_modern_steps(spec)  # RMSNorm, QK-norm, RoPE, ALiBi, temperature: theory.steps.modern
    for sub in first_branch:
        if variant and sub.kind in ("attention", "rmsnorm", "residual"):
            out += [(t, _with_text(modern.STEPS.get(t, modern.rmsnorm), modern.TEXT[t])) for t in sub.tap_suffixes]  # noqa: E501
        else:
            out += list(steps_of(sub).items())
    return out


def _bind(step: Step, suffix: str) -> Callable[[LayerOne, str], StepResult]:
    return partial(step, tap=f"blocks.0.{suffix}")


# suffix -> step(ctx, level) for the block with an MLP (its attention branch)
STEPS: dict[str, Callable[[LayerOne, str], StepResult]] = {
    ENTRY_TAP: _bind(_with_text(residual.embedding, _TEXT[ENTRY_TAP]), ENTRY_TAP)}
for _sub in FULL_BLOCK.branches()[0]:
    STEPS.update({_suffix: _bind(_step, _suffix) for _suffix, _step in steps_of(_sub).items()})
assert tuple(STEPS) == ATTENTION_TAPS, "every first-layer tap has exactly one theory step"

__all__ = ["LEVELS", "LayerOne", "STEPS", "steps_of", "layer_one_steps", "NU1", "NU2", "S2", "Xi", "TAU_BAR2",
           "PLACEHOLDERS", "SERIES_ORDER", "mixed_series", "large_m_limit", "attention", "layernorm", "residual"]
