"""simulate's layout (issue 14): the registries match the one block declaration, the engine
imports no experiment and no record module, and both use only the engine's public names."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import simulate
import simulate.engine as engine
from simulate.engine.forward_pass import forward
from simulate.engine.positional import POSITIONAL
from simulate.engine.projections import Projections, projection_kinds, projection_shape
from simulate.engine.sublayers import FORWARD
from simulate.experiments.train.model import SUBLAYER_APPLY, SUBLAYER_MODULES
from theory import ModelSpec
from theory.block import KINDS, block
from theory.spec import POSITIONALS
from theory.taps import all_taps

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "simulate"


# ---------------------------------------------------------------- registries
def test_forward_registry_has_one_function_per_declared_kind_under_its_name():
    assert list(FORWARD) == list(KINDS)
    assert all(fn.__name__ == kind for kind, fn in FORWARD.items())


def test_positional_registry_has_every_scheme_of_the_spec_and_none_is_the_identity():
    assert set(POSITIONAL) == set(POSITIONALS)
    none = POSITIONAL["none"](2, 4, 3, torch.device("cpu"), torch.float64)
    q, k = torch.randn(1, 1, 3, 2, 4), torch.randn(1, 1, 3, 2, 4)
    x = torch.randn(1, 1, 3, 8)
    assert none.rotate(q, k) == (q, k) and none.embed(x, None) is x and none.bias is None


def test_the_trainable_model_builds_every_declared_kind():
    assert list(SUBLAYER_MODULES) == list(KINDS) and list(SUBLAYER_APPLY) == list(KINDS)


@pytest.mark.parametrize("attn_only", [True, False])
def test_forward_emits_exactly_the_declared_taps_in_order(attn_only):
    """The forward interprets `theory.block`: every tap of the declaration, in its order; an
    attention-only block ends at hook_resid_post (TransformerLens), with no hook_resid_mid."""
    spec = ModelSpec(d_model=16, n_heads=2, n_layers=2, seq_len=5, attn_only=attn_only)
    gen = torch.Generator().manual_seed(0)
    draws = {(l, kind): ("W", torch.randn(1, *projection_shape(spec, kind), generator=gen, dtype=torch.float64))
             for l in range(spec.n_layers) for kind in projection_kinds(spec, l)}
    x = torch.randn(1, 2, spec.seq_len, spec.d_model, generator=gen, dtype=torch.float64)
    taps = all_taps(spec.n_layers, attn_only)
    cache = forward(spec, x, Projections(spec, draws), record=taps)
    assert list(cache) == taps
    assert [t.split(".", 2)[2] for t in taps[: len(taps) // 2]] == list(block(spec).tap_suffixes)
    assert ("blocks.0.hook_resid_mid" in cache) is not attn_only
    # the block's output is the next block's input
    assert torch.equal(cache["blocks.0.hook_resid_post"], cache["blocks.1.hook_resid_pre"])
    # stopping after a tap: nothing later is computed
    early = forward(spec, x, Projections(spec, draws), record=["blocks.0.attn.hook_q"])
    assert list(early) == ["blocks.0.attn.hook_q"]


def test_a_tap_outside_the_network_is_a_clear_error():
    spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=4, attn_only=True)
    with pytest.raises(ValueError, match="hook_resid_mid.*attention only"):
        forward(spec, torch.zeros(1, 1, 4, 16), None, record=["blocks.0.hook_resid_mid"])
    with pytest.raises(ValueError, match="not in this network"):
        simulate.run(spec, taps=["blocks.0.hook_resid_mid"], samples=2, device="cpu")


# ---------------------------------------------------------------- imports
def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import statement in ``path`` (any depth)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            out.append((module, [a.name for a in node.names]))
    return out


def _modules(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def test_the_engine_imports_no_experiment_record_or_facade_statically():
    for path in _modules("engine"):
        for module, names in _imports(path):
            assert not module.startswith(("simulate.record", "simulate.experiments")), (path, module)
            assert module != "simulate" or not names, (path, module, names)  # not the facade


def test_the_engine_loads_without_experiments_or_record():
    """Import simulate.engine with the facade bypassed: no experiment or record module comes along."""
    code = (
        "import sys, types, json\n"
        f"pkg = types.ModuleType('simulate'); pkg.__path__ = [{str(PACKAGE)!r}]; sys.modules['simulate'] = pkg\n"
        "import simulate.engine\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('simulate.'))))\n"
    )
    loaded = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                                       cwd=ROOT).stdout)
    assert "simulate.engine.runner" in loaded
    assert not [m for m in loaded if m.startswith(("simulate.record", "simulate.experiments"))], loaded


def test_experiments_and_record_use_only_the_engines_public_names():
    public = set(engine.__all__)
    for folder in ("record", "experiments"):
        for path in _modules(folder):
            for module, names in _imports(path):
                if module.startswith("simulate.engine"):
                    assert module == "simulate.engine", f"{path}: imports the engine's module {module}"
                    assert set(names) <= public, f"{path}: {sorted(set(names) - public)} not in simulate.engine.__all__"


def test_engine_all_names_exist_and_the_facade_keeps_its_names():
    assert all(hasattr(engine, name) for name in engine.__all__)
    assert simulate.__all__ == [
        "run", "SimulationResult", "NothingUsableWarning", "TapStats", "activations", "ActivationCache", "forward",
        "Projections", "layer_norm", "attention_scale", "psd_root", "resolve_device", "bench", "record", "Site",
        "NoPETransformer",
    ]
    assert all(callable(getattr(simulate, name)) for name in simulate.__all__)


def test_no_simulate_module_is_oversized_without_a_reason():
    for path in sorted(PACKAGE.rglob("*.py")):
        lines = path.read_text().count("\n")
        assert lines <= 520, f"{path.relative_to(ROOT)}: {lines} lines"
