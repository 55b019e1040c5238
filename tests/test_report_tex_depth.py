"""report.tex's depth findings (issue 21 item 4): when the error grows with depth, the sentence
quotes the assumptions theory states in ASCII math (``E[a_mk a_nk'] = w_mk w_nk', m != n``,
``O(1/sqrt(d))``); in LaTeX they are in math mode, and the section compiles.

The assumptions are every one `theory.predict` states for a table of block variants (about 3 s),
so a new assumption whose ASCII math the prose printer cannot set fails here."""

from __future__ import annotations

import re
import shutil
import subprocess
from types import SimpleNamespace

import pytest

import theory
from theory import ModelSpec
from theory._latex import PACKAGES, Notation, prose
from verify.checks.depth import depth_findings
from verify.report.latex import depth_section, sentence_tex

BASE = dict(d_model=32, n_heads=2, n_layers=2, seq_len=8)
VARIANTS = [{}, {"attn_only": True}, {"ln_eps": 0.0}, {"normalization": "rmsnorm"}, {"qk_norm": True},
            {"positional": "rope"}, {"positional": "alibi"}, {"mlp": "swiglu"}, {"n_kv_heads": 1},
            {"activation": "relu"}]


@pytest.fixture(scope="module")
def assumptions() -> list[str]:
    found = set()
    for variant in VARIANTS:
        spec = ModelSpec(**{**BASE, **variant})
        for level in ("best", "leading"):
            for _, record in theory.predict(spec, [1, 4, 8], level).items():
                found.update(record.assumptions)
    return sorted(found)


def _running_text(tex: str) -> str:
    """LaTeX without math, code and commands' arguments that may hold underscores."""
    tex = re.sub(r"\$[^$]*\$", "", tex)
    tex = re.sub(r"\\texttt\{[^{}]*(\{[^{}]*\}[^{}]*)*\}", "", tex)
    return tex


def _ascii_math_left(tex: str) -> list[str]:
    text = _running_text(tex)
    bad = [piece for piece in ("_", "^", "!=", "sqrt", "E[", "<=", ">=") if piece in text.replace("\\_", "")]
    # math symbols outside math mode: a lone letter with a prime (n'), an identifier a_mn
    bad += re.findall(r"(?<![A-Za-z])[a-z]'(?![a-z])", text)
    return bad


def test_every_assumption_prints_its_math_in_math_mode(assumptions):
    assert len(assumptions) > 30
    for text in assumptions:
        tex = prose(text, Notation())
        assert not _ascii_math_left(tex), (text, tex, _ascii_math_left(tex))
        assert tex.count("$") % 2 == 0, tex


@pytest.mark.parametrize("text, expected", [
    ("off-diagonal attention terms from the mean weights (E[a_mk a_nk'] = w_mk w_nk', m != n)",
     r"$(\mathbb{E} [a_{mk} a_{nk'} ]= w_{mk} w_{nk'} ,m \ne n )$"),
    ("about its mean neglected, O(1/sqrt(d))", r"$O (1/ \sqrt{d })$"),
    ("QK-norm: the projected query's chi^2_D/D factor", r"the projected query's ${\chi^{2}}_{D} / D$ factor"),
    ("by its relative variance, Gamma law", "by its relative variance, Gamma law"),
    ("keys i.i.d. (exact at layer 0)", "keys i.i.d. (exact at layer $0$)"),
    ("variances add (W_o is independent, mean 0):", r"variances add ($W_{o}$ is independent, mean $0$):"),
    ("(exact at layer 0: E = nu_1 I)", r"$\mathbb{E} = \nu_{1} I$"),
])
def test_prose_pieces(text, expected):
    assert expected in prose(text, Notation())


def _rows(new: list[str]) -> list[dict]:
    """Depth rows in which hook_z's error grows from layer 0 to layer 1 (resolved, 4x), and
    layer 1's hook_z rests on ``new`` besides layer 0's assumptions."""
    common = {"quantity": "var", "level": "approximate", "rel_tol": 0.05, "checks": 10, "position": 8,
              "max_abs_z": 9.0}
    return [
        {**common, "tap": "attn.hook_z", "layer": 0, "max_abs_rel_error": 0.01, "rel_error": 0.01, "z": 1.0,
         "assumptions": ["annealed measure: fresh weights and inputs"]},
        {**common, "tap": "attn.hook_z", "layer": 1, "max_abs_rel_error": 0.04, "rel_error": 0.04, "z": 9.0,
         "assumptions": ["annealed measure: fresh weights and inputs", *new]},
    ]


def _section(new: list[str]) -> str:
    rows = _rows(new)
    report = SimpleNamespace(layers=2, spec=ModelSpec(**BASE), depth_findings=lambda: depth_findings(rows, ("attn.hook_z",)),
                             depth_accuracy=lambda: rows)
    title, body = depth_section(report)
    assert title == "Accuracy through depth"
    return body


def test_growth_sentence_sets_the_assumptions_in_math(assumptions):
    new = [a for a in assumptions if a != "annealed measure: fresh weights and inputs"]
    body = _section(new)
    assert "the error grows with depth" in body
    items = [line for line in body.splitlines() if line.startswith(r"\item")]
    assert len(items) == 1
    assert r"$O (1/ \sqrt{d })$" in items[0] and r"w_{nk'}" in items[0]
    assert not _ascii_math_left(items[0]), _ascii_math_left(items[0])


def test_sentence_without_phrases_is_unchanged():
    text = "`hook_resid_mid`: no resolved growth with depth (largest |error| per layer: 1.00%, 2.00%)."
    assert sentence_tex(text, ()) == sentence_tex(text)
    assert sentence_tex(text, ("not in the text",)) == sentence_tex(text)


def test_growth_section_compiles(assumptions, tmp_path):
    if shutil.which("pdflatex") is None:
        pytest.skip("needs pdflatex (texlive) to compile the section")
    body = _section([a for a in assumptions if a != "annealed measure: fresh weights and inputs"])
    tex = tmp_path / "depth.tex"
    tex.write_text("\\documentclass{article}\n" + PACKAGES + "\n\\begin{document}\n" + body + "\n\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", tex.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, [line for line in proc.stdout.splitlines() if line.startswith("!")][:3]
