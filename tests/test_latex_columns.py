"""Symbolic LaTeX keeps named constants, and every step snippet fits a two-column article.

* A symbolic document prints the fixed scales as symbols (sigma_v, sigma_e, ...), the norm
  moments in ``c = d eps/sigma_e^2`` and the series in ``tau_bar^2``; the numbers stand in the
  symbol table. The re-expressed formulas are the same mathematics: evaluated at the fixed
  values (and ``c``, ``tau_bar^2`` put back) they equal the user's derivation at random points.
* The snippets ``steps/<tap>.tex`` of a symbolic, a partly symbolic, a numeric and a modern
  spec are ``\\input`` into ``\\documentclass[twocolumn]{article}`` and compiled with pdflatex:
  no ``Overfull \\hbox`` wider than `TOLERANCE_PT`.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess

import pytest
import sympy as sp
from sympy.core.function import AppliedUndef

from theory import ModelSpec, derive, latex
from theory._latex import C_SYMBOL, TAU_BAR2
from theory._latex_display import display_derivation

SYMBOLIC = ModelSpec().symbolic("d_model", "n_heads", "sigma_q", "sigma_k", "ln_eps")
PARTLY = ModelSpec(d_model=32, n_heads=2, n_layers=2, seq_len=64).symbolic("sigma_v", "n_heads")
NUMERIC = ModelSpec(d_model=64, n_heads=4, n_layers=1)

#: An overfull box of up to this many points is invisible in print (TeX's own \hfuzz is 0.1 pt);
#: the snippets measured 0 pt over on a 10 pt two-column article when this test was written.
TOLERANCE_PT = 1.0

MAGIC = ("1250", "2500", "0.0004", "1.6 \\cdot 10^{-7}", "6250000")


@pytest.fixture(scope="module")
def symbolic():
    return derive(SYMBOLIC)


def test_symbolic_document_has_named_constants_not_magic_floats(symbolic):
    tex = latex(symbolic, part="document")
    for magic in MAGIC:
        assert magic not in tex, magic
    assert r"\Gamma\left(\frac{3}{2} - \frac{d}{2}, \frac{c}{2}\right)" in tex  # the norm moments in c
    assert r"O\bigl(c^{3}\bigr)" in tex
    table = tex[tex.index(r"\subsection{Symbols}"):tex.index(r"\end{table}")]
    # the fixed scales: symbol, field and value in one row of the table
    for symbol, field in ((r"\sigma_{v}", "sigma\\char95{}v"), (r"\sigma_{e}", "sigma\\char95{}embed")):
        row = next(line for line in table.splitlines() if line.startswith(f"${symbol}$"))
        assert field in row and row.rstrip(" \\").endswith("$0.02$"), row
    step = latex(symbolic, step="blocks.0.attn.hook_pattern")
    assert r"\bar{\tau}^{4}" in step and r"O\bigl(\bar{\tau}^{6}\bigr)" in step


def _functions_to_numbers(expr, values):
    return sp.sympify(expr.replace(lambda e: isinstance(e, AppliedUndef),
                                   lambda e: values.setdefault(e.func.__name__, sp.Float(random.random()))))


@pytest.mark.parametrize("spec", [SYMBOLIC, PARTLY], ids=["gpt2-symbolic", "attn2-partly"])
def test_named_forms_equal_the_derivation_at_the_fixed_values(spec):
    random.seed(3)
    original = derive(spec)
    shown = display_derivation(original)
    fixed = {getattr(shown.spec, field): value for field, value in shown.fixed}
    assert fixed, "the fixed scales became symbols"
    d, eps, sigma_e = sp.sympify(shown.spec.d_model), shown.spec.ln_eps, sp.sympify(shown.spec.sigma_embed)
    tau = sp.sympify(shown.constants["tau_bar^2"])
    back = {C_SYMBOL: d * eps / sigma_e**2, TAU_BAR2: tau}
    checked = 0
    for tap in shown:
        for level in ("leading", "best"):
            a, b = original[tap].at(level), shown[tap].at(level)
            for kind in ("quantities", "forms"):
                for name, expr in getattr(b, kind).items():
                    mine = sp.sympify(expr).subs(back).subs(fixed)
                    theirs = sp.sympify(getattr(a, kind)[name])
                    functions = {}
                    mine, theirs = _functions_to_numbers(mine, functions), _functions_to_numbers(theirs, functions)
                    names = sorted({s.name for s in theirs.free_symbols | mine.free_symbols})
                    at = {n: (12 if n == "H" else random.uniform(0.5, 1.5) * {"d": 768, "m": 9, "D": 767}.get(n, 0.03))
                          for n in names}
                    point = {s: at[s.name] for s in theirs.free_symbols | mine.free_symbols}
                    x, y = complex(sp.N(mine.subs(point), 30)), complex(sp.N(theirs.subs(point), 30))
                    assert abs(x - y) <= 1e-9 * max(1.0, abs(y)), (tap, level, name, x, y)
                    checked += 1
    assert checked > 30


def _overfull(tmp_path, specs) -> list[tuple[float, str]]:
    inputs = []
    for name, spec in specs.items():
        latex(spec, out=tmp_path / name)
        inputs += sorted((tmp_path / name / "steps").glob("*.tex"))
    body = "\n".join(f"\\typeout{{SNIPPET {p.parent.parent.name}/{p.name}}}\\input{{{p}}}" for p in inputs)
    (tmp_path / "paper.tex").write_text(
        "\\documentclass[10pt,twocolumn]{article}\n\\usepackage{amsmath,amssymb}\n\\allowdisplaybreaks\n"
        "\\begin{document}\n" + body + "\n\\end{document}\n")
    run = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "paper.tex"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    log = (tmp_path / "paper.log").read_text(errors="replace")
    assert run.returncode == 0, log[-2000:]
    found, current = [], None
    for line in log.splitlines():
        if line.startswith("SNIPPET "):
            current = line.split(" ", 1)[1]
        match = re.match(r"Overfull \\hbox \(([0-9.]+)pt too wide\)", line)
        if match:
            found.append((float(match.group(1)), current))
    return found


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (texlive)")
def test_snippets_fit_a_two_column_article(tmp_path):
    from verify.presets import SMOLLM3_SPEC  # a modern block (RMSNorm, QK-norm, RoPE/NoPE layers)

    specs = {"symbolic": SYMBOLIC, "partly": PARTLY, "numeric": NUMERIC, "smollm3": SMOLLM3_SPEC}
    found = _overfull(tmp_path, specs)
    assert [f for f in found if f[0] > TOLERANCE_PT] == []


@pytest.mark.skipif(shutil.which("pdflatex") is None, reason="needs pdflatex (texlive)")
def test_the_overfull_check_can_fail(tmp_path, monkeypatch):
    import theory._latex.printer as printer

    monkeypatch.setattr(printer, "COLUMN_WIDTH", 80.0)  # a page-wide budget overflows the column
    found = _overfull(tmp_path, {"symbolic": SYMBOLIC})
    assert max(f[0] for f in found) > 10 * TOLERANCE_PT
