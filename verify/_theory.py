"""The theory side of a check: numbers per tap, quantity and position, at one level.

A `TheoryTable` is what verify holds the simulation against: for every tap of every
layer the quantities it can check (``mean`` and ``var`` of one coordinate; ``sum_sq`` =
E[sum_n a_mn^2] for the attention pattern), evaluated at the query positions, together
with the step's level (exact / asymptotic / approximate), its stated error, its
assumptions and, where theory declares one, its relative error (``tolerances``).

Two sources: the layer-1 attention taps (``blocks.0.hook_resid_pre`` ..
``blocks.0.hook_resid_mid``) come from the symbolic derivation `theory.derive`; every
other tap (the MLP of layer 1, all taps of deeper layers) from the depth recursion
`theory.depth.predict`, with the tolerances it declares. Formula mutants (see
`verify._mutants`) are tables with changed values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping

import numpy as np

from theory import Derivation, Level, ModelSpec, derive

# Which statistic of a tap each check compares, and the name of its standard error in
# `simulate.TapStats`. The pattern's mean is 1/m by construction (rows sum to one) and
# its pooled var is sum_sq/m - 1/m^2, so sum_sq is the one informative quantity there.
QUANTITIES: dict[str, tuple[str, ...]] = {"attn.hook_pattern": ("sum_sq",)}
DEFAULT_QUANTITIES = ("mean", "var")
STANDARD_ERRORS = {"mean": "mean_se", "var": "var_se", "sum_sq": "sum_sq_se"}


def quantities_of(tap: str) -> tuple[str, ...]:
    """The quantities verify checks for a full tap name (``blocks.0.attn.hook_z``)."""
    suffix = tap.split(".", 2)[-1]
    return QUANTITIES.get(suffix, DEFAULT_QUANTITIES)


@dataclass(frozen=True)
class TheoryTable:
    """Theory numbers at one level for every tap of every layer, at the given positions.

    ``values[tap][quantity]`` is an array over ``positions`` (1-based query positions);
    ``levels[tap]`` the step's `theory.Level`; ``errors[tap]`` its stated error (or None);
    ``assumptions[tap]`` the assumptions the step rests on; ``tolerances[tap]`` the
    relative error theory declares for the tap (present for the taps of
    `theory.depth`; `relative_tolerance` reads it); ``sources[tap]`` ``"derive"`` or
    ``"depth"``. ``label`` names the table in reports (``"best"``, ``"leading"`` or a
    mutant's name).
    """

    spec: ModelSpec
    label: str
    positions: np.ndarray
    values: Mapping[str, Mapping[str, np.ndarray]]
    levels: Mapping[str, Level]
    errors: Mapping[str, str | None] = field(default_factory=dict)
    assumptions: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    tolerances: Mapping[str, float] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        """Layers with at least one tap in the table."""
        return 1 + max((layer_of(t) for t in self.values), default=0)

    @property
    def taps(self) -> list[str]:
        return list(self.values)

    def value(self, tap: str, quantity: str, position: int) -> float:
        i = int(np.flatnonzero(self.positions == position)[0])
        return float(self.values[tap][quantity][i])

    def mutated(self, label: str, values: Mapping[str, Mapping[str, np.ndarray]]) -> "TheoryTable":
        """A copy with other numbers (same levels and assumptions): a formula mutant."""
        return replace(self, label=label, values=values)

    def copy_values(self) -> dict[str, dict[str, np.ndarray]]:
        return {t: {q: np.array(v, dtype=float) for q, v in qs.items()} for t, qs in self.values.items()}


def layer_of(tap: str) -> int:
    """The 0-based layer of a full tap name (``blocks.2.attn.hook_z`` -> 2)."""
    parts = tap.split(".", 2)
    return int(parts[1]) if len(parts) > 2 and parts[0] == "blocks" and parts[1].isdigit() else 0


def suffix_of(tap: str) -> str:
    """The tap's name without its layer (``blocks.2.attn.hook_z`` -> ``attn.hook_z``)."""
    return tap.split(".", 2)[-1]


def needs_depth(spec: ModelSpec) -> bool:
    """Whether ``spec`` has taps beyond layer 1's attention (more layers, or an MLP)."""
    return int(spec.n_layers) > 1 or not spec.attn_only


def theory_table(
    spec: ModelSpec,
    positions,
    level: str = "best",
    derivation: Derivation | None = None,
    depth=None,
) -> TheoryTable:
    """Theory numbers for every tap of every layer of ``spec`` at ``positions`` (1-based).

    The layer-1 attention taps come from ``derivation`` (`theory.derive`, derived when
    not given): the symbolic layer-1 results with their levels, and the eps > 0 error
    rule of `relative_tolerance`. Every other tap -- the MLP of layer 1, every tap of the
    deeper layers -- comes from ``depth`` (a `theory.depth.DepthPrediction` at the same
    ``level``; computed when not given and the spec has such taps), with its levels,
    assumptions and declared relative errors (``tolerances``).

    >>> from theory import ModelSpec
    >>> t = theory_table(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, attn_only=True), [1, 4])
    >>> round(t.value("blocks.0.attn.hook_pattern", "sum_sq", 1), 12)
    1.0
    """
    if level not in ("best", "leading"):
        raise ValueError(f"level must be 'best' or 'leading', got {level!r}")
    pos = np.asarray(sorted({int(p) for p in positions}), dtype=np.int64)
    if pos.size == 0 or pos[0] < 1 or pos[-1] > int(spec.seq_len):
        raise ValueError(f"positions must lie in 1..{spec.seq_len}, got {pos.tolist()}")
    derivation = derivation if derivation is not None else derive(spec)
    values, levels, errors, assumptions, tolerances, sources = {}, {}, {}, {}, {}, {}
    for tap in derivation:
        result = derivation[tap].at(level)
        numbers = result.evaluate(pos)
        values[tap] = {q: np.asarray(numbers[q], dtype=float) for q in quantities_of(tap) if q in numbers}
        levels[tap] = result.level
        errors[tap] = result.error
        assumptions[tap] = tuple(result.assumptions)
        sources[tap] = "derive"
    if needs_depth(spec):
        if depth is None:
            from theory.depth import predict

            depth = predict(spec, level)
        elif depth.level != level or depth.spec != spec:
            raise ValueError(f"the depth prediction passed is level {depth.level!r} of another spec; "
                             f"need level {level!r} of this spec")
        idx = pos - 1
        for tap, quantities in depth.values.items():
            if tap in values:  # layer-1 attention taps: the symbolic derivation
                continue
            values[tap] = {q: np.asarray(quantities[q], dtype=float)[idx] for q in quantities_of(tap) if q in quantities}
            levels[tap] = depth.levels[tap]
            errors[tap] = depth.errors.get(tap)
            assumptions[tap] = tuple(depth.assumptions.get(tap, ()))
            if tap in depth.tolerances:
                tolerances[tap] = float(depth.tolerances[tap])
            sources[tap] = "depth"
    return TheoryTable(spec, level, pos, values, levels, errors, assumptions, tolerances, sources)


def logit_variance(spec: ModelSpec, nu1: float | None = None) -> float:
    """``tau_bar^2 = s^2 sigma_q^2 sigma_k^2 d_head (d nu_1)^2``, the mean logit variance.

    ``nu_1 = E|e|^2/d`` (1 when ``ln_eps = 0``); without it the estimate
    ``(d-1)/(d-1+c)``, ``c = d eps/sigma_e^2``, is used (Jensen; relative error ~1/d).
    """
    d, d_head = int(spec.d_model), int(spec.d_head)
    s2 = 1.0 / d_head if spec.attn_scale == "sqrt" else 1.0 / d_head**2
    if nu1 is None:
        c = d * float(spec.ln_eps) / float(spec.sigma_embed) ** 2 if spec.sigma_embed else math.inf
        nu1 = (d - 1) / (d - 1 + c) if math.isfinite(c) else 0.0
    return s2 * float(spec.sigma_q) ** 2 * float(spec.sigma_k) ** 2 * d_head * (d * nu1) ** 2


def layernorm_radius_spread(spec: ModelSpec) -> float:
    """``delta = c/(d-1+c) sqrt(2/(d-1))``: relative spread of |e|^2 inside the softmax.

    Zero when ``ln_eps = 0`` (then |e|^2 = d exactly).
    """
    d = int(spec.d_model)
    if float(spec.ln_eps) == 0.0:
        return 0.0
    if float(spec.sigma_embed) == 0.0:
        return math.sqrt(2.0 / max(d - 1, 1))
    c = d * float(spec.ln_eps) / float(spec.sigma_embed) ** 2
    return c / (d - 1 + c) * math.sqrt(2.0 / max(d - 1, 1))


# The approximate best level (eps > 0) states a relative error O(tau_bar^2 delta^2). An
# O() has no constant: we take the order at face value (constant 1) and never allow less
# than FLOOR (quadrature accuracy, float32 sums). A generous constant would make the
# check toothless where the order is not small (tau_bar^2 delta^2 = 0.04 with a tiny
# sigma_embed: a safety factor of 10 would accept a theory 40% off).
APPROX_SAFETY = 1.0
APPROX_FLOOR = 1e-4
# A level with no computable error order (e.g. a future asymptotic step): this default.
UNKNOWN_ORDER_TOLERANCE = 0.05


def relative_tolerance(table: TheoryTable, tap: str) -> float:
    """The declared relative error of a tap's result, as verify uses it.

    exact: 0. A tap of the depth recursion (`theory.depth`): the tolerance it declares
    (``table.tolerances``: 2% for residual-type taps, 3% for the attention path).
    Approximate best level of layer 1 (eps > 0): ``max(1e-4, tau_bar^2 delta^2)`` (see
    `logit_variance`, `layernorm_radius_spread`). Anything else: 5%.
    """
    level = table.levels[tap]
    if level == Level.EXACT:
        return 0.0
    if tap in table.tolerances:
        return float(table.tolerances[tap])
    error = table.errors.get(tap) or ""
    if "tau_bar^2 delta^2" in error:
        nu1 = None
        ln = "blocks.0.ln1.hook_normalized"
        if ln in table.values and table.levels.get(ln) == Level.EXACT and "var" in table.values[ln]:
            nu1 = float(table.values[ln]["var"][0])
        order = logit_variance(table.spec, nu1) * layernorm_radius_spread(table.spec) ** 2
        return max(APPROX_FLOOR, APPROX_SAFETY * order)
    return UNKNOWN_ORDER_TOLERANCE
