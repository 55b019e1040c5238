"""The batched forward equals a plain one-network-at-a-time reference on the same weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from simulate import Projections, forward, layer_norm, psd_root
from simulate.engine.draw import first_occurrence, sample_plan, unpack
from simulate.engine.projections import gram_matrix, projection_kinds, projection_shape, tril_matmul
from simulate.engine.seeding import derive_seed
from theory.taps import all_taps
from tests.simulate_helpers import reference_forward, small_spec
from tests.simulate_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = [
    small_spec(),
    small_spec(attn_scale="linear", sigma_q=0.5, sigma_k=0.7, sigma_v=0.3, sigma_o=0.9, sigma_embed=1.0),
    small_spec(n_layers=2, attn_only=False, activation="gelu", sigma_q=0.3, sigma_k=0.3),
    small_spec(n_layers=2, attn_only=False, activation="relu", ln_eps=0.0, sigma_embed=0.5),
    small_spec(attn_only=False, activation="gelu_tanh", n_heads=1, mlp_ratio=2),
    small_spec(vocab_size=5, sigma_q=1.0, sigma_k=1.0),
]


def _explicit_network(spec, S, gen):
    """Explicit standard-normal weights for S networks, as `Projections` takes them."""
    draws = {}
    for layer in range(spec.n_layers):
        for kind in projection_kinds(spec):
            draws[(layer, kind)] = ("W", torch.randn(S, *projection_shape(spec, kind), generator=gen, dtype=torch.float64))
    return Projections(spec, draws)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"L{s.n_layers}-{s.attn_scale}-{s.activation}-{s.attn_only}-V{s.vocab_size}")
def test_batched_forward_equals_reference(spec):
    S, B = 3, 2
    gen = torch.Generator().manual_seed(7)
    project = _explicit_network(spec, S, gen)
    x = torch.randn(S, B, spec.seq_len, spec.d_model, generator=gen, dtype=torch.float64) * spec.sigma_embed
    taps = all_taps(spec.n_layers, spec.attn_only)
    cache = forward(spec, x, project, record=taps)
    assert set(cache) == set(taps)
    names = ("W_q", "W_k", "W_v", "W_o") + (() if spec.attn_only else ("W_in", "W_out"))
    for s in range(S):
        weights = {(l, n): project.weight(l, n)[s] for l in range(spec.n_layers) for n in names}
        for b in range(B):
            ref = reference_forward(spec, x[s, b], weights)
            for tap in taps:
                got = cache[tap][s, b]
                want = ref[tap]
                if tap.endswith(("hook_attn_scores", "hook_pattern")):
                    causal = ~torch.isnan(want)  # the tap's entries: keys n <= m
                    assert torch.allclose(got[causal], want[causal], rtol=1e-10, atol=1e-12), tap
                    if tap.endswith("hook_pattern"):
                        assert torch.all(got[~causal] == 0), "masked weights must be exactly 0"
                else:
                    assert got.shape == want.shape, tap
                    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12), tap


def test_fused_attention_equals_hand_written_path():
    spec = small_spec(n_layers=2, attn_only=False, sigma_q=1.0, sigma_k=1.0)
    gen = torch.Generator().manual_seed(3)
    project = _explicit_network(spec, 2, gen)
    x = torch.randn(2, 1, spec.seq_len, spec.d_model, generator=gen, dtype=torch.float64)
    fused = forward(spec, x, project, record=["blocks.0.attn.hook_z", "blocks.1.hook_resid_post"])
    manual = forward(spec, x, project, record=["blocks.0.attn.hook_pattern", "blocks.0.attn.hook_z", "blocks.1.hook_resid_post"])
    for tap in fused:
        assert torch.allclose(fused[tap], manual[tap], rtol=1e-10, atol=1e-12)


def test_forward_stops_after_the_last_recorded_tap():
    spec = small_spec(n_layers=3, attn_only=False)
    calls = []

    def project(layer, kind, inp):
        calls.append((layer, kind))
        d_out = {"qkv": 3 * spec.d_model, "o": spec.d_model, "in": spec.mlp_width, "out": spec.d_model}[kind]
        return inp.new_zeros(*inp.shape[:-1], d_out)

    x = torch.randn(1, 1, spec.seq_len, spec.d_model)
    cache = forward(spec, x, project, record=["blocks.1.attn.hook_q"])
    assert list(cache) == ["blocks.1.attn.hook_q"]
    assert calls[-1] == (1, "qkv") and (1, "o") not in calls and (2, "qkv") not in calls


def test_layer_norm_matches_torch():
    x = torch.randn(4, 5, 33, dtype=torch.float64)
    for eps in (0.0, 1e-5, 0.3):
        assert torch.allclose(layer_norm(x, eps), F.layer_norm(x, (33,), eps=eps), atol=1e-12)


def test_psd_root_and_triangular_product():
    gen = torch.Generator().manual_seed(0)
    e = torch.randn(3, 70, 90, generator=gen, dtype=torch.float64)
    e[1, 5] = e[1, 2]  # a repeated row (a repeated token): a singular Gram matrix
    e[2, 40:] = e[2, :30]
    gram = e @ e.transpose(1, 2)
    root = psd_root(gram)
    assert torch.allclose(root @ root.transpose(1, 2), gram, atol=1e-9)
    assert torch.equal(root, root.tril())  # tril_matmul reads the lower triangle only
    # float32 and nearly collinear rows (deep layers): the Cholesky fails, the fallback
    # root must still be triangular and carry each row's full variance
    base = torch.randn(1, 1, 90, generator=gen)
    rows = base + 1e-3 * torch.randn(2, 64, 90, generator=gen)
    gram32 = (rows @ rows.transpose(1, 2)).float()
    assert bool((torch.linalg.cholesky_ex(gram32).info != 0).any())  # the fallback is exercised
    root32 = psd_root(gram32)
    assert torch.equal(root32, root32.tril())
    product = tril_matmul(root32, torch.eye(64).expand(2, 64, 64).contiguous())
    assert torch.allclose((product * product).sum(-1), torch.diagonal(gram32, dim1=1, dim2=2), rtol=1e-3)
    for rows in (40, 70, 256):  # one and two row blocks
        e = torch.randn(2, rows, 300, generator=gen, dtype=torch.float64)
        full = e @ e.transpose(1, 2)
        assert torch.allclose(gram_matrix(e).tril(), full.tril(), atol=1e-10)
        lower = torch.linalg.cholesky(full)
        right = torch.randn(2, rows, 11, generator=gen, dtype=torch.float64)
        assert torch.allclose(tril_matmul(lower, right, 0.3), 0.3 * lower @ right, atol=1e-10)


def test_first_occurrence_inputs_repeat_with_the_ids():
    ids = torch.tensor([[3, 1, 3, 2, 1, 3]])
    assert first_occurrence(ids).tolist() == [[0, 1, 0, 3, 1, 0]]
    spec = small_spec(vocab_size=3, seq_len=6)
    plan = sample_plan(spec, 6, with_weights=True, method="auto")
    buffer = torch.randn(1, plan.total)
    x, _ = unpack(spec, plan, buffer, ids)
    assert torch.equal(x[0, 0], x[0, 2]) and torch.equal(x[0, 1], x[0, 4]) and not torch.equal(x[0, 0], x[0, 1])


def test_derived_seeds_are_distinct():
    seeds = {derive_seed(s, 1, i) for s in range(4) for i in range(1000)}
    assert len(seeds) == 4000
