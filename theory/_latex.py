"""LaTeX for papers: a derivation document that compiles, per-step snippets, notation.

The machinery behind :func:`theory.latex`. Every piece of LaTeX goes through one
:class:`Notation` (our symbol -> the user's LaTeX), so a user who writes
``{"sigma_q": "\\sigma_{Q}", "d_model": "D", "E": "\\operatorname{E}"}`` once gets it in
every equation, the prose, the symbol table and the snippets.

Pieces
------
* :class:`Notation` -- the symbol map, loaded from a dict or a JSON file, validated.
* :class:`Printer` -- a sympy ``LatexPrinter`` that uses the notation, prints the
  placeholder functions ``S_2(m)``, ``Xi(m)`` as functions of m and rounds floats to
  six significant digits.
* :func:`break_lines` -- splits a long expression at its top-level sums (and inside the
  widest parenthesised sum of a long product) so displayed equations fit the page.
* :func:`step_snippet`, :func:`document`, :func:`write` -- the per-step ``\\input``-able
  snippets, the self-contained ``derivation.tex`` and the files of ``--out DIR``.

Equation labels come from the tap names: ``eq:blocks.0.attn.hook_z:best:var`` is the
best-level variance of ``hook_z``; the generic derivation steps are
``eq:blocks.0.attn.hook_z:derivation:1``, ... and sections ``sec:blocks.0.attn.hook_z``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Mapping

import sympy as sp
from sympy.core.function import AppliedUndef
from sympy.printing.latex import LatexPrinter

from ._result import StepResult
from ._outputs import atomic_write_text, shown
from .spec import SIGMA_FIELDS, SYMBOL_NAMES, ModelSpec

# ============================================================================ notation
#: Our symbols and their default LaTeX. Keys are spec fields (``sigma_q``), derived
#: quantities (``nu_1``, ``tau_bar``), the tensors of the layer (``x``, ``e``, ...) and
#: the operators ``E``, ``Var``, ``Cov``.
DEFAULT_NOTATION: dict[str, str] = {
    # spec fields
    "d_model": "d",
    "n_heads": "H",
    "n_layers": "L",
    "seq_len": "T",
    "mlp_ratio": "r",
    "sigma_embed": r"\sigma_{e}",
    "sigma_q": r"\sigma_{q}",
    "sigma_k": r"\sigma_{k}",
    "sigma_v": r"\sigma_{v}",
    "sigma_o": r"\sigma_{o}",
    "sigma_mlp_in": r"\sigma_{\mathrm{in}}",
    "sigma_mlp_out": r"\sigma_{\mathrm{out}}",
    "ln_eps": r"\epsilon",
    # derived quantities and placeholders
    "d_head": r"d_{h}",
    "D": "D",
    "s": "s",
    "c": "c",
    "X": "X",
    "nu_1": r"\nu_{1}",
    "nu_2": r"\nu_{2}",
    "rho": r"\rho",
    "tau": r"\tau",
    "tau_bar": r"\bar{\tau}",
    "delta": r"\delta",
    "S_2": r"S_{2}",
    "Xi": r"\Xi",
    "kurt": r"\kappa",
    # indices
    "m": "m",
    "n": "n",
    # the tensors of the layer
    "x": "x",
    "e": "e",
    "q": "q",
    "k": "k",
    "v": "v",
    "l": r"\ell",
    "a": "a",
    "z": "z",
    "o": "o",
    "W": "W",
    # operators
    "E": r"\mathbb{E}",
    "Var": r"\operatorname{Var}",
    "Cov": r"\operatorname{Cov}",
}

_MEANINGS: dict[str, str] = {
    "d_model": "model width",
    "n_heads": "number of heads",
    "n_layers": "number of layers",
    "seq_len": "context length",
    "mlp_ratio": "MLP width ratio",
    "sigma_embed": "standard deviation of the input embeddings",
    "sigma_q": "init.\\ std of the entries of $<<W>>_{q}$",
    "sigma_k": "init.\\ std of the entries of $<<W>>_{k}$",
    "sigma_v": "init.\\ std of the entries of $<<W>>_{v}$",
    "sigma_o": "init.\\ std of the entries of $<<W>>_{o}$",
    "sigma_mlp_in": "init.\\ std of the MLP input matrix",
    "sigma_mlp_out": "init.\\ std of the MLP output matrix",
    "ln_eps": "LayerNorm epsilon",
    "d_head": "head width $<<d_model>>/<<n_heads>>$",
    "D": "dimension of the LayerNorm subspace, $<<d_model>>-1$",
    "s": "logit scale",
    "c": "LayerNorm constant $<<d_model>><<ln_eps>>/<<sigma_embed>>^{2}$",
    "nu_1": "$<<E>>\\lVert <<e>>\\rVert^{2}/<<d_model>>$",
    "nu_2": "$<<E>>\\lVert <<e>>\\rVert^{4}/<<d_model>>^{2}$",
    "rho": "r.m.s.\\ norm of the LayerNorm output, $<<rho>>^{2} = <<E>>\\lVert <<e>>\\rVert^{2}$",
    "tau": "conditional logit standard deviation of one query row",
    "tau_bar": "mean logit standard deviation, $<<tau_bar>>^{2} = <<E>><<tau>>^{2}$",
    "delta": "relative spread of $\\lVert <<e>>_{<<n>>}\\rVert^{2}$ about its mean",
    "S_2": "$<<E>>\\sum_{<<n>>\\le <<m>>} <<a>>_{<<m>><<n>>}^{2}$, inverse effective number of attended keys",
    "Xi": "weight--value coupling, equation~\\eqref{eq:blocks.0.attn.hook_z:derivation:xi}",
    "kurt": "excess kurtosis (fourth standardised cumulant)",
    "m": "query position (1-based)",
    "n": "key position, $<<n>> \\le <<m>>$",
}
_MEANING_ORDER = (
    "d_model", "n_heads", "d_head", "seq_len", "sigma_embed", "sigma_q", "sigma_k", "sigma_v",
    "sigma_o", "ln_eps", "m", "n", "s", "D", "c", "nu_1", "nu_2", "rho", "tau", "tau_bar",
    "delta", "S_2", "Xi", "kurt",
)

NOTATION_MAX_CHARS = 200  # one symbol's LaTeX; longer is a mistake, not a notation
NOTATION_MAX_BYTES = 1 << 16


def _balanced(text: str) -> bool:
    """Braces nest properly (not only equal in number: "}{" is refused)."""
    depth = 0
    for ch in text:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        if depth < 0:
            return False
    return depth == 0


# The name each sympy symbol carries -> our notation key.
_SYMBOL_KEYS: dict[str, str] = {name: field for field, name in SYMBOL_NAMES.items()}
_SYMBOL_KEYS.update({"m": "m", "nu_1": "nu_1", "nu_2": "nu_2", "tau2": "tau", "D": "D"})

# Short names a user may also write in a notation file.
_ALIASES: dict[str, str] = {name: field for field, name in SYMBOL_NAMES.items() if name != field}
_ALIASES.update({"\\mathbb{E}": "E", "expectation": "E", "d_h": "d_head", "eps": "ln_eps"})


# What a notation value may contain: a math-mode fragment. Control sequences come from this
# list only (symbols, fonts, accents, spacing), so that no value can read a file (\input),
# run a command (\write18), redefine a macro or leave math mode; TeX's ^^ character codes,
# which can spell any control sequence, are refused too.
_NOTATION_COMMANDS = frozenset("""
    alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu nu xi
    pi varpi rho varrho sigma varsigma tau upsilon phi varphi chi psi omega
    Gamma Delta Theta Lambda Xi Pi Sigma Upsilon Phi Psi Omega ell hbar imath jmath
    mathrm mathbf mathit mathsf mathtt mathcal mathbb mathfrak mathscr boldsymbol bm operatorname
    text textrm textit textbf textsf mathnormal
    bar hat tilde vec dot ddot check breve acute grave overline underline widehat widetilde
    prime infty partial nabla star ast cdot circ bullet dagger ddagger times
    lVert rVert lvert rvert Vert vert langle rangle left right big Big
    quad qquad
