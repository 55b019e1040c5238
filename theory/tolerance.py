"""The relative error theory declares for each result, as a number verify can hold it to.

* exact results: 0 (only the Monte Carlo error is allowed);
* an approximate result with a derived error order: the order evaluated for the spec,
  taken at face value (constant 1), never below `APPROX_FLOOR` (quadrature accuracy,
  float32 sums). The first layer's best level with eps > 0 states ``O(tau_bar^2 delta^2)``
  (`theory.quantities.mean_logit_variance`, `theory.quantities.radius_spread`): the
  LayerNorm radii replaced by their r.m.s. inside the softmax. A generous constant would
  make the check toothless where the order is not small (``tau_bar^2 delta^2 = 0.04``
  with a tiny sigma_embed: a safety factor of 10 would accept a theory 40% off);
* an approximate result without a derived order (the paper's leading order, an
  asymptotic step): `DEFAULT_TOLERANCE`, a default, not an estimate;
* the depth recursion (`depth_tolerance`): an estimate of what it neglects, evaluated for
  the spec, with constant 1 as above: the Gaussian-channel closure, whose per-block error
  is of relative order ``1/d`` (the per-network fluctuation of the kernel through the
  nonlinear maps, second order in its ``O(1/sqrt(d))`` size), summed over the blocks below
  the tap (a residual write counts ``1/writes-per-block``); plus, for the corrections
  the recursion computes to second order (the per-network fluctuation of the keys'
  spread, the correlation of rows sharing keys: `theory.depth_maps`), the size of the
  largest relative correction made so far, taken as the size of the next order. The
  leading level of the recursion has no estimate: `DEFAULT_TOLERANCE`, stated as a default.
"""

from __future__ import annotations

APPROX_SAFETY = 1.0
APPROX_FLOOR = 1e-4
DEFAULT_TOLERANCE = 0.05

# The taps of the depth recursion whose rows the softmax corrections act on.
ATTENTION_PATH = ("attn.hook_pattern", "attn.hook_z", "hook_attn_out")


def from_order(order: float) -> float:
    """The tolerance of an approximate result whose stated relative error order is ``order``."""
    return max(APPROX_FLOOR, APPROX_SAFETY * float(order))


def depth_tolerance(blocks_below: float, d: int, correction: float = 0.0) -> tuple[float, str]:
    """``(tolerance, source)`` of an approximate tap of the depth recursion.

    ``blocks_below``: closure steps before the tap, in blocks (each contributing ``1/d``);
    ``correction``: the largest relative second-order correction the recursion has made
    on the way (its next order taken as large).
    """
    closure = float(blocks_below) / float(d)
    value = from_order(closure + float(correction))
    source = (f"estimate: closure {blocks_below:g}/d = {closure:.3g} + next order of the softmax "
              f"corrections {float(correction):.3g} (floor {APPROX_FLOOR:g})")
    return value, source


__all__ = ["APPROX_SAFETY", "APPROX_FLOOR", "DEFAULT_TOLERANCE", "ATTENTION_PATH", "from_order", "depth_tolerance"]
