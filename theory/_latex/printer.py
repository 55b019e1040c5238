"""Printing sympy expressions: the notation applied, floats rounded, long lines broken.

* :class:`Printer` -- a sympy ``LatexPrinter`` that uses the notation, prints the
  placeholder functions ``S_2(m)``, ``Xi(m)`` as functions of m and rounds floats to
  six significant digits (`round_floats`).
* :func:`visible_width`, :data:`LINE_WIDTH`, :func:`break_lines` -- a rough width of
  typeset math, and the splitting of a long expression at its top-level sums (and inside
  the widest parenthesised sum of a long product) so displayed equations fit the page.
* :func:`in_tau_bar` -- a form rewritten in the mean logit variance ``tau_bar^2``, from
  the roots ``sigma_q(tau_bar^2)`` the derivation carries (`theory.derive.Derivation`).
"""

from __future__ import annotations

import re
from typing import Sequence

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.latex import LatexPrinter

from .notation import SYMBOL_KEYS, Notation

# The mean logit variance, printed as tau_bar^2. The same symbol as theory.steps.TAU_BAR2
# (sympy symbols are equal by name and assumptions): the roots sigma_q(tau_bar^2) that a
# Derivation carries are written in it.
TAU_BAR2 = sp.Symbol("tau_bar2", positive=True)

# The LayerNorm constant c = d eps/sigma_e^2 (`theory.derive.Derivation.constants["c"]`), printed
# as the notation's ``c``: the symbolic document writes the norm moments in it
# (`theory._latex_display.display_derivation` substitutes it for eps).
C_SYMBOL = sp.Symbol("c", positive=True)


def in_tau_bar(expr: sp.Expr, sigma_q, roots: Sequence[sp.Expr] | None, printer: "Printer") -> sp.Expr | None:
    """``expr`` rewritten in the mean logit variance ``tau_bar^2`` when that prints shorter.

    Exact: ``roots`` are the positive solutions ``sigma_q`` of ``tau_bar^2 = s^2 sigma_q^2
    sigma_k^2 d_h rho^4`` (``Derivation.constants["sigma_q(tau_bar^2)"]``, present when
    ``sigma_q`` is a symbol); the one root is substituted, so every appearance of the logit
    scale collapses into ``tau_bar^2``. None when ``sigma_q`` is a number or nothing is gained.
    """
    if not isinstance(sigma_q, sp.Symbol) or sigma_q not in expr.free_symbols or roots is None:
        return None
    if len(roots) != 1:
        return None
    coeff, rest = expr.as_coeff_Mul()  # a numeric factor (sigma_v^2 = 0.0004) stays outside
    if coeff.is_Float and rest.free_symbols:
        inner = in_tau_bar(rest, sigma_q, roots, printer)
        return None if inner is None else sp.Mul(coeff, inner, evaluate=False)
    rewritten = expr.subs(sigma_q, roots[0])
    if sigma_q in rewritten.free_symbols:
        return None
    by_power = sp.collect(sp.expand(rewritten), [TAU_BAR2], evaluate=False)  # {tau^2k: coefficient}
    rewritten = sp.Add(*[sp.factor(c) * k for k, c in by_power.items()])
    if len(round_floats(rewritten).atoms(sp.Float)) > len(round_floats(expr).atoms(sp.Float)):
        return None  # numeric coefficients expanded into new decimals: keep the original
    if visible_width(printer.doprint(rewritten)) >= visible_width(printer.doprint(expr)):
        return None
    return rewritten