""".split())
_NOTATION_CHARS = re.compile(r"[A-Za-z0-9 {}_^'.,;:!?+\-*/=<>()\[\]|]")
_NOTATION_SPACING = frozenset(",;:! ")


def _check_notation_value(key: str, value: str) -> None:
    """Refuse anything in a notation value beyond a math-mode fragment (see above)."""
    if "^^" in value:
        raise ValueError(f"notation: {shown(key)} -> {shown(value)} uses TeX's ^^ character codes; write the symbol itself")
    i = 0
    while i < len(value):
        ch = value[i]
        if ch == "\\":
            name = re.match(r"[A-Za-z]+", value[i + 1:])
            word = name.group(0) if name else value[i + 1:i + 2]
            if not (word in _NOTATION_COMMANDS or (not name and word in _NOTATION_SPACING)):
                raise ValueError(
                    f"notation: {shown(key)} -> {shown(value)}: \\{word[:20]} is not allowed; a notation "
                    "value is a math-mode fragment using letters, digits, braces, _ ^ ' and symbol, font "
                    "and accent commands (e.g. \\sigma, \\mathrm, \\bar)"
                )
            i += 1 + len(word)
            continue
        if not _NOTATION_CHARS.fullmatch(ch):
            raise ValueError(f"notation: {shown(key)} -> {shown(value)}: the character {ch!r} is not allowed in a "
                             "math-mode fragment ($ % # & ~ and line breaks are refused)")
        i += 1


@dataclass(frozen=True)
class Notation:
    """Our symbols -> the user's LaTeX. Unknown keys are refused, naming the allowed ones.

    >>> n = Notation.from_mapping({"sigma_q": r"\\sigma_{Q}", "d_model": "D", "E": r"\\operatorname{E}"})
    >>> n["sigma_q"], n["d_model"], n["E"], n["sigma_k"]
    ('\\\\sigma_{Q}', 'D', '\\\\operatorname{E}', '\\\\sigma_{k}')
    """

    symbols: tuple[tuple[str, str], ...] = tuple(DEFAULT_NOTATION.items())

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, str] | None) -> "Notation":
        table = dict(DEFAULT_NOTATION)
        for key, value in (mapping or {}).items():
            canonical = _ALIASES.get(key, key) if isinstance(key, str) else None
            if canonical not in table:
                raise ValueError(
                    f"notation: unknown symbol {shown(key, 40)}; allowed keys are {', '.join(DEFAULT_NOTATION)}"
                )
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"notation: {key!r} must map to a non-empty LaTeX string, got {shown(value)}")
            if len(value) > NOTATION_MAX_CHARS:
                raise ValueError(f"notation: {key!r} -> a value of {len(value)} characters; a symbol takes at most {NOTATION_MAX_CHARS}")
            _check_notation_value(key, value)
            if not _balanced(value):
                raise ValueError(f"notation: {key!r} -> {shown(value)} has unbalanced braces")
            table[canonical] = value.strip()
        return cls(tuple(table.items()))

    @classmethod
    def load(cls, path: str | Path) -> "Notation":
        try:
            with open(path, "rb") as fh:
                raw = fh.read(NOTATION_MAX_BYTES + 1)
            if len(raw) > NOTATION_MAX_BYTES:
                raise ValueError(f"notation: {shown(str(path))} is larger than {NOTATION_MAX_BYTES} bytes")
            data = json.loads(raw.decode("utf-8"))
        except OSError as err:
            raise ValueError(f"notation: cannot read {shown(str(path))}: {err.strerror or err}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"notation: {shown(str(path))} is not valid JSON ({err.msg}, line {err.lineno})") from None
        except UnicodeDecodeError:
            raise ValueError(f"notation: {shown(str(path))} is not UTF-8 text") from None
        except RecursionError:
            raise ValueError(f"notation: {shown(str(path))} is nested too deeply; give a flat JSON object") from None
        if not isinstance(data, dict):
            raise ValueError(f"notation: {path} must hold a JSON object mapping our symbols to LaTeX")
        return cls.from_mapping(data)

    @classmethod
    def coerce(cls, notation: "Notation | Mapping[str, str] | str | Path | None") -> "Notation":
        if isinstance(notation, Notation):
            return notation
        if isinstance(notation, (str, Path)):
            return cls.load(notation)
        return cls.from_mapping(notation)

    def __getitem__(self, key: str) -> str:
        return dict(self.symbols)[key]

    def as_dict(self) -> dict[str, str]:
        return dict(self.symbols)

    def changed(self) -> dict[str, str]:
        """Only the entries that differ from the defaults."""
        return {k: v for k, v in self.symbols if DEFAULT_NOTATION.get(k) != v}

    def fill(self, template: str) -> str:
        """Replace every ``<<key>>`` in ``template`` by the notation's LaTeX (wrapped in braces)."""
        table = dict(self.symbols)

        def sub(match: re.Match) -> str:
            key = match.group(1)
            if key not in table:
                raise KeyError(f"template uses unknown notation key {key!r}")
            value = table[key]
            follows = template[match.end() : match.end() + 1]
            # a symbol that carries its own subscript or prime gets braces before another
            return "{" + value + "}" if follows in ("_", "'") and re.search(r"[_^']", value) else value

        return re.sub(r"<<([A-Za-z_0-9]+)>>", sub, template)


# ============================================================================ printing
TAU_BAR2 = sp.Symbol("tau_bar2", positive=True)  # the mean logit variance, printed as tau_bar^2


