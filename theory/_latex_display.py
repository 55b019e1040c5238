"""The derivation a symbolic document prints: named constants instead of magic floats.

A partly symbolic spec (``ModelSpec().symbolic("d_model", "sigma_q")``) still holds numbers
for its other scales, and a derivation of it carries them into every formula: ``0.0004 d``
for ``sigma_v^2 d``, ``Gamma(3/2 - d/2, 1250 d eps)`` for ``Gamma(3/2 - d/2, c/2)``, a softmax
series with numeric coefficients where ``tau_bar^2`` should stand. A paper wants the symbols,
with their values in the symbol table. :func:`display_derivation` computes that derivation
once, here in the facade layer (the renderers of `theory._latex` print and never compute):

1. every fixed scale of a symbolic spec (`SCALE_FIELDS` with a positive number) is made its
   symbol and the layer is derived again (`theory.derive.derive`, exact sympy); the numbers
   travel along as ``fixed`` (field -> value), which the symbol table prints;
2. the LayerNorm constant ``c = d eps/sigma_e^2`` of `theory.derive.Derivation.constants` is
   substituted for ``eps`` wherever ``eps`` appears (an exact change of variable,
   ``eps = c sigma_e^2/d``), so the norm moments read ``Gamma(3/2 - d/2, c/2)``;
3. the alternative forms are rewritten in the mean logit variance ``tau_bar^2`` where that
   prints shorter (`theory._latex.in_tau_bar`, exact: the one root ``sigma_q(tau_bar^2)``).

A numeric spec, or one whose scales are already symbols, is returned as it is (apart from 2
and 3). Nothing is fitted or evaluated: every expression is the derivation's, re-expressed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp

from ._latex import Notation, Printer, in_tau_bar
from ._latex.printer import C_SYMBOL
from ._result import StepResult
from .derive import Derivation, Step, derive
from .spec import ModelSpec

#: The spec fields that set scales (init stds, LayerNorm eps): printed as symbols in a
#: symbolic document, their values in the symbol table.
SCALE_FIELDS = ("sigma_embed", "sigma_q", "sigma_k", "sigma_v", "sigma_o", "sigma_mlp_in", "sigma_mlp_out", "ln_eps")


@dataclass(frozen=True)
class DisplayDerivation(Derivation):
    """A `theory.derive.Derivation` re-expressed for print; ``fixed``: (field, value) of the
    scales the user's spec fixed and the document writes as symbols."""

    fixed: tuple[tuple[str, object], ...] = ()


def _fixed_scales(spec: ModelSpec) -> list[str]:
    out = []
    for name in SCALE_FIELDS:
        value = getattr(spec, name)
        if isinstance(value, sp.Basic) and value.free_symbols:
            continue
        if float(value) > 0:  # eps = 0 (the exact sphere law) and sigma = 0 stay as they are
            out.append(name)
    return out


def _in_c(expr, eps, sigma_e, d):
    """``expr`` with ``eps = c sigma_e^2/d`` substituted (exact), when ``eps`` is a symbol in it."""
    expr = sp.sympify(expr)
    if not isinstance(eps, sp.Symbol) or eps not in expr.free_symbols:
        return expr
    return sp.powsimp(expr.subs(eps, C_SYMBOL * sigma_e**2 / d), combine="exp")


def _rewrite_result(result: StepResult, rewrite, tau) -> StepResult:
    forms = {}
    for name, expr in result.forms.items():
        expr = rewrite(expr)
        forms[name] = tau(expr)
    quantities = {name: rewrite(expr) for name, expr in result.quantities.items()}
    return dataclasses.replace(result, quantities=quantities, forms=forms)


def display_derivation(derivation: Derivation, notation: Notation | None = None) -> Derivation:
    """The derivation as a symbolic document prints it (see the module docstring); a numeric
    spec's derivation is returned unchanged."""
    if isinstance(derivation, DisplayDerivation) or not derivation.spec.is_symbolic:
        return derivation
    spec, fixed = derivation.spec, ()
    names = _fixed_scales(spec)
    if names:
        try:
            wide = derive(spec.symbolic(*names))
        except ValueError:  # a structure the symbolic derivation refuses: print the user's as it is
            wide = None
        if wide is not None:
            used = set().union(*(sp.sympify(e).free_symbols for s in wide.steps for r in (s.leading, s.best)
                                 for e in (*r.quantities.values(), *r.forms.values())))
            fixed = tuple((name, getattr(spec, name)) for name in names if getattr(wide.spec, name) in used)
            derivation = wide
    spec = derivation.spec
    printer = Printer(Notation.coerce(notation))
    eps, sigma_e, d = spec.ln_eps, sp.sympify(spec.sigma_embed), sp.sympify(spec.d_model)
    if not isinstance(sigma_e, sp.Symbol):
        eps = None  # c would only hide a number inside a symbol

    def rewrite(expr):
        return _in_c(expr, eps, sigma_e, d)

    roots = derivation.constants.get("sigma_q(tau_bar^2)")

    def tau(expr):
        shorter = in_tau_bar(expr, spec.sigma_q, roots, printer)
        return expr if shorter is None else shorter

    steps = tuple(Step(s.tap, _rewrite_result(s.leading, rewrite, tau), _rewrite_result(s.best, rewrite, tau))
                  for s in derivation.steps)
    constants = dict(derivation.constants)
    if "delta" in constants:
        constants["delta"] = rewrite(constants["delta"])
    return DisplayDerivation(spec, steps, constants, derivation.nu_symbolic, fixed)