class Printer(LatexPrinter):
    """sympy's LaTeX printer with the notation applied and floats rounded."""

    def __init__(self, notation: Notation, digits: int = 6):
        super().__init__({"mul_symbol": None})
        self.notation = notation
        self.digits = digits

    def _print_Symbol(self, expr, style="plain"):
        if expr == TAU_BAR2:
            return f"{self.notation['tau_bar']}^{{2}}"
        key = SYMBOL_KEYS.get(expr.name)
        if key is not None:
            return self.notation[key]
        return super()._print_Symbol(expr, style=style)

    def _print_Pow(self, expr, **kwargs):
        if expr.base == TAU_BAR2 and expr.exp.is_Integer and expr.exp > 0:
            return f"{self.notation['tau_bar']}^{{{2 * int(expr.exp)}}}"
        return super()._print_Pow(expr, **kwargs)

    def _print_Function(self, expr, exp=None):
        if isinstance(expr, AppliedUndef) and expr.func.__name__ in ("S_2", "Xi"):
            args = ", ".join(self._print(a) for a in expr.args)
            head = self.notation[expr.func.__name__]
            tex = f"{head}({args})"
            return f"{{{head}}}^{{{exp}}}({args})" if exp is not None else tex
        return super()._print_Function(expr, exp)

    def doprint(self, expr) -> str:
        tex = super().doprint(round_floats(sp.sympify(expr), self.digits))
        tex = re.sub(r"(?<![0-9.])1\.0 \\cdot 10\^", "10^", tex)  # 1.0 * 10^{-5} -> 10^{-5}
        return re.sub(r"(\d)\.0 \\cdot 10\^", r"\1 \\cdot 10^", tex)

    def ordered_terms(self, expr: sp.Expr) -> list[sp.Expr]:
        return list(self._as_ordered_terms(expr)) if isinstance(expr, sp.Add) else [expr]


def round_floats(expr: sp.Expr, digits: int = 6) -> sp.Expr:
    """Floats to ``digits`` significant digits; integral floats to integers."""
    floats = expr.atoms(sp.Float)
    if not floats:
        return expr
    table = {}
    for f in floats:
        value = float(f)
        if abs(value) < 1e15 and abs(value - round(value)) <= 1e-12 * max(1.0, abs(value)):
            table[f] = sp.Integer(int(round(value)))
        else:
            table[f] = sp.Float(float(f), digits)
    return expr.xreplace(table)


# ---------------------------------------------------------------- widths
_CMD = re.compile(r"\\([A-Za-z]+|.)")


