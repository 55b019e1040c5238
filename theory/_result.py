"""`StepResult`: the immutable outcome of one theory step (one tap, one level)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np
import sympy as sp

from ._softmax import m_sym
from ._numbers import numbers


class Level(str, Enum):
    """How far a result can be trusted.

    exact        -- no approximation (up to stated quadrature accuracy).
    asymptotic   -- a limit or series; the error order and regime are stated.
    approximate  -- an uncontrolled or model approximation; the error is estimated.
    """

    EXACT = "exact"
    ASYMPTOTIC = "asymptotic"
    APPROXIMATE = "approximate"


def _frozen(mapping: Mapping | None) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class StepText:
    """The prose of a step in the derivation document: heading, LaTeX subject, derivation.

    Written next to each step (``TEXT`` in `theory.steps.<kind>`); the renderers print it.
    """

    heading: str
    subject: str
    derivation: str


@dataclass(frozen=True)
class StepResult:
    """One step of the layer at one level (``"leading"``: the paper; ``"best"``: ours).

    ``quantities`` maps names (``mean``, ``var``, ``sum_sq``, ...) to sympy expressions
    in the query position ``m`` and the spec's fields; some best-level expressions use
    the placeholder functions ``S_2(m)`` and ``Xi(m)`` (see ``definitions``), which
    have no closed form and are evaluated by quadrature for numeric specs. ``forms``
    holds alternative closed forms (small-logit-variance series, large-m limit).
    ``evaluate(positions)`` returns numbers for every quantity.
    """

    tap: str
    title: str
    level: Level
    quantities: Mapping[str, sp.Expr]
    assumptions: tuple[str, ...]
    regime: str
    error: str | None = None
    forms: Mapping[str, sp.Expr] = field(default_factory=dict)
    definitions: Mapping[str, str] = field(default_factory=dict)
    symbol: str = "x"
    measure: str = "annealed"
    implied: Mapping[str, sp.Expr] = field(default_factory=dict)
    tolerance: float | None = None
    tolerance_source: str = ""
    row: Callable[[np.ndarray], object] | None = field(default=None, repr=False, compare=False)
    text: StepText | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "quantities", _frozen(self.quantities))
        object.__setattr__(self, "forms", _frozen(self.forms))
        object.__setattr__(self, "definitions", _frozen(self.definitions))
        object.__setattr__(self, "implied", _frozen(self.implied))
        object.__setattr__(self, "level", Level(self.level))

    # ------------------------------------------------------------------ numbers
    def evaluate(self, positions) -> dict[str, np.ndarray]:
        """Every quantity (and the ``implied`` ones) at the given query positions (numeric specs).

        The numbers come from the stated sympy expressions (``lambdify``); ``S_2(m)`` and
        ``Xi(m)`` are implemented by the row quadrature (``row``) at the same positions.
        """
        positions = np.atleast_1d(np.asarray(positions))
        if positions.size == 0 or (positions < 1).any() or not np.all(np.mod(positions, 1) == 0):
            raise ValueError(f"positions must be integers >= 1, got {positions.tolist()}")
        positions = positions.astype(np.int64)
        exprs = dict(self.quantities, **self.implied)
        for name, expr in exprs.items():
            free = expr.free_symbols - {m_sym}
            placeholders = {f.func.__name__ for f in expr.atoms(sp.core.function.AppliedUndef)}
            if free or (placeholders and self.row is None) or placeholders - {"S_2", "Xi"}:
                raise ValueError(
                    f"{self.tap}: {name} is symbolic in {', '.join(sorted(map(str, free)) or sorted(placeholders))}; "
                    "give numbers for every spec field to evaluate it"
                )
        row = self.row(positions) if self.row is not None else None
        out = {name: numbers(expr, positions, row) for name, expr in exprs.items()}
        if "excess_kurtosis" in out and "var" in out and not np.any(out["var"]):
            del out["excess_kurtosis"]  # the shape of a variable that is exactly 0 is 0/0: not a number
        return {name: finite_or_raise(f"{self.tap} {name}", values) for name, values in out.items()}

    # LaTeX: ``latex()`` and ``_repr_latex_`` (Jupyter) are attached by the renderer's facade
    # (`theory._facade.install_notebook_methods`, on ``import theory``): results import no renderer.

    def describe(self) -> str:
        """A plain-text account: quantities, level, error, regime, assumptions."""
        head = f"{self.tap}  [{self.level.value}" + (f", error {self.error}" if self.error else "") + "]"
        body = [f"  {name} = {sp.sstr(expr)}" for name, expr in self.quantities.items()]
        body += [f"  {name}: {sp.sstr(expr)}" for name, expr in self.forms.items()]
        body += [f"  where {k}: {v}" for k, v in self.definitions.items()]
        body.append(f"  regime: {self.regime}")
        body += [f"  assumes: {a}" for a in self.assumptions]
        return "\n".join([head, f"  {self.title}"] + body)

    def to_dict(self) -> dict:
        return {
            "tap": self.tap,
            "title": self.title,
            "level": self.level.value,
            "error": self.error,
            "regime": self.regime,
            "measure": self.measure,
            "assumptions": list(self.assumptions),
            "quantities": {k: sp.sstr(v) for k, v in self.quantities.items()},
            "latex": {k: sp.latex(v) for k, v in self.quantities.items()},
            "forms": {k: sp.sstr(v) for k, v in self.forms.items()},
            "definitions": dict(self.definitions),
        }


def finite_or_raise(name: str, values: np.ndarray) -> np.ndarray:
    """Never hand out a silent NaN."""
    if not np.all(np.isfinite(values)):
        raise FloatingPointError(f"{name}: the computation produced non-finite values {values}")
    return values


__all__ = ["Level", "StepResult", "StepText", "finite_or_raise"]
