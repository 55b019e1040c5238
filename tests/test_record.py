"""simulate.record: hooks record exactly what the functional forward computes (issue #9)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import simulate
from simulate import NoPETransformer, Site, SimulationResult, record
from simulate.experiments.train.model import HookPoint
from theory import ModelSpec


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def direct_stats(x: torch.Tensor, masked: bool = False) -> dict[str, np.ndarray]:
    """Per-position pooled mean and unbiased var, with units = sequences, straight from the
    definitions in docs/simulate.md: x is (N, T, ...) or, masked, (N, H, T, T)."""
    x = x.double()
    if masked:
        N, H, T, _ = x.shape
        out = {"mean": [], "var": []}
        for m in range(T):
            vals = x[:, :, m, : m + 1].reshape(N, -1)  # keys n <= m
            out["mean"].append(vals.mean().item())
            a_u = vals.mean(dim=1)
            se2 = a_u.var().item() / N
            out["var"].append(vals.var(unbiased=False).item() + se2)
        return {k: np.array(v) for k, v in out.items()}
    N, T = x.shape[:2]
    vals = x.reshape(N, T, -1)
    a_u = vals.mean(dim=2)  # (N, T)
    se2 = a_u.var(dim=0) / N
    return {"mean": vals.mean(dim=(0, 2)).numpy(), "var": (vals.var(dim=(0, 2), unbiased=False) + se2).numpy()}


SPEC = ModelSpec(d_model=16, n_heads=2, n_layers=2, seq_len=10, vocab_size=13, output_scaling="gpt2")


@pytest.mark.parametrize("positional,attn_only", [("none", False), ("learned", False), ("none", True)])
def test_record_equals_functional_forward(positional, attn_only):
    spec = dataclasses.replace(SPEC, positional=positional, attn_only=attn_only)
    model = NoPETransformer(spec, seed=1, dtype=torch.float64)
    ids = torch.randint(13, (21, 10), generator=torch.Generator().manual_seed(0))
    result = record(model, ids, batch_size=8, progress=False)  # batches of 8, 8, 5
    assert result.meta["unit"] == "sequence" and result.meta["names"] == "hooked"
    expected_taps = 10 if attn_only else 15
    assert len(result.taps) == spec.n_layers * expected_taps
    with torch.no_grad():
        x = model.embed_input(ids).unsqueeze(0)  # (S=1, B=21, T, d)
        cache = simulate.forward(model.functional_spec(), x, model.projections(), record=result.taps)
    for tap in result.taps:
        masked = tap.endswith(("hook_attn_scores", "hook_pattern"))
        ref = direct_stats(cache[tap][0], masked=masked)
        ts = result[tap]
        assert ts.n == 21
        np.testing.assert_allclose(ts.mean, ref["mean"], rtol=1e-9, atol=1e-15, err_msg=tap)
        np.testing.assert_allclose(ts.var, ref["var"], rtol=1e-9, atol=1e-15, err_msg=tap)
    pattern = cache["blocks.1.attn.hook_pattern"][0]  # (N, H, T, T)
    ent = torch.special.entr(pattern).sum(-1).mean(dim=(0, 1)).numpy()
    np.testing.assert_allclose(result["pattern", 1].entropy, ent, rtol=1e-10)
    np.testing.assert_allclose(result["pattern", 1].sum_sq, (pattern**2).sum(-1).mean(dim=(0, 1)).numpy(), rtol=1e-10)


def test_across_inputs_and_positions_and_save(tmp_path):
    model = NoPETransformer(SPEC, seed=2, dtype=torch.float64)
    ids = torch.randint(13, (12, 10), generator=torch.Generator().manual_seed(1))
    result = record(model, ids, taps=[("hook_z", 1), ("pattern", 0)], positions=[1, 4, 10], batch_size=5,
                    across_inputs=True, progress=False)
    with torch.no_grad():
        cache = simulate.forward(model.functional_spec(), model.embed_input(ids).unsqueeze(0), model.projections(),
                                 record=["blocks.1.attn.hook_z"])
    z = cache["blocks.1.attn.hook_z"][0].reshape(12, 10, -1)[:, [0, 3, 9]]
    np.testing.assert_allclose(result["hook_z", 1].var_across_inputs, z.var(dim=0).mean(-1).numpy(), rtol=1e-10)
    assert list(result.positions) == [1, 4, 10]
    result.save(tmp_path / "r.json")
    back = SimulationResult.load(tmp_path / "r.json")
    np.testing.assert_array_equal(back["pattern", 0].entropy, result["pattern", 0].entropy)
    np.testing.assert_array_equal(back["hook_z", 1].var_across_inputs, result["hook_z", 1].var_across_inputs)
    assert back.spec == SPEC


def test_model_init_equals_spec_law():
    """The module's weights have the spec's standard deviations (GPT-2 output scaling)."""
    spec = ModelSpec(d_model=64, n_heads=4, n_layers=2, seq_len=8, vocab_size=300, output_scaling="gpt2")
    model = NoPETransformer(spec, seed=0)
    w = model.blocks[0].attn.W_o.weight
    assert abs(w.std().item() / (0.02 / 2.0) - 1) < 0.05  # sigma_o / sqrt(2 * n_layers)
    assert abs(model.embed.weight.std().item() / 0.02 - 1) < 0.05


class _FakeHooked(nn.Module):
    """A module tree named like a TransformerLens HookedTransformer, with other arithmetic."""

    def __init__(self, layers=2, d=6):
        super().__init__()
        self.blocks = nn.ModuleList()
        for _ in range(layers):
            block = nn.Module()
            block.hook_resid_pre = HookPoint()
            block.attn = nn.Module()
            block.attn.hook_z = HookPoint()
            block.hook_attn_out = HookPoint()
            self.blocks.append(block)
        self.d = d

    def forward(self, x):
        for block in self.blocks:
            x = block.hook_resid_pre(x)
            z = block.attn.hook_z(x.cumsum(1).view(*x.shape[:2], 2, -1))  # (B, T, H, dh)
            x = x + block.hook_attn_out(2.0 * z.reshape(x.shape))
        return x


def test_transformer_lens_names_on_a_fake_module_tree():
    model = _FakeHooked()
    x = torch.randn(9, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    result = record(model, x, names="transformer_lens", batch_size=4, progress=False)
    assert result.taps == ["blocks.0.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.0.hook_attn_out",
                           "blocks.1.hook_resid_pre", "blocks.1.attn.hook_z", "blocks.1.hook_attn_out"]
    z0 = x.cumsum(1)
    np.testing.assert_allclose(result["hook_z", 0].var, direct_stats(z0)["var"], rtol=1e-10)
    np.testing.assert_allclose(result["hook_attn_out", 0].var, 4 * direct_stats(z0)["var"], rtol=1e-10)
    np.testing.assert_allclose(result["hook_resid_pre", 1].mean, direct_stats(x + 2 * z0)["mean"], rtol=1e-10, atol=1e-14)
    assert result.spec is None and record(model, x, names="auto", progress=False).meta["names"] == "hooked"


class _Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(4, 4) for _ in range(3))

    def forward(self, x):
        for layer in self.layers:
            x = torch.tanh(layer(x))
        return x


def test_user_name_map_templates_inputs_and_errors():
    torch.manual_seed(0)
    model = _Toy().double()
    x = torch.randn(7, 6, 4, dtype=torch.float64)
    names = {"hook_resid_pre": "layers.{layer}:input", "hook_attn_out": Site("layers.{layer}", "output", lambda t, m: 3 * t)}
    result = record(model, x, names=names, progress=False)
    assert len(result.taps) == 6
    with torch.no_grad():
        h1 = model.layers[0](x)
    np.testing.assert_allclose(result["hook_resid_pre", 0].var, direct_stats(x)["var"], rtol=1e-12)
    np.testing.assert_allclose(result["hook_attn_out", 0].var, 9 * direct_stats(h1)["var"], rtol=1e-12)
    with pytest.raises(ValueError, match="no module 'nope.0'"):
        record(model, x, names={"blocks.0.attn.hook_z": "nope.0"})
    with pytest.raises(ValueError, match="names must be 'auto'"):
        record(model, x, names="bert")
    with pytest.raises(ValueError, match="found no known layout"):
        record(model, x)
    with pytest.raises(ValueError, match="not available from this model"):
        record(model, x, names=names, taps=[("hook_z", 0)])
    with pytest.raises(ValueError, match="batch_size"):
        record(model, x, names=names, batch_size=0)


def test_record_sequences_keeps_each_sequence_apart():
    """Issue 20: per-sequence summaries give back `record`'s statistics, and each sequence's
    own coordinates, straight from a forward hook of our own."""
    from simulate.record import record_sequences

    spec = ModelSpec(d_model=16, n_heads=2, n_layers=2, seq_len=8, vocab_size=11)
    model = NoPETransformer(spec, seed=3)
    ids = torch.randint(11, (10, 8), generator=torch.Generator().manual_seed(1))
    taps = ["blocks.1.hook_attn_out", "blocks.0.attn.hook_z", "blocks.1.attn.hook_pattern"]
    ref = record(model, ids, taps=taps, names="hooked", progress=False, across_inputs=True)
    got = record_sequences(model, ids, taps=taps, names="hooked", values_at=[2, 8], batch_size=3)
    grabbed = {}
    handle = model.blocks[1].hook_attn_out.register_forward_hook(lambda mod, a, out: grabbed.setdefault("x", out.detach()))
    with torch.no_grad():
        model(ids)
    handle.remove()
    x = grabbed["x"].double().numpy()  # (10, 8, 16)
    scale = np.abs(x).max()  # float32 forwards in batches of 3 and of 10 differ by rounding
    np.testing.assert_allclose(got[taps[0]]["m1"], x.mean(-1), rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(got[taps[0]]["m2"], (x * x).mean(-1), rtol=1e-4)
    np.testing.assert_allclose(got[taps[0]]["values"], x[:, [1, 7]], rtol=0, atol=1e-5 * scale)
    for tap in taps[:2]:
        d = got[tap]
        pooled = d["m2"].mean(0) - d["m1"].mean(0) ** 2
        # record's var adds the squared standard error of the per-sequence means (docs/simulate.md)
        np.testing.assert_allclose(ref[tap].var, pooled + d["m1"].var(0, ddof=1) / 10, rtol=1e-5)
        np.testing.assert_allclose(ref[tap].var_across_inputs[[1, 7]], d["values"].var(0, ddof=1).mean(-1), rtol=1e-5)
    np.testing.assert_allclose(ref[taps[2]].entropy, got[taps[2]]["entropy"].mean(0), atol=1e-6)
    assert got[taps[2]]["entropy"].shape == (10, 8)
