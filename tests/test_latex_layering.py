"""The LaTeX renderers print results and never compute (issue 14, items 2 and 4).

Every module of `theory._latex` is parsed with `ast`: none imports a maths module of
theory (the steps, the depth recursion, the softmax, quadrature, LayerNorm and moment
machinery, `theory.derive`), none imports inside a function, and none is beyond 500 lines.
The facade (`theory._facade`) is where deriving and predicting happen.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import theory

PACKAGE = Path(theory.__file__).resolve().parent / "_latex"
RENDERERS = sorted(PACKAGE.glob("*.py"))
MATHS = ("theory.steps", "theory.depth", "theory._softmax", "theory._quadrature", "theory._layernorm",
         "theory._moments", "theory.derive", "theory.depth_maps", "theory._kernel_maps", "theory.laws")
MAX_LINES = 500


def _module_name(path: Path) -> str:
    return "theory._latex" if path.name == "__init__.py" else f"theory._latex.{path.stem}"


def _imports(path: Path) -> list[tuple[str, ast.AST]]:
    """(absolute module name, node) for every import in the file, relative ones resolved."""
    package = "theory._latex"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            out.append((module, node))
            # `from .. import steps` imports the module theory.steps
            out += [(f"{module}.{alias.name}", node) for alias in node.names]
    return out


def test_the_renderers_are_found():
    assert {"notation", "printer", "prose", "steps", "document", "depth", "notebook"} <= {p.stem for p in RENDERERS}


@pytest.mark.parametrize("path", RENDERERS, ids=lambda p: p.name)
def test_a_renderer_imports_no_maths(path):
    bad = sorted({name for name, _ in _imports(path) if any(name == m or name.startswith(m + ".") for m in MATHS)})
    assert not bad, f"{_module_name(path)} imports {', '.join(bad)}: renderers receive results and never compute"


@pytest.mark.parametrize("path", RENDERERS, ids=lambda p: p.name)
def test_a_renderer_imports_at_module_level_only(path):
    tree = ast.parse(path.read_text(), str(path))
    local = [f"line {node.lineno}" for func in ast.walk(tree) if isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef))
             for node in ast.walk(func) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not local, f"{_module_name(path)}: function-local imports at {', '.join(local)}"


@pytest.mark.parametrize("path", RENDERERS, ids=lambda p: p.name)
def test_a_renderer_module_is_small(path):
    assert len(path.read_text().splitlines()) <= MAX_LINES


def test_the_printer_knows_the_derivations_tau_bar_symbol():
    from theory._latex.printer import TAU_BAR2
    from theory.steps import TAU_BAR2 as DERIVED

    assert TAU_BAR2 == DERIVED  # the roots sigma_q(tau_bar^2) a Derivation carries print as tau_bar^2


def test_results_get_their_latex_from_the_facade():
    from theory import ModelSpec, derive

    d = derive(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=8))
    assert d["blocks.0.attn.hook_q"].best.latex().startswith("\\begin{aligned}")
    assert d.latex().startswith("% First-layer (blocks.0) derivation") and d._repr_latex_().startswith("$$")
