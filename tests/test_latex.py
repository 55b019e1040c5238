"""LaTeX for papers: golden snippets, notation control, the CLI, and documents that compile.

Compilation tests need ``pdflatex`` (Debian: texlive-latex-base, texlive-latex-recommended,
texlive-fonts-recommended; ``.ci/run`` installs them) and skip, saying so, without it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import sympy as sp

from theory import ModelSpec, derive, latex
from theory import _latex
from theory._latex import Notation, Printer, break_lines, label, prose, visible_width
from theory._latex import conditional_series
from theory._softmax import row_series
from theory.cli import main
from theory.taps import ATTENTION_TAPS

PDFLATEX = shutil.which("pdflatex")
needs_pdflatex = pytest.mark.skipif(
    PDFLATEX is None,
    reason="pdflatex not installed: compilation not tested (apt-get install texlive-latex-base "
    "texlive-latex-recommended texlive-fonts-recommended)",
)
MAX_OVERFULL_PT = 3.0  # "no overfull boxes wider than a few points"

NUMERIC = ModelSpec(d_model=64, n_heads=4, seq_len=256)
SYMBOLIC = ModelSpec().symbolic("d_model", "n_heads", "sigma_q", "sigma_k", "ln_eps")


@pytest.fixture(scope="module")
def numeric():
    return derive(NUMERIC)


@pytest.fixture(scope="module")
def symbolic():
    return derive(SYMBOLIC)


# ============================================================================ golden strings
def test_golden_leading_row_symbolic(symbolic):
    # sigma_v = 0.02 is fixed in SYMBOLIC: the formula keeps the symbol, the table its value
    snippet = latex(symbolic, step="blocks.0.attn.hook_z")
    assert r"\operatorname{Var}[z_{m,j}] &= \frac{d \sigma_{v}^{2}}{m} \label{eq:blocks.0.attn.hook_z:leading:var}" in snippet
    assert (
        r"\operatorname{Var}[z_{m,j}] &= d \nu_{1} \sigma_{v}^{2} \left(S_{2}(m) + \frac{\Xi(m)}{d - 1}\right)"
        r" \label{eq:blocks.0.attn.hook_z:best:var}" in snippet
    )
    assert "0.0004" not in snippet


def test_golden_with_notation(symbolic):
    notation = {"d_model": "D", "Var": r"\mathbb{V}", "nu_1": r"\nu", "Xi": r"\mathcal{X}", "S_2": r"\Sigma_{2}"}
    snippet = latex(symbolic, step=("hook_z", 0), notation=notation)
    assert r"\mathbb{V}[z_{m,j}] &= \frac{D \sigma_{v}^{2}}{m} \label{eq:blocks.0.attn.hook_z:leading:var}" in snippet
    assert r"D \nu \sigma_{v}^{2} \left(\Sigma_{2}(m) + \frac{\mathcal{X}(m)}{D - 1}\right)" in snippet


def test_golden_step_result_latex(numeric):
    assert numeric["blocks.0.attn.hook_q"].best.latex() == (
        "\\begin{aligned}\n"
        "\\mathbb{E}[q_{m,j}] &= 0 \\\\\n"
        "\\operatorname{Var}[q_{m,j}] &= 0.0249462 \\\\\n"
        "\\kappa[q_{m,j}] &= 6.59709 \\cdot 10^{-5}\n"
        "\\end{aligned}"
    )


def test_golden_conditional_series():
    # S_2 given tau^2, derived by sympy (theory._softmax.row_series), as the document prints it:
    # one power per row, the alignment point at the margin, the widest factor on its own row
    assert Notation().fill(conditional_series(row_series("sum_sq", 2))) == (
        r"&\mathbb{E}\Bigl[\sum_{n} a_{mn}^{2} \,\Big|\, \tau^{2}\Bigr] = \frac{1}{m} \nonumber\\" "\n"
        r"&\qquad + \tau^{2}\, \frac{m - 1}{m^{2}} \nonumber\\" "\n"
        r"&\qquad + \tau^{4}\, \frac{m - 1}{2 m^{4} \left(D + 2\right)} \nonumber\\" "\n"
        r"&\qquad \times \Bigl(D m^{2} - 6 D m - 5 m^{2} + 24 m - 36\Bigr) + O\bigl(\tau^{6}\bigr)"
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("relative O(tau_bar^2 delta^2), delta = 0.00441", r"relative $O (\bar{\tau}^{2} \delta^{2} )$, $\delta = 0.00441$"),
        ("tau_bar^2 -> 0, m << (d-1)/tau_bar^2", r"$\bar{\tau}^{2} \to 0$, $m \ll (d - 1)/ \bar{\tau}^{2}$"),
        ("continuous Gaussian token embeddings (vocab_size = null)",
         r"continuous Gaussian token embeddings (\texttt{vocab\char95{}size} = null)"),
        ("gain 1, bias 0 (initialisation)", "gain $1$, bias $0$ (initialisation)"),
        ("all d >= 2, all eps", r"all $d \ge 2$, all $\epsilon$"),
    ],
)
def test_golden_prose(text, expected):
    assert prose(text, Notation()) == expected


def test_labels_come_from_tap_names():
    assert label("blocks.0.attn.hook_z", "best", "var") == "eq:blocks.0.attn.hook_z:best:var"
    assert label("blocks.0.attn.hook_pattern", "form", "m*sum_sq, m -> oo") == "eq:blocks.0.attn.hook_pattern:form:m-sum_sq-m-oo"


# ============================================================================ line breaking
def test_long_sums_break_and_short_ones_do_not():
    m, d = sp.symbols("m d", positive=True)
    printer = Printer(Notation())
    assert break_lines(1 / m + d, printer) == [r"d + \frac{1}{m}"]
    long = sum(d**k / m**k for k in range(1, 12))
    lines = break_lines(long, printer)
    assert len(lines) > 1
    assert all(visible_width(line) <= _latex.LINE_WIDTH for line in lines)
    assert " ".join(lines).count("+") == 10


def test_floats_are_rounded_and_integral_floats_become_integers():
    m = sp.Symbol("m", positive=True)
    printer = Printer(Notation())
    assert printer.doprint(sp.Float("0.0006223147595817052413") / m + sp.Float("1.00000000000000000001") * m) == (
        r"m + \frac{0.000622315}{m}"
    )
    assert printer.doprint(sp.Float(1e-5)) == "10^{-5}"


# ============================================================================ notation
def test_notation_refuses_unknown_symbols_and_names_the_allowed():
    with pytest.raises(ValueError, match="unknown symbol 'sigma_x'.*allowed keys are d_model"):
        Notation.from_mapping({"sigma_x": "y"})
    with pytest.raises(ValueError, match="non-empty LaTeX string"):
        Notation.from_mapping({"sigma_q": ""})
    with pytest.raises(ValueError, match="unbalanced braces"):
        Notation.from_mapping({"sigma_q": r"\sigma_{Q"})


def test_notation_aliases_and_json(tmp_path):
    path = tmp_path / "n.json"
    path.write_text(json.dumps({"sigma_e": r"\sigma_{0}", "d_h": "k", "E": r"\operatorname{E}"}))
    n = Notation.load(path)
    assert n["sigma_embed"] == r"\sigma_{0}" and n["d_head"] == "k" and n["E"] == r"\operatorname{E}"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        Notation.load(path)
    path.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        Notation.load(path)


def test_notation_applies_everywhere(symbolic):
    notation = {"sigma_q": r"\sigma_{Q}", "sigma_k": r"\sigma_{K}", "E": r"\operatorname{E}", "Var": r"\operatorname{V}"}
    doc = latex(symbolic, notation=notation)
    for ours in (r"\sigma_{q}", r"\sigma_{k}", r"\mathbb{E}", r"\operatorname{Var}"):
        assert ours not in doc, ours
    for theirs in notation.values():
        assert theirs in doc


def test_symbolic_constants_are_not_written_twice(symbolic):
    # a symbolic spec's D and rho^2 are their definitions: "D = d - 1", not "D = d - 1 = d - 1"
    doc = latex(symbolic)
    assert r"D &= d - 1 \label{eq:constants:D}" in doc
    assert r"= d \nu_{1} \label{eq:constants:rho}" in doc and r"d \nu_{1} = d \nu_{1}" not in doc


# ============================================================================ documents and the CLI
def test_document_structure(numeric):
    doc = latex(numeric)
    assert doc.startswith("\\documentclass") and doc.rstrip().endswith("\\end{document}")
    for step in numeric.steps:
        assert f"\\label{{sec:{step.tap}}}" in doc
        for level in ("leading", "best"):
            for name in getattr(step, level).quantities:
                assert f"\\label{{{label(step.tap, level, name)}}}" in doc
    assert "\\label{tab:symbols}" in doc and "\\begin{align}" in doc
    labels = re.findall(r"\\label\{([^}]*)\}", doc)
    assert len(labels) == len(set(labels)), "labels are unique"
    assert set(re.findall(r"\\(?:eq)?ref\{([^}]*)\}", doc)) <= set(labels)


def test_repr_latex(numeric):
    step = numeric["blocks.0.attn.hook_z"]
    assert step.best._repr_latex_().startswith("$$") and "S_{2}(m)" in step.best._repr_latex_()
    assert _latex.derivation_repr(numeric).count("blocks.0.") == len(numeric)


def test_cli_latex_writes_the_files(tmp_path, capsys):
    spec = tmp_path / "spec.json"
    spec.write_text(NUMERIC.to_json())
    notation = tmp_path / "notation.json"
    notation.write_text(json.dumps({"d_model": "D", "D": "d'"}))
    out = tmp_path / "tex"
    assert main(["latex", "--spec", str(spec), "--notation", str(notation), "--out", str(out)]) == 0
    assert "derivation.tex" in capsys.readouterr().out
    assert (out / "derivation.tex").is_file() and (out / "derivation-body.tex").is_file()
    assert len(list((out / "steps").glob("blocks.0.*.tex"))) == len(ATTENTION_TAPS)
    assert json.loads((out / "notation.json").read_text())["d_model"] == "D"


def test_cli_latex_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"sigma_x": "y"}))
    assert main(["latex", "--notation", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("theory: error: notation: unknown symbol 'sigma_x'") and err.count("\n") == 1
    afile = tmp_path / "file"
    afile.write_text("")
    assert main(["latex", "--out", str(afile)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert main(["latex"]) == 2  # --out is required
    assert "--out" in capsys.readouterr().err


# ============================================================================ compilation
def compile_tex(tex: Path) -> str:
    """pdflatex -halt-on-error twice; the log of the second run."""
    for _ in range(2):
        proc = subprocess.run([PDFLATEX, "-halt-on-error", "-interaction=nonstopmode", tex.name],
                              cwd=tex.parent, capture_output=True, text=True, timeout=120)
        log = tex.with_suffix(".log").read_text(errors="replace")
        assert proc.returncode == 0, "\n".join(l for l in log.splitlines() if l.startswith("!"))[:2000]
    assert tex.with_suffix(".pdf").is_file()
    return log


def assert_clean(log: str) -> None:
    assert not re.search(r"LaTeX Warning: (Reference|Citation) .* undefined", log)
    assert "There were undefined references" not in log
    widths = [float(w) for w in re.findall(r"Overfull \\hbox \(([\d.]+)pt too wide\)", log)]
    assert all(w <= MAX_OVERFULL_PT for w in widths), f"overfull boxes: {widths} pt"


@needs_pdflatex
@pytest.mark.parametrize("which", ["numeric", "symbolic"])
def test_derivation_compiles(which, request, tmp_path):
    derivation = request.getfixturevalue(which)
    latex(derivation, out=tmp_path)
    assert_clean(compile_tex(tmp_path / "derivation.tex"))


@needs_pdflatex
def test_derivation_compiles_with_notation(symbolic, tmp_path):
    notation = {"sigma_q": r"\sigma_{Q}", "d_model": "D", "D": r"\tilde{D}", "E": r"\operatorname{E}", "x": r"\mathbf{x}"}
    latex(symbolic, notation=notation, out=tmp_path)
    assert_clean(compile_tex(tmp_path / "derivation.tex"))


@needs_pdflatex
@pytest.mark.parametrize("symbolic_fields", [(), ("sigma_o", "n_layers")])
def test_depth_section_compiles_with_its_table(symbolic_fields, tmp_path):
    spec = ModelSpec(d_model=32, n_heads=2, n_layers=2, seq_len=16, output_scaling="gpt2")
    spec = spec.symbolic(*symbolic_fields) if symbolic_fields else spec
    notation = {"sigma_o": r"\sigma_{O}"}
    section = latex(spec, notation=notation, part="depth")
    assert "\\label{eq:depth:attention}" in section and "\\sigma_{O}" in section
    assert ("\\label{tab:depth}" in section) == (not symbolic_fields)  # numbers only for numeric specs
    written = main(["latex", "--depth", "--out", str(tmp_path)] + (["--spec", _spec_file(spec, tmp_path)] if not symbolic_fields else []))
    assert written == 0 and (tmp_path / "depth.tex").is_file()
    latex(spec, notation=notation, depth=True, out=tmp_path)
    log = compile_tex(tmp_path / "derivation.tex")
    assert_clean(log)
    assert "eq:depth:mehler" in (tmp_path / "derivation.aux").read_text()


def _spec_file(spec, tmp_path):
    path = tmp_path / "spec.json"
    spec.save(str(path))
    return str(path)


@needs_pdflatex
def test_a_step_snippet_inputs_into_a_paper(numeric, tmp_path):
    latex(numeric, out=tmp_path)
    paper = tmp_path / "paper.tex"
    paper.write_text(
        "\\documentclass{article}\n\\usepackage{amsmath,amssymb}\n\\begin{document}\n"
        "\\input{steps/blocks.0.attn.hook_pattern.tex}\n"
        "As \\eqref{eq:blocks.0.attn.hook_pattern:best:sum_sq} shows.\n\\end{document}\n"
    )
    assert_clean(compile_tex(paper))


@needs_pdflatex
def test_verify_report_tex_compiles(numeric, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from verify.report.report_tex import write_report_tex

    fig, ax = plt.subplots(figsize=(4, 3))
    ax.loglog([1, 2, 4, 8], [1, 0.5, 0.25, 0.125])
    fig.savefig(tmp_path / "blocks.0.attn.hook_z.variance.pdf")
    plt.close(fig)
    checks = [
        dict(tap="blocks.0.attn.hook_z", position=m, quantity="var", level="approximate", theory=0.0249 / m,
             sim=0.0250 / m, se=2e-5, z=-0.5, passed=True)
        for m in (1, 2, 8, 64, 256)
    ] + [dict(tap="blocks.0.ln1.hook_normalized", position=1, quantity="excess_kurtosis", level="exact",
              theory=-0.0922, sim=float("nan"), se=float("nan"), z=float("nan"), passed=False)]
    from verify import Check, Comparison, Verdict

    row = Comparison(tap="blocks.0.attn.hook_pattern", position=8, quantity="sum_sq", level="approximate",
                     theory=0.1251, sim=0.1250, se=1e-4, z=1.0, assumption="key directions uniform")
    checks.append(Check(comparison=row, verdict=Verdict(passed=True, p_value=0.32, threshold=0.01),
                        critical_z=3.5, rel_tol=1e-3, tolerance=4e-4))
    latex(numeric, out=tmp_path / "derivation")
    pdf = write_report_tex(tmp_path, NUMERIC, checks,
                           {"variance of hook_z": ["x.png", "blocks.0.attn.hook_z.variance.pdf"]},
                           tmp_path / "derivation", compile=True)
    assert pdf.name == "report.pdf" and pdf.is_file()
    tex = (tmp_path / "report.tex").read_text()
    assert "attn.hook\\char95{}pattern} & 8 & sum sq." in tex
    assert "\\toprule" in tex and "\\includegraphics" in tex and "\\input{derivation/derivation-body.tex}" in tex
    assert_clean((tmp_path / "report.log").read_text(errors="replace"))


def test_report_tex_refuses_bad_input(tmp_path):
    from verify.report.report_tex import write_report_tex

    with pytest.raises(ValueError, match="lacks"):
        write_report_tex(tmp_path, NUMERIC, [{"tap": "x"}], {}, tmp_path)
    with pytest.raises(ValueError, match="no PDF"):
        write_report_tex(tmp_path, NUMERIC, [], {"fig": "fig.png"}, tmp_path)
    with pytest.raises(ValueError, match="derivation-body.tex"):
        write_report_tex(tmp_path, NUMERIC, [], {}, tmp_path / "missing.tex")


def test_forms_in_tau_bar_are_the_same_expressions(symbolic):
    """The document may print a form in tau_bar^2; the rewrite must be an identity."""
    printer = Printer(Notation())
    roots, tau2_bar = symbolic.constants["sigma_q(tau_bar^2)"], symbolic.constants["tau_bar^2"]
    rewritten = 0
    for step in symbolic.steps:
        for name, expr in step.best.forms.items():
            short = _latex.in_tau_bar(expr, SYMBOLIC.sigma_q, roots, printer)
            if short is None:
                continue
            rewritten += 1
            point = {s: sp.Rational(k + 3, 7) for k, s in enumerate(sorted(expr.free_symbols, key=str))}
            back = short.subs(_latex.TAU_BAR2, tau2_bar)
            assert abs(float((expr - back).subs(point))) < 1e-12 * max(1.0, abs(float(expr.subs(point)))), (step.tap, name)
    assert rewritten >= 2  # the softmax and value-aggregation series at least
