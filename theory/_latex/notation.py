"""The notation: our symbols -> the user's LaTeX, loaded from a dict or a JSON file, validated.

Every piece of LaTeX goes through one :class:`Notation`, so a user who writes
``{"sigma_q": "\\sigma_{Q}", "d_model": "D", "E": "\\operatorname{E}"}`` once gets it in
every equation, the prose, the symbol table and the snippets. A value is a math-mode
fragment checked against an allowlist of characters and control sequences
(`check_notation_value`): no value can read a file, run a command or leave math mode.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .._outputs import shown
from ..spec import SYMBOL_NAMES

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

MEANINGS: dict[str, str] = {
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
MEANING_ORDER = (
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
SYMBOL_KEYS: dict[str, str] = {name: field for field, name in SYMBOL_NAMES.items()}
SYMBOL_KEYS.update({"m": "m", "nu_1": "nu_1", "nu_2": "nu_2", "tau2": "tau", "D": "D", "c": "c"})

# Short names a user may also write in a notation file.
ALIASES: dict[str, str] = {name: field for field, name in SYMBOL_NAMES.items() if name != field}
ALIASES.update({"\\mathbb{E}": "E", "expectation": "E", "d_h": "d_head", "eps": "ln_eps"})


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


def check_notation_value(key: str, value: str) -> None:
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
            canonical = ALIASES.get(key, key) if isinstance(key, str) else None
            if canonical not in table:
                raise ValueError(
                    f"notation: unknown symbol {shown(key, 40)}; allowed keys are {', '.join(DEFAULT_NOTATION)}"
                )
            if not isinstance(value, str) or not value.strip():
                raise ValueError(f"notation: {key!r} must map to a non-empty LaTeX string, got {shown(value)}")
            if len(value) > NOTATION_MAX_CHARS:
                raise ValueError(f"notation: {key!r} -> a value of {len(value)} characters; a symbol takes at most {NOTATION_MAX_CHARS}")
            check_notation_value(key, value)
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

