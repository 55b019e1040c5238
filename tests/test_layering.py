"""The layers of the code, imported downward only (issue 14, item 4).

The import graph is read from the source with `ast` (every import statement, module
level or not), so the test sees what the code asks for, not what happens to be loaded:

* no import cycle anywhere in theory, simulate and verify;
* dependencies point one way: verify -> simulate -> theory; theory never imports torch;
* inside theory: leaves (spec, taps, block, symbols, quantities) import no maths, maths
  import no results, steps or renderers, results import no steps, depth or renderers;
* a function-local import is a deferred heavy optional dependency with a comment;
* the one block declaration drives both sides: the kernel maps of the depth recursion and
  simulate's forward functions are keyed by exactly the declared sublayer kinds;
* no module beyond about 500 lines without a reason stated at its top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("theory", "simulate", "verify")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULES = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _resolve(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str) -> list[tuple[str, int, bool]]:
    """``(imported module, line, inside a function)`` for every import of ``module``."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    inside = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(node) if isinstance(n, (ast.Import, ast.ImportFrom))}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, id(node) in inside) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node, path.name == "__init__.py")
            for alias in node.names:  # `from . import depth` imports the submodule theory.depth
                sub = f"{target}.{alias.name}"
                out.append((sub if sub in MODULES else target, node.lineno, id(node) in inside))
    return out


def _graph() -> dict[str, set[str]]:
    graph = {}
    for module in MODULES:
        targets = set()
        for name, _, _ in _imports(module):
            # the deepest project module the name refers to
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    graph = _graph()
    # a package's __init__ re-exports its children: an edge child -> parent package would
    # be a cycle only through the facade, and the children must not import their facade
    assert _cycles(graph) == []


@pytest.mark.parametrize("package, forbidden", [
    ("theory", ("torch", "simulate", "verify")),
    ("simulate", ("verify",)),
])
def test_dependencies_point_one_way(package, forbidden):
    bad = [(m, name, line) for m in MODULES if m.split(".")[0] == package
           for name, line, _ in _imports(m) if name.split(".")[0] in forbidden]
    assert bad == []


# theory's layers, lowest first; a module may import only its own layer or lower ones
THEORY_LAYERS = [
    ("leaves", ["theory.spec", "theory._spec_schedule", "theory._hf_config", "theory.taps", "theory.block", "theory.positions", "theory.quantities",
                "theory.tolerance", "theory._budget", "theory._outputs", "theory._argparse", "theory._guard", "theory._tables"]),
    ("maths", ["theory._moments", "theory._softmax", "theory._quadrature", "theory._layernorm",
               "theory._activations", "theory._kernel_maps", "theory._domain", "theory._numbers",
               "theory._row_law", "theory.row_law", "theory.kernel_maps", "theory._modern"]),
    ("results", ["theory._result", "theory.prediction"]),
    ("steps and depth maps", ["theory.steps", "theory.depth_maps", "theory.depth", "theory.derive",
                              "theory.laws", "theory.information", "theory.quenched"]),
    ("renderers", ["theory._latex"]),
    ("facade and CLI", ["theory._facade", "theory._latex_display", "theory.cli", "theory.__main__", "theory"]),
]


def _layer_of(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(THEORY_LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    if best is None:
        raise AssertionError(f"{module}: not placed in a layer of THEORY_LAYERS")
    return best[0]


def test_theory_imports_downward_only():
    graph = _graph()
    upward = []
    for module, targets in graph.items():
        if not module.startswith("theory"):
            continue
        for target in targets:
            if target.startswith("theory") and _layer_of(target) > _layer_of(module):
                upward.append(f"{module} ({THEORY_LAYERS[_layer_of(module)][0]}) imports {target} "
                              f"({THEORY_LAYERS[_layer_of(target)][0]})")
    assert upward == []


def test_function_local_imports_are_deferred_optional_dependencies_with_a_comment():
    bad = []
    for module, path in MODULES.items():
        lines = path.read_text().splitlines()
        for name, line, local in _imports(module):
            if not local:
                continue
            context = " ".join(lines[max(0, line - 5):line])  # the comment may sit a few lines above
            project = name.split(".")[0] in PACKAGES and name.split(".")[0] != module.split(".")[0]
            if "#" not in context or not (project or name.split(".")[0] not in PACKAGES):
                bad.append(f"{module}:{line} imports {name}")
    assert bad == []


def test_one_block_declaration_drives_both_sides():
    from simulate.engine.sublayers import FORWARD
    from theory.block import KINDS
    from theory.depth_maps import DEPTH_MAPS

    assert set(DEPTH_MAPS) == set(KINDS) == set(FORWARD)
    for kind in KINDS:  # found under the same name on both sides
        assert DEPTH_MAPS[kind].__name__ == FORWARD[kind].__name__ == kind


MAX_LINES = 520


def test_modules_are_small_or_say_why():
    long = []
    for module, path in MODULES.items():
        text = path.read_text()
        if len(text.splitlines()) > MAX_LINES and "long because" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{module}: {len(text.splitlines())} lines")
    assert long == []