def _group(text: str, start: int) -> tuple[str, int]:
    """The brace group starting at ``text[start] == '{'``: (contents, index after)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
    return text[start + 1 :], len(text)


_ZERO_WIDTH = {"left", "right", "mathrm", "operatorname", "mathbb", "bar", "hat", "text", "displaystyle",
               "Bigl", "Bigr", "bigl", "bigr", "nonumber", "limits", "mathbf", "boldsymbol"}


def visible_width(tex: str) -> float:
    """A rough width of typeset math in units of one symbol (about 0.55 em).

    Fractions count their wider part, scripts count 0.7, commands one symbol; good
    enough to decide where to break (the tests measure the real boxes with pdflatex).
    """
    width, i = 0.0, 0
    while i < len(tex):
        ch = tex[i]
        if ch == "\\":
            match = _CMD.match(tex, i)
            name = match.group(1)
            i = match.end()
            if name in ("frac", "dfrac", "tfrac"):
                j = i
                while j < len(tex) and tex[j] == " ":
                    j += 1
                if j < len(tex) and tex[j] == "{":
                    num, j = _group(tex, j)
                    while j < len(tex) and tex[j] == " ":
                        j += 1
                    den, j = _group(tex, j) if j < len(tex) and tex[j] == "{" else ("", j)
                    width += max(visible_width(num), visible_width(den)) * (0.8 if name == "tfrac" else 1) + 0.6
                    i = j
                continue
            if name in ("cdot", "quad"):
                width += 1.5
            elif name in ("qquad",):
                width += 3
            elif name in (",", ";", ":", "!", " "):
                width += 0.3
            elif name not in _ZERO_WIDTH:
                width += 1.0
            continue
        if ch in "^_":
            i += 1
            while i < len(tex) and tex[i] == " ":
                i += 1
            if i < len(tex) and tex[i] == "{":
                inner, i = _group(tex, i)
                width += 0.7 * visible_width(inner)
            elif i < len(tex):
                if tex[i] == "\\":
                    match = _CMD.match(tex, i)
                    i = match.end()
                else:
                    i += 1
                width += 0.7
            continue
        if ch in "{} ":
            i += 1
            continue
        width += 1.6 if ch in "+-=<>" else 1.0
        i += 1
    return width


#: How wide a displayed equation may be, left-hand side and right-hand side together, in
#: :func:`visible_width` units (about 5.8 pt each at 10 pt): a column of a two-column
#: article (``\\columnwidth``, about 229 pt at 10 pt) less its equation number. The
#: snippets are held to it by pdflatex in tests/test_latex_columns.py.
COLUMN_WIDTH = 28.0

#: How wide the right-hand side of one displayed line may be when the left-hand side is
#: of a usual width (``Var[z_{m,j}]``); `rhs_width` gives it for a given left-hand side.
LINE_WIDTH = 26.0


def rhs_width(lhs: str) -> float:
    """The width left for the right-hand side after ``lhs`` (continuation lines start at
    the alignment point, so every line of an ``align`` row loses the left-hand side)."""
    return max(14.0, COLUMN_WIDTH - visible_width(lhs))


def _signed(printer: Printer, term: sp.Expr, first: bool) -> tuple[str, str]:
    """(operator, body) for one term of a sum."""
    if not first and term.could_extract_minus_sign():
        return "-", printer.doprint(-term)
    return ("" if first else "+"), printer.doprint(term)


def break_lines(expr: sp.Expr, printer: Printer, width: float = LINE_WIDTH) -> list[str]:
    """Lines of LaTeX for ``expr``, each about ``width`` wide at most.

    Sums break between terms (the operator starts the next line); a product too wide for
    a line keeps its narrow factors on the first line and breaks its widest sum inside
    ``\\Bigl( ... \\Bigr)``. A single atom wider than a line is left whole.
    """
    expr = round_floats(sp.sympify(expr), printer.digits)
    whole = printer.doprint(expr)
    if visible_width(whole) <= width:
        return [whole]
    pieces: list[str] = []  # (one line's worth of) tokens: "+ term"
    for index, term in enumerate(printer.ordered_terms(expr)):
        op, body = _signed(printer, term, index == 0)
        if visible_width(body) <= width:
            pieces.append(f"{op} {body}".strip())
            continue
        pieces.extend(_break_product(op, -term if op == "-" else term, printer, width))
    # greedy packing of pieces into lines
    lines: list[str] = []
    for piece in pieces:
        if lines and not lines[-1].endswith(r"\Bigl(") and visible_width(lines[-1] + " " + piece) <= width and not piece.startswith(r"\Bigr)"):
            lines[-1] = f"{lines[-1]} {piece}"
        elif lines and piece.startswith(r"\Bigr)") and visible_width(lines[-1] + piece) <= width:
            lines[-1] = f"{lines[-1]} {piece}"
        else:
            lines.append(piece)
    return lines


def _break_product(op: str, term: sp.Expr, printer: Printer, width: float) -> list[str]:
    """A wide product: ``rest \\Bigl( sum-lines \\Bigr)``, or the term whole."""
    if not isinstance(term, sp.Mul):
        return [f"{op} {printer.doprint(term)}".strip()]
    sums = [f for f in term.args if isinstance(f, sp.Add)]
    if not sums:
        # a fraction whose numerator holds a sum: look inside the numerator
        numer, _ = term.as_numer_denom()
        sums = [f for f in sp.Mul.make_args(numer) if isinstance(f, sp.Add)]
        if not sums:
            return [f"{op} {printer.doprint(term)}".strip()]
    widest = max(sums, key=lambda f: visible_width(printer.doprint(f)))
    rest = term / widest
    head = "" if rest == 1 else printer.doprint(rest)
    inner = break_lines(widest, printer, width - 2)
    opener = f"{op} {head} \\Bigl(".strip()
    if len(inner) == 1:
        inner = [inner[0] + r" \Bigr)"]
    else:
        inner = inner[:-1] + [inner[-1] + r" \Bigr)"]
    if visible_width(opener + " " + inner[0]) <= width:
        return [opener + " " + inner[0]] + inner[1:]
    return [opener] + inner  # the narrow factors alone on their line, the sum below