@lru_cache(maxsize=32)
def _sigma_q_in_tau_bar(spec: ModelSpec) -> tuple[sp.Expr, ...]:
    """The positive roots sigma_q of ``tau_bar^2(spec) = TAU_BAR2``."""
    from .steps import LayerOne

    ctx = LayerOne.from_spec(spec, with_forms=False)
    return tuple(r for r in sp.solve(sp.Eq(ctx.tau2_bar, TAU_BAR2), spec.sigma_q) if r.is_positive is not False)


def in_tau_bar(expr: sp.Expr, spec: ModelSpec, printer: "Printer") -> sp.Expr | None:
    """``expr`` rewritten in the mean logit variance ``tau_bar^2`` when that prints shorter.

    Exact: with ``sigma_q`` a symbol, ``tau_bar^2 = s^2 sigma_q^2 sigma_k^2 d_h rho^4`` is
    solved for ``sigma_q > 0`` and substituted, so every appearance of the logit scale
    collapses into ``tau_bar^2``. None when ``sigma_q`` is a number or nothing is gained.
    """
    if not isinstance(spec.sigma_q, sp.Symbol) or spec.sigma_q not in expr.free_symbols:
        return None
    roots = _sigma_q_in_tau_bar(spec)
    if len(roots) != 1:
        return None
    coeff, rest = expr.as_coeff_Mul()  # a numeric factor (sigma_v^2 = 0.0004) stays outside
    if coeff.is_Float and rest.free_symbols:
        inner = in_tau_bar(rest, spec, printer)
        return None if inner is None else sp.Mul(coeff, inner, evaluate=False)
    rewritten = expr.subs(spec.sigma_q, roots[0])
    if spec.sigma_q in rewritten.free_symbols:
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
        key = _SYMBOL_KEYS.get(expr.name)
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


# ============================================================================ widths
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


#: How wide one displayed line may be, in :func:`visible_width` units. At 10pt on a
#: 6.3in text width (geometry margins of 1.1in) about 62 symbols fit; we leave room for
#: the left-hand side, the equation number and the continuation indent.
LINE_WIDTH = 38.0


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
        numer, denom = term.as_numer_denom()
        sums = [f for f in sp.Mul.make_args(numer) if isinstance(f, sp.Add)]
        if not sums:
            return [f"{op} {printer.doprint(term)}".strip()]
    widest = max(sums, key=lambda f: visible_width(printer.doprint(f)))
    rest = sp.Mul(*[f for f in sp.Mul.make_args(term)]) / widest
    rest = sp.sympify(rest)
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


# ============================================================================ prose
_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "kappa", "lambda", "mu", "nu",
          "xi", "pi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega", "Gamma", "Delta", "Xi", "Phi", "Psi", "Omega"}
_MATH_WORDS = {"O", "N", "E", "Var", "Cov", "Beta", "sum", "exp", "log", "sqrt", "oo", "inf", "eps", "d_head", "tau_bar",
               "l_mn", "a_mn", "e_i", "e_n", "e_m", "q_m", "k_n", "v_n", "nu_1", "nu_2", "S_2", "Xi", "W", "X"} | _GREEK
_TOKEN = re.compile(
    r"(?P<word>[A-Za-z]+(?:_(?:\{[^}]*\}|[A-Za-z0-9]+))*(?:\^(?:\{[^}]*\}|[A-Za-z0-9]+))?(?:_(?:\{[^}]*\}|[A-Za-z0-9]+))?)"
    r"|(?P<num>\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
    r"|(?P<op>->|<<|>>|<=|>=|!=|==|[-+*/=<>|^~])"
    r"|(?P<open>[(\[])|(?P<close>[)\]])"
    r"|(?P<space>\s+)|(?P<other>.)"
)
_ENGLISH_SINGLE = {"a", "A", "I"}


def _math_ident(word: str, notation: Notation) -> str:
    """One ASCII identifier (``tau_bar^2``, ``sigma_e``, ``a_mn``) as LaTeX."""
    if word == "sum_sq":
        return notation["S_2"]
    sup = ""
    m = re.match(r"^(.*?)(?:(\^(?:\{[^}]*\}|[A-Za-z0-9]+))(_(?:\{[^}]*\}|[A-Za-z0-9]+))?)?$", word)
    core, sup_part, post_sub = m.group(1), m.group(2), m.group(3)
    if sup_part:
        inner = sup_part[1:]
        inner = inner[1:-1] if inner.startswith("{") else inner
        sup = "^{" + _math_text(inner, notation) + "}"
    table = notation.as_dict()
    key = {"eps": "ln_eps", "epsilon": "ln_eps", "tau_bar": "tau_bar", "d_head": "d_head", "d_h": "d_head",
           "sigma_e": "sigma_embed", "tau": "tau", "nu_1": "nu_1", "nu_2": "nu_2", "S_2": "S_2", "Xi": "Xi",
           "delta": "delta", "rho": "rho", "d": "d_model", "H": "n_heads", "m": "m", "n": "n", "c": "c", "D": "D",
           "X": "X", "s": "s", "x": "x", "e": "e", "q": "q", "k": "k", "v": "v", "z": "z", "o": "o", "W": "W"}.get(core)
    if key is None and core in _ALIASES:
        key = _ALIASES[core]
    if key is None and core in SIGMA_FIELDS:
        key = core
    if key is not None:
        tex = table[key]
    elif core in ("oo", "inf"):
        tex = r"\infty"
    elif core in ("sum", "exp", "log", "sqrt", "chi"):
        tex = {"sum": r"\sum", "exp": r"\exp", "log": r"\log", "sqrt": r"\sqrt", "chi": r"\chi"}[core]
    elif core in ("Var", "Cov", "E"):
        tex = table[core]
    elif core == "Beta":
        tex = r"\mathrm{Beta}"
    elif core == "N":
        tex = r"\mathcal{N}"
    elif "_" in core:
        base, sub = core.split("_", 1)
        sub = sub[1:-1] if sub.startswith("{") else sub
        base_tex = _math_ident(base, notation)
        sub_tex = _math_text(sub, notation) if len(sub) > 1 and not re.fullmatch(r"[a-z]{2}", sub) else sub
        if re.fullmatch(r"[a-z]{2}", sub):
            sub_tex = _math_ident(sub[0], notation) + _math_ident(sub[1], notation)
        tex = f"{base_tex}_{{{sub_tex}}}"
    elif core in _GREEK:
        tex = "\\" + core
    else:
        tex = core
    if post_sub:
        inner = post_sub[1:]
        inner = inner[1:-1] if inner.startswith("{") else inner
        tex = "{" + tex + sup + "}_{" + _math_text(inner, notation) + "}"
        sup = ""
    if sup and re.search(r"[_^]", tex):
        tex = "{" + tex + "}"
    return tex + sup


