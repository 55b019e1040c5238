"""Prose: plain-text sentences with ASCII math (``relative O(eps/sigma_e^2)``) as LaTeX.

:func:`prose` turns the levels, errors, regimes and assumptions that results state in
ASCII into LaTeX: identifiers we know (``tau_bar``, ``sigma_e``, ``a_mn``), numbers and
operators become math runs in ``$...$`` in the user's notation; English words stay text,
code names (``vocab_size``) go into typewriter type (:func:`tt`); :func:`escape` makes
plain text safe.
"""

from __future__ import annotations

import re

from ..spec import SIGMA_FIELDS
from .notation import ALIASES, Notation

_GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "kappa", "lambda", "mu", "nu",
          "xi", "pi", "rho", "sigma", "tau", "phi", "chi", "psi", "omega", "Gamma", "Delta", "Xi", "Phi", "Psi", "Omega"}
_MATH_WORDS = {"O", "N", "E", "Var", "Cov", "Beta", "sum", "exp", "log", "sqrt", "cos", "sin", "oo", "inf", "eps", "d_head", "tau_bar",
               "l_mn", "a_mn", "e_i", "e_n", "e_m", "q_m", "k_n", "v_n", "nu_1", "nu_2", "S_2", "Xi", "W", "X"} | _GREEK
_TOKEN = re.compile(
    r"(?P<word>[A-Za-z]+(?:_(?:\{[^}]*\}|[A-Za-z0-9]+))*(?:\^(?:\{[^}]*\}|[A-Za-z0-9]+))?(?:_(?:\{[^}]*\}|[A-Za-z0-9]+))?"
    r"(?:'(?![A-Za-z]))*)"
    r"|(?P<num>\d+(?:\.\d+)?(?:e[-+]?\d+)?)"
    r"|(?P<op>->|<<|>>|<=|>=|!=|==|[-+*/=<>|^~])"
    r"|(?P<open>[(\[])|(?P<close>[)\]])"
    r"|(?P<space>\s+)|(?P<other>.)"
)
_ENGLISH_SINGLE = {"a", "A", "I"}
#: Names of laws that read as a Greek letter: text when a word such as "law" follows ("Gamma law").
_LAW_NAMES = {"Gamma", "Beta"}
_LAW_WORDS = {"law", "laws", "distribution", "distributions", "mixture", "function"}


def _math_ident(word: str, notation: Notation) -> str:
    """One ASCII identifier (``tau_bar^2``, ``sigma_e``, ``a_mn``, ``a_nk'``) as LaTeX."""
    stripped = word.rstrip("'")
    if stripped != word:  # primes: on the subscript's last index (a_nk' -> a_{nk'}), else on the symbol
        primes = "'" * (len(word) - len(stripped))
        tex = _math_ident(stripped, notation)
        return tex[:-1] + primes + "}" if "_" in stripped and "^" not in stripped and tex.endswith("}") else tex + primes
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
    if key is None and core in ALIASES:
        key = ALIASES[core]
    if key is None and core in SIGMA_FIELDS:
        key = core
    if key is not None:
        tex = table[key]
    elif core in ("oo", "inf"):
        tex = r"\infty"
    elif core in ("sum", "exp", "log", "sqrt", "chi", "cos", "sin"):
        tex = {"sum": r"\sum", "exp": r"\exp", "log": r"\log", "sqrt": r"\sqrt", "chi": r"\chi", "cos": r"\cos",
               "sin": r"\sin"}[core]
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
    parens: list[bool] = []  # per open bracket: whether it is sqrt's argument (printed as braces)
    after_sqrt = False
    for tok in _TOKEN.finditer(text):
        kind, value = tok.lastgroup, tok.group()
        if kind == "space":
            continue
        if kind == "open":
            parens.append(after_sqrt and value == "(")
            out.append("{" if parens[-1] else value)
        elif kind == "close" and parens:
            out.append("}" if parens.pop() and value == ")" else value)
        elif kind == "word":
            out.append(_math_ident(value, notation) + ("" if value == "sqrt" else " "))
        elif kind == "op":
            out.append(_OPS.get(value, value) + " ")
        else:
            out.append(_OPS.get(value, value) + (" " if value == "." else ""))
        after_sqrt = kind == "word" and value == "sqrt"
    tex = "".join(out).strip()
    tex = re.sub(r"\\lvert\s*([^|]*?)\\lvert", r"\\lvert \1\\rvert", tex)
    return tex


def escape(text: str) -> str:
    """Plain text safe for LaTeX."""
    table = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
             "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(table.get(ch, ch) for ch in text)


def english_identifier(word: str) -> bool:
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
        value = value.rstrip("'")
        core = re.split(r"[\^]", value)[0]
        if english_identifier(value) or core in _ENGLISH_SINGLE:
            return False
        return core in _MATH_WORDS or len(re.sub(r"_.*", "", core)) == 1 or "_" in core or "^" in value

    def is_math(i: int) -> bool:
        kind, value = tokens[i]
        if kind == "word":
            if i and tokens[i - 1] == ("other", "'"):
                return False  # the s of a possessive (query's)
            if value in _LAW_NAMES and neighbour(i, 1)[1] in _LAW_WORDS:
                return False  # "Gamma law": the name of a law, not the letter
            if value == "I" and neighbour(i, -1)[0] == "word" and is_math_word(neighbour(i, -1)[1]):
                return True  # the identity after a symbol (nu_1 I)
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
        while run and run[0] in "([" and sum(r in "([" for r in run) > sum(r in ")]" for r in run):
            out.append(run.pop(0))  # a bracket the run does not close stays text: "(W_o is ..., mean 0)"
        if run:
            # trailing spaces/commas out of the run
            body = "".join(run).rstrip()
            tail = "".join(run)[len(body):]
            out.append("$" + _math_text(body, notation) + "$" + tail)
            run.clear()

    for i, (kind, value) in enumerate(tokens):
        depth = sum(1 for r in run if r in "([") - sum(1 for r in run if r in ")]")
        if flags[i] and not (kind == "close" and depth <= 0):  # a bracket the run did not open stays text
            run.append(value)
            continue
        if run and kind == "other" and value == "," and depth > 0:
            run.append(value)
            continue
        if run and (kind == "space" or (kind == "other" and value == ",")):
            nxt = next((j for j in range(i + 1, len(tokens)) if tokens[j][0] != "space"), None)
            if nxt is not None and flags[nxt] and kind == "space":
                run.append(value)
                continue
        flush()
        out.append(tt(value) if kind == "word" and english_identifier(value) else escape(value))
    flush()
    return "".join(out)
