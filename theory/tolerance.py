"""The relative error theory declares for each result, as a number verify can hold it to.

* exact results: 0 (only the Monte Carlo error is allowed);
* an approximate result with a derived error order: the order evaluated for the spec,
  taken at face value (constant 1), never below `APPROX_FLOOR` (quadrature accuracy,
  float32 sums). Layer 1's best level with eps > 0 states ``O(tau_bar^2 delta^2)``
  (`theory.quantities.mean_logit_variance`, `theory.quantities.radius_spread`): the
  LayerNorm radii replaced by their r.m.s. inside the softmax. A generous constant would
  make the check toothless where the order is not small (``tau_bar^2 delta^2 = 0.04``
  with a tiny sigma_embed: a safety factor of 10 would accept a theory 40% off);
* an approximate result without a derived order (the paper's leading order, an
  asymptotic step): `DEFAULT_TOLERANCE`, a default, not an estimate;
* the depth recursion from layer 2 on: `DEPTH_TOLERANCE`, declared from measurements
  (docs/theory.md, "Through depth": at d = 64-256, up to 6 layers, residual taps within
  1.1%, attention outputs within 2.5%, with margin). Not derived: the issue on the hard
  regimes replaces it by an estimate of what the recursion neglects.
"""

from __future__ import annotations

APPROX_SAFETY = 1.0
APPROX_FLOOR = 1e-4
DEFAULT_TOLERANCE = 0.05
DEPTH_TOLERANCE = {"residual": 0.02, "attention": 0.03}

# The taps of the depth recursion held to the attention tolerance.
ATTENTION_PATH = ("attn.hook_pattern", "attn.hook_z", "hook_attn_out")


def from_order(order: float) -> float:
    """The tolerance of an approximate result whose stated relative error order is ``order``."""
    return max(APPROX_FLOOR, APPROX_SAFETY * float(order))


def depth_tolerance(suffix: str) -> float:
    """The declared tolerance of an approximate tap of the depth recursion."""
    return DEPTH_TOLERANCE["attention" if suffix in ATTENTION_PATH else "residual"]


__all__ = ["APPROX_SAFETY", "APPROX_FLOOR", "DEFAULT_TOLERANCE", "DEPTH_TOLERANCE", "ATTENTION_PATH",
           "from_order", "depth_tolerance"]