_OPS = {".": r"\cdot", "->": r"\to", "<<": r"\ll", ">>": r"\gg", "<=": r"\le", ">=": r"\ge", "!=": r"\ne", "==": "=",
        "*": r"\,", "|": r"\lvert ", "~": r"\sim"}


def _math_text(text: str, notation: Notation) -> str:
    """ASCII math (``O(tau_bar^2 delta^2)``) as LaTeX math, without delimiters."""
    out = []
    for tok in _TOKEN.finditer(text):
        kind, value = tok.lastgroup, tok.group()
        if kind == "word":
            out.append(_math_ident(value, notation) + " ")
        elif kind == "op":
            out.append(_OPS.get(value, value) + " ")
        elif kind == "space":
            continue
        else:
            out.append(_OPS.get(value, value) + (" " if value == "." else ""))
    tex = "".join(out).strip()
    tex = re.sub(r"\\lvert\s*([^|]*?)\\lvert", r"\\lvert \1\\rvert", tex)
    return tex


def escape(text: str) -> str:
    """Plain text safe for LaTeX."""
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(table.get(ch, ch) for ch in text)


def _english_identifier(word: str) -> bool:
    """``vocab_size``, ``excess_kurtosis``: a code name, not math."""
    parts = word.split("_")
    return len(parts) > 1 and word not in _MATH_WORDS and word != "sum_sq" and all(len(p) >= 3 and p.isalpha() for p in parts) \
        and parts[0] not in _GREEK


def tt(text: str) -> str:
    """Code in typewriter type; the underscore from the typewriter font itself (no TS1 font needed)."""
    return "\\texttt{" + escape(text).replace("\\_", "\\char95{}") + "}"


def prose(text: str, notation: Notation) -> str:
    """A plain-text sentence with ASCII math (``relative O(eps/sigma_e^2)``) as LaTeX.

    Identifiers we know (``tau_bar``, ``sigma_e``, ``a_mn``, single letters), numbers
    and operators become math runs in ``$...$``; English words stay text.
    """
    tokens = [(t.lastgroup, t.group()) for t in _TOKEN.finditer(text)]

    def neighbour(i: int, step: int):
        j = i + step
        while 0 <= j < len(tokens) and tokens[j][0] == "space":
            j += step
        return tokens[j] if 0 <= j < len(tokens) else ("space", " ")

    def is_math_word(value: str) -> bool:
        core = re.split(r"[\^]", value)[0]
        if _english_identifier(value) or core in _ENGLISH_SINGLE:
            return False
        return core in _MATH_WORDS or len(re.sub(r"_.*", "", core)) == 1 or "_" in core or "^" in value

    def is_math(i: int) -> bool:
        kind, value = tokens[i]
        if kind == "word":
            if len(value) == 1 and i + 1 < len(tokens) and tokens[i + 1][1] == "." \
                    and not (i + 2 < len(tokens) and "_" in tokens[i + 2][1]):
                return False  # r.m.s.
            if len(value) == 1 and i and tokens[i - 1][1] == "." and not "_" in tokens[i - 2][1]:
                return False
            return is_math_word(value)
        if kind == "num":
            return True
        if kind in ("open", "close"):
            k, v = neighbour(i, 1 if kind == "open" else -1)
            return k in ("num", "op", kind) or (k == "word" and is_math_word(v))
        if kind == "op":
            around = [neighbour(i, -1), neighbour(i, 1)]
            return any(k == "num" or (k == "word" and is_math_word(v)) or (k in ("op", "open", "close") and kind != k)
                       for k, v in around)
        if kind == "other" and value == ".":
            return i and i + 1 < len(tokens) and "_" in tokens[i - 1][1] and "_" in tokens[i + 1][1]
        return False

    flags = [is_math(i) for i in range(len(tokens))]
    out, run = [], []

    def flush():
        if run:
            # trailing spaces/commas out of the run
            body = "".join(run).rstrip()
            tail = "".join(run)[len(body):]
            out.append("$" + _math_text(body, notation) + "$" + tail)
            run.clear()

    for i, (kind, value) in enumerate(tokens):
        if flags[i]:
            run.append(value)
            continue
        depth = sum(1 for r in run if r in "([") - sum(1 for r in run if r in ")]")
        if run and kind == "other" and value == "," and depth > 0:
            run.append(value)
            continue
        if run and (kind == "space" or (kind == "other" and value == ",")):
            nxt = next((j for j in range(i + 1, len(tokens)) if tokens[j][0] != "space"), None)
            if nxt is not None and flags[nxt] and kind == "space":
                run.append(value)
                continue
        flush()
        out.append(tt(value) if kind == "word" and _english_identifier(value) else escape(value))
    flush()
    return "".join(out)


# ============================================================================ steps
_LEVEL_WORDS = {"exact": "exact", "asymptotic": "asymptotic", "approximate": "approximate"}

# The left-hand side of each quantity, by tap suffix: the coordinate the law describes.
_SUBJECT = {
    "hook_resid_pre": "<<x>>_{<<m>>,i}",
    "ln1.hook_normalized": "<<e>>_{<<m>>,i}",
    "attn.hook_q": "<<q>>_{<<m>>,j}",
    "attn.hook_k": "<<k>>_{<<n>>,j}",
    "attn.hook_v": "<<v>>_{<<n>>,j}",
    "attn.hook_attn_scores": "<<l>>_{<<m>><<n>>}",
    "attn.hook_pattern": "<<a>>_{<<m>><<n>>}",
    "attn.hook_z": "<<z>>_{<<m>>,j}",
    "hook_attn_out": "<<o>>_{<<m>>,i}",
    "hook_resid_mid": "<<x>>'_{<<m>>,i}",
}

_HEADINGS = {
    "hook_resid_pre": "Embedding",
    "ln1.hook_normalized": "LayerNorm",
    "attn.hook_q": "Query projection",
    "attn.hook_k": "Key projection",
    "attn.hook_v": "Value projection",
    "attn.hook_attn_scores": "Query--key product (attention logits)",
    "attn.hook_pattern": "Softmax (attention weights)",
    "attn.hook_z": "Value aggregation",
    "hook_attn_out": "Output projection",
    "hook_resid_mid": "Residual connection",
}


def _quantity_lhs(name: str, subject: str) -> str:
    return {
        "mean": f"<<E>>[{subject}]",
        "var": f"<<Var>>[{subject}]",
        "sum_sq": "<<E>>\\Bigl[\\sum_{<<n>>\\le <<m>>} <<a>>_{<<m>><<n>>}^{2}\\Bigr]",
        "excess_kurtosis": f"<<kurt>>[{subject}]",
        "cov_coordinates": f"<<Cov>>[{subject.replace(',i}', ',i}').replace(',i', ',i')}, {subject.replace(',i', ',j')}]",
        "coupling": "<<Xi>>(<<m>>)",
    }.get(name, f"\\mathrm{{{escape(name)}}}[{subject}]")


def _form_lhs(name: str, subject: str) -> tuple[str, str, str]:
    """(intertext, lhs, suffix) for an alternative form."""
    if name == "nu_1":
        return "closed form (upper incomplete gamma function):", "<<nu_1>>", ""
    if name == "nu_2":
        return "", "<<nu_2>>", ""
    if name.startswith("nu_1, small"):
        return "small-$<<ln_eps>>$ series:", "<<nu_1>>", r" + O\bigl(<<ln_eps>>^{3}\bigr)"
    if name == "var (n != m)":
        return "for one key $<<n>> \\ne <<m>>$:", f"<<Var>>[{subject}]", ""
    if name == "sum_sq series":
        return "small-logit-variance series:", "<<S_2>>(<<m>>)", r" + O\bigl(<<tau_bar>>^{6}\bigr)"
    if name == "m*sum_sq, m -> oo":
        return "large-$<<m>>$ limit (law of large numbers):", r"\lim_{<<m>>\to\infty} <<m>>\, <<S_2>>(<<m>>)", ""
    if name == "var series":
        return "small-logit-variance series:", f"<<Var>>[{subject}]", r" + O\bigl(<<tau_bar>>^{6}\bigr)"
    if name == "var, m -> oo":
        return "large-$<<m>>$ form, relative error $O(1/<<m>>)$:", f"<<Var>>[{subject}]", ""
    return escape(name) + ":", f"\\mathrm{{{escape(name)}}}", ""


def _label_part(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-")


def label(tap: str, *parts: str) -> str:
    """``eq:<tap>:<part>:...`` -- equation labels derived from the tap name."""
    return "eq:" + ":".join([tap] + [_label_part(p) for p in parts])


def _equation_rows(lhs: str, rel: str, expr: sp.Expr, printer: Printer, tag: str, suffix: str = "") -> list[str]:
    """Rows of an ``align`` for ``lhs rel expr``, broken, numbered and labelled on the last row."""
    lines = break_lines(expr, printer, LINE_WIDTH - 0.4 * visible_width(lhs) if visible_width(lhs) > 20 else LINE_WIDTH)
    lines[-1] += suffix
    rows = [f"{lhs} &{rel} {lines[0]}"]
    rows += [f"&\\quad {line}" for line in lines[1:]]
    rows = [r + r" \nonumber" for r in rows[:-1]] + [rows[-1] + f" \\label{{{tag}}}"]
    return rows


def _align(rows: list[str]) -> str:
    return "\\begin{align}\n" + " \\\\\n".join(rows) + "\n\\end{align}"


def _level_sentence(result: StepResult, notation: Notation) -> str:
    text = f"\\emph{{{_LEVEL_WORDS[result.level.value]}}}"
    if result.error:
        error = result.error
        delta = re.search(r"delta = (.+)$", error)
        if delta and not re.fullmatch(r"[-+0-9.e]+", delta.group(1).strip()):
            error = error[: delta.start()] + "delta as in the derived constants"
        text += "; error " + prose(error, notation)
    text += "; regime: " + prose(result.regime, notation) + "."
    return text


def _assumption_list(result: StepResult, notation: Notation) -> str:
    if not result.assumptions:
        return ""
    items = "\n".join(f"  \\item[$\\bullet$] {prose(a, notation)}" for a in result.assumptions)
    return "\\begin{itemize}\\setlength{\\itemsep}{0pt}\n" + items + "\n\\end{itemize}"


def step_snippet(step, notation: Notation | Mapping | None = None, spec: ModelSpec | None = None) -> str:
    """One step (a `theory.derive` ``Step``: both levels) as an ``\\input``-able subsection.

    Needs ``amsmath`` and ``amssymb``. Labels: ``sec:<tap>``, ``eq:<tap>:derivation:<i>``,
    ``eq:<tap>:leading:<quantity>``, ``eq:<tap>:best:<quantity>``, ``eq:<tap>:form:<name>``.
    """
    from . import _latex_text

    notation = Notation.coerce(notation)
    printer = Printer(notation)
    tap = step.tap
    suffix = tap.split(".", 2)[-1] if tap.startswith("blocks.") else tap
    subject = _SUBJECT.get(suffix, escape(step.best.symbol))
    heading = _HEADINGS.get(suffix, escape(step.best.title))
    parts = [
        f"% {tap}: generated by `python -m theory latex`; needs \\usepackage{{amsmath,amssymb}}",
        f"\\subsection{{{heading}}}\\label{{sec:{tap}}}\n\\noindent Tap {tt(tap)}.",
    ]
    derivation = _latex_text.DERIVATIONS.get(suffix)
    if derivation:
        parts.append(notation.fill(_latex_text.number(derivation, tap, spec)))

    leading, best = step.leading, step.best
    rows = []
    rows.append("\\intertext{\\emph{Leading order (the paper)}, " + prose(leading.title.split(" (the paper)")[0], notation) + ":}")
    for name, expr in leading.quantities.items():
        rows += _equation_rows(notation.fill(_quantity_lhs(name, subject)), "=", expr, printer, label(tap, "leading", name))
    rows.append("\\intertext{\\emph{This work}:}")
    for name, expr in best.quantities.items():
        rows += _equation_rows(notation.fill(_quantity_lhs(name, subject)), "=", expr, printer, label(tap, "best", name))
    parts.append(_align_with_intertext(rows))
    if best.forms:
        form_rows = []
        rewritten = False
        for name, expr in best.forms.items():
            inter, lhs, tail = _form_lhs(name, subject)
            if inter:
                form_rows.append("\\intertext{" + notation.fill(inter) + "}")
            shorter = in_tau_bar(expr, spec, printer) if spec is not None else None
            rewritten |= shorter is not None
            form_rows += _equation_rows(notation.fill(lhs), "=", expr if shorter is None else shorter, printer,
                                        label(tap, "form", name), notation.fill(tail))
        where = notation.fill(" (written with the mean logit variance $<<tau_bar>>^{2}$ of "
                              "equation~\\eqref{eq:constants:tau} where that is shorter)") if rewritten else ""
        parts.append(f"Alternative forms of our result{where}:\n" + _align_with_intertext(form_rows))
    parts.append("\\paragraph{Level.} Paper: " + _level_sentence(leading, notation)
                 + " This work: " + _level_sentence(best, notation))
    assumptions = [a for a in best.assumptions]
    if assumptions:
        parts.append("\\paragraph{Assumptions (this work).}\n" + _assumption_list(best, notation))
    extra = {k: v for k, v in best.definitions.items() if k not in _latex_text.DEFINED_ELSEWHERE}
    if extra:
        parts.append("\\paragraph{Notes.} " + " ".join(
            f"{prose(k.replace('_', ' ') if _english_identifier(k) else k, notation)}: {prose(v, notation)}."
            for k, v in extra.items()))
    return "\n\n".join(parts) + "\n"


def _align_with_intertext(rows: list[str]) -> str:
    """``align`` whose rows may be ``\\intertext{...}``; a leading one becomes a sentence."""
    lead = ""
    if rows and rows[0].startswith("\\intertext{"):
        lead = rows[0][len("\\intertext{"):-1] + "\n"
        rows = rows[1:]
    while rows and rows[-1].startswith("\\intertext"):
        rows = rows[:-1]
    out = []
    for i, row in enumerate(rows):
        last = i == len(rows) - 1
        out.append(row if row.startswith("\\intertext") or last else row + " \\\\")
    return lead + "\\begin{align}\n" + "\n".join(out) + "\n\\end{align}"


# ============================================================================ document
PACKAGES = r"""\usepackage[margin=1.1in]{geometry}
\usepackage{amsmath,amssymb}
\usepackage{booktabs}
\usepackage{graphicx}
\usepackage[hidelinks]{hyperref}
\allowdisplaybreaks[2]"""

PAPER = ("Chi, Fan, Chen, Rudnicky, Ramadge, \\emph{Latent Positional Information is in the Self-Attention "
         "Variance of Transformer Language Models Without Positional Embeddings}, ACL 2023, arXiv:2305.13571.")


def _value(expr, printer: Printer) -> str:
    return printer.doprint(sp.sympify(expr))


def model_section(spec: ModelSpec, notation: Notation) -> str:
    """The model, the measure, the two levels and the assumptions."""
    scale = "<<d_head>>^{-1}" if spec.attn_scale == "linear" else "<<d_head>>^{-1/2}"
    text = r"""\section{Model and assumptions}\label{sec:model}
We study the first layer of a causal, pre-LayerNorm transformer without positional
embeddings at random initialisation. Inputs are i.i.d.\ over positions $<<m>> = 1, \dots, <<seq_len>>$, and per head
\begin{align}
<<x>>_{<<m>>} &\sim \mathcal{N}\bigl(0, <<sigma_embed>>^{2} I_{<<d_model>>}\bigr), \qquad
<<e>>_{<<m>>} = \mathrm{LN}(<<x>>_{<<m>>}), \label{eq:model:input}\\
<<q>>_{<<m>>} &= <<W>>_{q} <<e>>_{<<m>>}, \qquad <<k>>_{<<n>>} = <<W>>_{k} <<e>>_{<<n>>}, \qquad <<v>>_{<<n>>} = <<W>>_{v} <<e>>_{<<n>>}, \label{eq:model:projections}\\
<<l>>_{<<m>><<n>>} &= <<s>>\, <<q>>_{<<m>>}^{\top} <<k>>_{<<n>>}, \qquad <<s>> = @SCALE, \qquad
<<a>>_{<<m>><<n>>} = \frac{e^{<<l>>_{<<m>><<n>>}}}{\sum_{<<n>>' \le <<m>>} e^{<<l>>_{<<m>><<n>>'}}}, \quad <<n>> \le <<m>>, \label{eq:model:attention}\\
<<z>>_{<<m>>} &= \sum_{<<n>> \le <<m>>} <<a>>_{<<m>><<n>>} <<v>>_{<<n>>}, \qquad
<<o>>_{<<m>>} = <<W>>_{o} <<z>>_{<<m>>}, \qquad <<x>>'_{<<m>>} = <<x>>_{<<m>>} + <<o>>_{<<m>>}. \label{eq:model:output}
\end{align}
The entries of $<<W>>_{q}, <<W>>_{k}, <<W>>_{v}$ (of size $<<d_head>> \times <<d_model>>$ per head, $<<d_head>> = <<d_model>>/<<n_heads>>$) and
$<<W>>_{o}$ ($<<d_model>> \times <<d_model>>$) are independent, $\mathcal{N}(0, <<sigma_q>>^{2})$, $\mathcal{N}(0, <<sigma_k>>^{2})$,
$\mathcal{N}(0, <<sigma_v>>^{2})$ and $\mathcal{N}(0, <<sigma_o>>^{2})$; biases are zero and LayerNorm gains one, as at
initialisation. All expectations are \emph{annealed}: over weights and inputs together (a fresh
network per sample). ``$<<Var>>$'' is the variance of one coordinate; coordinates are exchangeable.

Every step is given at two levels. The \emph{leading order} is the paper's \cite{chi2023}:
the LayerNorm output is $\mathcal{N}(0,1)$ per coordinate, attention is uniform ($<<a>>_{<<m>><<n>>} = 1/<<m>>$) and the
weights are independent of the values they average. \emph{This work} keeps the LayerNorm
$<<ln_eps>>$, the non-uniform softmax and the coupling between the weights and the values; each result
states whether it is exact, asymptotic or approximate, with its error and regime.
"""
    return notation.fill(text.replace("@SCALE", scale))


def _constants(spec: ModelSpec):
    from .steps import NU1, LayerOne

    ctx = LayerOne.from_spec(spec, with_forms=False)
    return ctx, ctx.nu1 == NU1


def constants_section(spec: ModelSpec, notation: Notation) -> str:
    """Derived constants: d_h, s, D, c, nu_1, nu_2, rho^2, tau_bar^2, delta, with values."""
    printer = Printer(notation)
    ctx, nu_symbolic = _constants(spec)
    c = ctx.d * ctx.eps / ctx.sigma_e**2
    scale = "<<d_head>>^{-1}" if spec.attn_scale == "linear" else "<<d_head>>^{-1/2}"
    rows = [
        (r"<<d_head>> &= <<d_model>>/<<n_heads>>", ctx.d_head, "d_head"),
        (f"<<s>> &= {scale}", ctx.scale, "s"),
        (r"<<D>> &= <<d_model>> - 1", ctx.sphere_dim, "D"),
        (r"<<c>> &= <<d_model>> <<ln_eps>>/<<sigma_embed>>^{2}", c, "c"),
    ]
    if nu_symbolic:
        rows.append((r"<<nu_1>> &= <<E>>\Bigl[\frac{<<X>>}{<<X>>+<<c>>}\Bigr], \quad <<nu_2>> = <<E>>\Bigl[\Bigl(\frac{<<X>>}{<<X>>+<<c>>}\Bigr)^{2}\Bigr],"
                     r" \quad <<X>> \sim \chi^{2}_{<<d_model>>-1}", None, "nu"))
    else:
        rows.append((r"<<nu_1>> &= <<E>>\Bigl[\frac{<<X>>}{<<X>>+<<c>>}\Bigr], \quad <<X>> \sim \chi^{2}_{<<d_model>>-1}", ctx.nu1, "nu"))
        rows.append((r"<<nu_2>> &= <<E>>\Bigl[\Bigl(\frac{<<X>>}{<<X>>+<<c>>}\Bigr)^{2}\Bigr]", ctx.nu2, "nu2"))
    rows.append((r"<<rho>>^{2} &= <<E>>\lVert <<e>>\rVert^{2} = <<d_model>> <<nu_1>>", ctx.rho2, "rho"))
    rows.append((r"<<tau_bar>>^{2} &= <<s>>^{2}<<sigma_q>>^{2}<<sigma_k>>^{2}<<d_head>><<rho>>^{4}", ctx.tau2_bar, "tau"))
    if sp.sympify(ctx.eps) != 0:
        rows.append((r"<<delta>> &= \frac{<<c>>}{<<d_model>>-1+<<c>>}\sqrt{\frac{2}{<<d_model>>-1}}",
                     c / (ctx.d - 1 + c) * sp.sqrt(2 / (ctx.d - 1)), "delta"))
    out = []
    for template, value, name in rows:
        lhs = notation.fill(template)
        if value is None:
            out.append(lhs + f" \\label{{eq:constants:{name}}}")
            continue
        value = sp.sympify(value)
        if not value.free_symbols and not value.is_Integer and not value.is_Rational:
            value = sp.N(value, 6)
        lines = break_lines(value, printer, LINE_WIDTH - 0.5 * visible_width(lhs.split("&")[1]))
        first = f"{lhs} = {lines[0]}"
        rest = [f"&\\quad {l}" for l in lines[1:]]
        block = [first] + rest
        block = [b + " \\nonumber" for b in block[:-1]] + [block[-1] + f" \\label{{eq:constants:{name}}}"]
        out += block
    p_note = "" if nu_symbolic else ""
    text = (
        "\\subsection{Derived constants}\\label{sec:constants}\n"
        + notation.fill("The LayerNorm output has squared norm $\\lVert <<e>>\\rVert^{2} = <<d_model>> <<X>>/(<<X>>+<<c>>)$ "
                        "(equation~\\eqref{eq:blocks.0.ln1.hook_normalized:derivation:norm}); the constants of this specification are\n")
        + "\\begin{align}\n" + " \\\\\n".join(out) + "\n\\end{align}\n" + p_note
    )
    return text


def symbol_table(spec: ModelSpec, notation: Notation) -> str:
    """Table of symbols: ours, the meaning, the value in this specification."""
    printer = Printer(notation)
    values = {}
    for field in ("d_model", "n_heads", "seq_len", "sigma_embed", "sigma_q", "sigma_k", "sigma_v", "sigma_o", "ln_eps"):
        values[field] = (_value(getattr(spec, field), printer), field)
    values["d_head"] = (_value(spec.d_head, printer), "")
    rows = []
    for key in _MEANING_ORDER:
        value, field = values.get(key, ("", ""))
        name = tt(field) if field else ""
        rows.append(f"${notation[key]}$ & {name} & {notation.fill(_MEANINGS[key])} & {'$' + value + '$' if value else ''} \\\\")
    for key in ("E", "Var", "Cov"):
        meaning = {"E": "expectation (annealed: over weights and inputs)", "Var": "variance of one coordinate",
                   "Cov": "covariance"}[key]
        rows.append(f"${notation[key]}$ & & {meaning} & \\\\")
    return (
        "\\subsection{Symbols}\\label{sec:symbols}\n"
        "\\begin{table}[!htbp]\n\\centering\n\\small\n"
        "\\begin{tabular}{@{}llp{0.48\\linewidth}l@{}}\n\\toprule\n"
        "symbol & spec field & meaning & value \\\\\n\\midrule\n" + "\n".join(rows)
        + "\n\\bottomrule\n\\end{tabular}\n\\caption{Symbols of the derivation and their values in this specification.}"
        "\\label{tab:symbols}\n\\end{table}\n"
    )


def summary_table(derivation, notation: Notation) -> str:
    """One row per step: where the paper's and our result are, and our level."""
    rows = []
    for step in derivation.steps:
        key = "var" if "var" in step.best.quantities else next(iter(step.best.quantities))
        lead_key = key if key in step.leading.quantities else next(iter(step.leading.quantities))
        suffix = step.tap.split(".", 2)[-1]
        rows.append(
            f"{_HEADINGS.get(suffix, escape(step.best.title))} & {tt(suffix)} & "
            f"\\eqref{{{label(step.tap, 'leading', lead_key)}}} & \\eqref{{{label(step.tap, 'best', key)}}} & "
            f"{step.best.level.value} \\\\"
        )
    return (
        "\\begin{table}[!htbp]\n\\centering\n\\small\n\\begin{tabular}{@{}llccl@{}}\n\\toprule\n"
        "step & tap & paper & this work & level \\\\\n\\midrule\n" + "\n".join(rows)
        + "\n\\bottomrule\n\\end{tabular}\n\\caption{Where each step's result is: the paper's leading order "
        "beside ours, and how far ours can be trusted.}\\label{tab:summary}\n\\end{table}\n"
    )


def body(derivation, notation: Notation | Mapping | None = None, depth: bool | str = False) -> str:
    """Everything between ``\\begin{document}`` and ``\\end{document}`` except the title:
    ``\\input``-able into a paper or a report (needs amsmath, amssymb, booktabs).
    ``depth=True`` adds the depth recursion (`theory._latex_depth.depth_section`; or pass
    that section's text)."""
    notation = Notation.coerce(notation)
    spec = derivation.spec
    parts = [
        "% Layer-1 derivation, generated by `python -m theory latex`.",
        "% Needs \\usepackage{amsmath,amssymb,booktabs}.",
        model_section(spec, notation),
        "\\section{Notation}\\label{sec:notation}",
        symbol_table(spec, notation),
        constants_section(spec, notation),
        "\\section{Derivation, step by step}\\label{sec:steps}",
        summary_table(derivation, notation),
    ]
    for step in derivation.steps:
        parts.append(step_snippet(step, notation, spec))
    if depth:
        from ._latex_depth import depth_section

        parts.append(depth if isinstance(depth, str) else depth_section(spec, notation))
    parts.append("\\begin{thebibliography}{1}\n\\bibitem{chi2023} " + PAPER + "\n\\end{thebibliography}")
    return "\n\n".join(parts) + "\n"


def document(derivation, notation: Notation | Mapping | None = None, depth: bool | str = False) -> str:
    """A self-contained ``derivation.tex`` (compiles with pdflatex, twice for references)."""
    notation = Notation.coerce(notation)
    spec = derivation.spec
    subtitle = "symbolic specification" if spec.is_symbolic else "numeric specification"
    return (
        "\\documentclass[10pt]{article}\n" + PACKAGES + "\n"
        "\\title{Positional information in the variance of a causal transformer without positional "
        + ("embeddings: the layer-1 derivation and the depth recursion}\n" if depth else "embeddings: the layer-1 derivation}\n")
        +
        f"\\author{{Generated by \\texttt{{python -m theory latex}} ({subtitle})}}\n\\date{{}}\n"
        "\\begin{document}\n\\maketitle\n\n" + body(derivation, notation, depth) + "\n\\end{document}\n"
    )


def step_filename(tap: str) -> str:
    return f"{tap}.tex"


# The files `write` puts into its folder (steps/ holds one snippet per step).
LATEX_OUTPUTS = ("derivation.tex", "derivation-body.tex", "depth.tex", "notation.json", "steps")


def write(derivation, out: str | Path, notation: Notation | Mapping | None = None, depth: bool | str = False) -> dict[str, str]:
    """Write ``derivation.tex``, ``derivation-body.tex``, ``steps/<tap>.tex`` and ``notation.json``
    (with ``depth``: the depth section in both and as ``depth.tex``)."""
    notation = Notation.coerce(notation)
    out = Path(out)
    (out / "steps").mkdir(parents=True, exist_ok=True)
    written = {}
    if depth is True:  # one recursion for the three files
        from ._latex_depth import depth_section

        depth = depth_section(derivation.spec, notation)
    # each file is replaced atomically: a killed run leaves old or new files, never half of one
    doc = out / "derivation.tex"
    atomic_write_text(doc, document(derivation, notation, depth))
    written["document"] = str(doc)
    b = out / "derivation-body.tex"
    atomic_write_text(b, body(derivation, notation, depth))
    written["body"] = str(b)
    if depth:
        section = out / "depth.tex"
        atomic_write_text(section, depth)
        written["depth"] = str(section)
    for step in derivation.steps:
        path = out / "steps" / step_filename(step.tap)
        atomic_write_text(path, step_snippet(step, notation, derivation.spec))
        written[step.tap] = str(path)
    n = out / "notation.json"
    atomic_write_text(n, json.dumps(notation.as_dict(), indent=1) + "\n")
    written["notation"] = str(n)
    return written


# ============================================================================ notebooks
def result_latex(result: StepResult, notation: Notation | Mapping | None = None) -> str:
    """One `StepResult` as an ``aligned`` block (no math delimiters): its quantities, then its forms."""
    notation = Notation.coerce(notation)
    printer = Printer(notation)
    suffix = result.tap.split(".", 2)[-1]
    subject = notation.fill(_SUBJECT[suffix]) if suffix in _SUBJECT else result.symbol
    rows = []
    for name, expr in result.quantities.items():
        lines = break_lines(expr, printer)
        rows.append(f"{notation.fill(_quantity_lhs(name, subject)) if suffix in _SUBJECT else _plain_lhs(name, subject, notation)} &= {lines[0]}")
        rows += [f"&\\quad {line}" for line in lines[1:]]
    for name, expr in result.forms.items():
        # the form's own left-hand side (no text with inline math: MathJax has no $ inside \text)
        _, lhs, tail = _form_lhs(name, subject)
        lines = break_lines(expr, printer)
        lines[-1] += notation.fill(tail)
        rows.append(f"{notation.fill(lhs)} &= {lines[0]}")
        rows += [f"&\\quad {line}" for line in lines[1:]]
    return "\\begin{aligned}\n" + " \\\\\n".join(rows) + "\n\\end{aligned}"


def _plain_lhs(name: str, subject: str, notation: Notation) -> str:
    return notation.fill(_quantity_lhs(name, subject))


def result_repr(result: StepResult) -> str:
    """What Jupyter shows for a `StepResult`: the tap, the level, the equations."""
    head = f"\\mathtt{{{escape(result.tap)}}}\\ \\text{{({result.level.value})}}"
    return f"$$\\begin{{gathered}}{head}\\\\\n{result_latex(result)}\\end{{gathered}}$$"


def derivation_repr(derivation) -> str:
    """What Jupyter shows for a whole `Derivation`: every step, paper and ours."""
    blocks = []
    for step in derivation.steps:
        blocks.append(
            f"\\mathtt{{{escape(step.tap)}}}\\\\\n\\text{{paper ({step.leading.level.value}):}}\\;"
            f"{result_latex(step.leading)}\\qquad\\text{{ours ({step.best.level.value}):}}\\;{result_latex(step.best)}"
        )
    return "$$\\begin{gathered}\n" + " \\\\[1ex]\n".join(blocks) + "\n\\end{gathered}$$"


# ============================================================================ facade
def _derivation(spec_or_derivation):
    from .derive import Derivation, derive

    if isinstance(spec_or_derivation, Derivation):
        return spec_or_derivation
    if spec_or_derivation is None or isinstance(spec_or_derivation, ModelSpec):
        return derive(spec_or_derivation)
    raise TypeError(f"expected a ModelSpec or a Derivation, got {type(spec_or_derivation).__name__}")


def latex(spec=None, *, notation=None, step=None, part: str = "document", out=None, depth: bool = False) -> str:
    """LaTeX for papers, as strings.

    ``spec``: a `ModelSpec` (default GPT-2 small) or a `Derivation` from `theory.derive`
    (reused, not derived again). ``notation``: a dict or a JSON file mapping our symbols to
    yours, e.g. ``{"sigma_q": r"\\sigma_{Q}", "d_model": "D", "E": r"\\operatorname{E}"}``
    (keys: ``theory._latex.DEFAULT_NOTATION``). ``step``: a tap (``"blocks.0.attn.hook_z"``
    or ``("hook_z", 0)``) to get that step's ``\\input``-able snippet. ``part``:
    ``"document"`` (self-contained ``derivation.tex``), ``"body"`` (for ``\\input``),
    ``"symbols"`` (the table of symbols). ``out``: a directory to also write
    ``derivation.tex``, ``derivation-body.tex``, ``steps/<tap>.tex`` and ``notation.json``.
    ``depth``: add the depth recursion of every layer (``part="depth"`` returns that section
    alone; with ``out`` it is also written as ``depth.tex``).

    >>> from theory import ModelSpec, derive, latex
    >>> d = derive(ModelSpec(d_model=64, n_heads=4))
    >>> tex = latex(d, notation={"sigma_v": r"\\sigma_{V}"}, step=("hook_z", 0))
    >>> "\\\\sigma_{V}" in tex and "\\\\label{eq:blocks.0.attn.hook_z:best:var}" in tex
    True
    """
    derivation = _derivation(spec)
    notation = Notation.coerce(notation)
    if part not in ("document", "body", "symbols", "depth"):
        raise ValueError(f"part must be 'document', 'body', 'symbols' or 'depth'; got {part!r}")
    section = False
    if depth or part == "depth":
        from ._latex_depth import depth_section

        section = depth_section(derivation.spec, notation)  # one recursion for every use below
    if out is not None:
        write(derivation, out, notation, depth=section)
    if step is not None:
        return step_snippet(derivation[step], notation, derivation.spec)
    if part == "depth":
        return section
    if part == "document":
        return document(derivation, notation, section)
    if part == "body":
        return body(derivation, notation, section)
    return symbol_table(derivation.spec, notation)
