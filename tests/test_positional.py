"""Positional variants (issue #8) against their reference definitions, on hand-checked inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import simulate
from simulate import Projections, forward
from simulate.engine.positional import alibi_bias, alibi_slopes, rope_angles, rope_rotate, sinusoidal_table
from tests.simulate_helpers import one_thread, small_spec  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- sinusoidal (Vaswani et al. 2017)
def test_sinusoidal_table_by_hand():
    t = sinusoidal_table(3, 4, dtype=torch.float64)
    # PE[p, 2i] = sin(p / 10000^(2i/d)), PE[p, 2i+1] = cos(p / 10000^(2i/d)); d = 4: 10000^(2/4) = 100
    want = [
        [0.0, 1.0, 0.0, 1.0],
        [math.sin(1.0), math.cos(1.0), math.sin(0.01), math.cos(0.01)],
        [math.sin(2.0), math.cos(2.0), math.sin(0.02), math.cos(0.02)],
    ]
    assert torch.allclose(t, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-15)
    odd = sinusoidal_table(2, 5, dtype=torch.float64)  # the last column is a sine (i = 2)
    assert odd[1, 4].item() == pytest.approx(math.sin(1.0 / 10000 ** (4 / 5)), abs=1e-15)


# ---------------------------------------------------------------- RoPE (Su et al. 2021)
def test_rope_rotates_half_pairs_by_hand():
    """Rotate-half (Hugging Face Llama): coordinates (i, i + d_head/2) form pair i."""
    cos, sin = rope_angles(3, 4)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64).expand(3, 1, 4)  # (T, H=1, dh)
    out = rope_rotate(x, cos, sin)
    assert torch.equal(out[0], x[0])  # position 0: no rotation
    for p in (1, 2):
        a, b = p * 1.0, p / 100.0  # theta_0 = 1, theta_1 = 10000^(-2/4) = 1/100
        # pair 0 = (x_0, x_2) = (1, 3) by a; pair 1 = (x_1, x_3) = (2, 4) by b
        want = [
            1 * math.cos(a) - 3 * math.sin(a), 2 * math.cos(b) - 4 * math.sin(b),
            3 * math.cos(a) + 1 * math.sin(a), 4 * math.cos(b) + 2 * math.sin(b),
        ]
        assert torch.allclose(out[p, 0], torch.tensor(want, dtype=torch.float64), atol=1e-14)


def test_rope_theta_sets_the_base():
    cos, sin = rope_angles(3, 4, base=500000.0)
    angle = torch.tensor([[0.0, 0.0], [1.0, 500000.0 ** -0.5], [2.0, 2 * 500000.0 ** -0.5]], dtype=torch.float64)
    assert torch.allclose(cos, torch.cos(angle), atol=1e-15) and torch.allclose(sin, torch.sin(angle), atol=1e-15)


def test_rope_preserves_norms_and_makes_scores_relative():
    T, dh = 20, 8
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(dh, generator=gen, dtype=torch.float64)
    k = torch.randn(dh, generator=gen, dtype=torch.float64)
    cos, sin = rope_angles(T, dh)
    rq = rope_rotate(q.expand(T, 1, dh), cos, sin)[:, 0]  # (T, dh): q placed at every position
    rk = rope_rotate(k.expand(T, 1, dh), cos, sin)[:, 0]
    assert torch.allclose(rq.norm(dim=-1), q.norm().expand(T), atol=1e-13)
    dots = rq @ rk.T  # (T, T): [m, n] = R_m q . R_n k
    for offset in range(-T + 1, T):
        diag = torch.diagonal(dots, offset=-offset)  # entries with m - n = offset
        assert torch.allclose(diag, diag[0].expand_as(diag), atol=1e-12), offset


def test_rope_refuses_odd_head_width():
    spec = small_spec(d_model=12, n_heads=4, positional="rope")  # d_head = 3
    with pytest.raises(ValueError, match="d_head"):
        simulate.run(spec, taps=[("hook_z", 0)], samples=2, device="cpu", progress=False)


# ---------------------------------------------------------------- ALiBi (Press et al. 2022)
def test_alibi_slopes_follow_the_paper():
    assert alibi_slopes(8) == [1 / 2**k for k in range(1, 9)]
    assert alibi_slopes(4) == [1 / 4, 1 / 16, 1 / 64, 1 / 256]
    # not a power of two: the 4-head slopes, then every other slope of 8 heads
    assert alibi_slopes(6) == [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]
    assert alibi_slopes(12)[8:] == pytest.approx([2 ** -0.5, 2 ** -1.5, 2 ** -2.5, 2 ** -3.5], rel=1e-15)
    bias = alibi_bias(2, 3, dtype=torch.float64)  # slopes 1/16, 1/256... for H=2: 2^-4, 2^-8
    assert torch.equal(bias[0], torch.tensor([[0, 0, 0], [-1 / 16, 0, 0], [-2 / 16, -1 / 16, 0]], dtype=torch.float64))


# ---------------------------------------------------------------- the forward against a loop
def _reference_attention(spec, x, Wq, Wk, Wv, pos_table=None):
    """hook_attn_scores and hook_z of one sequence, one layer, written from the definitions."""
    T, d = x.shape
    H, dh = spec.n_heads, spec.d_head
    if pos_table is not None:
        x = x + pos_table
    e = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + spec.ln_eps)
    q, k, v = (e @ Wq.T).view(T, H, dh), (e @ Wk.T).view(T, H, dh), (e @ Wv.T).view(T, H, dh)
    if spec.positional == "rope":
        def rot(vec, p):  # pair i = coordinates (i, i + dh/2), angle p theta_i
            out = vec.clone()
            for i in range(dh // 2):
                a = p * 10000.0 ** (-2 * i / dh)
                R = torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]], dtype=vec.dtype)
                out[[i, i + dh // 2]] = R @ vec[[i, i + dh // 2]]
            return out
        q = torch.stack([torch.stack([rot(q[p, h], p) for h in range(H)]) for p in range(T)])
        k = torch.stack([torch.stack([rot(k[p, h], p) for h in range(H)]) for p in range(T)])
    slopes = alibi_slopes(H) if spec.positional == "alibi" else [0.0] * H
    scores = torch.full((H, T, T), float("nan"), dtype=x.dtype)
    z = torch.zeros(T, H, dh, dtype=x.dtype)
    for h in range(H):
        for m in range(T):
            logits = torch.stack([q[m, h] @ k[n, h] / math.sqrt(dh) - slopes[h] * (m - n) for n in range(m + 1)])
            a = torch.softmax(logits, dim=0)
            scores[h, m, :m + 1] = logits
            z[m, h] = sum(a[n] * v[n, h] for n in range(m + 1))
    return scores, z


@pytest.mark.parametrize("positional", ["learned", "sinusoidal", "rope", "alibi"])
def test_forward_matches_the_reference_definition(positional):
    spec = small_spec(d_model=16, n_heads=4, seq_len=7, positional=positional, sigma_q=0.6, sigma_k=0.6)
    gen = torch.Generator().manual_seed(11)
    S = 2
    draws = {(0, "qkv"): ("W", torch.randn(S, 48, 16, generator=gen, dtype=torch.float64)),
             (0, "o"): ("W", torch.randn(S, 16, 16, generator=gen, dtype=torch.float64))}
    if positional == "learned":
        draws["pos"] = ("P", torch.randn(S, 7, 16, generator=gen, dtype=torch.float64))
    project = Projections(spec, draws)
    x = torch.randn(S, 1, 7, 16, generator=gen, dtype=torch.float64) * spec.sigma_embed
    taps = ["blocks.0.attn.hook_attn_scores", "blocks.0.attn.hook_z"]
    cache = forward(spec, x, project, record=taps)
    fused = forward(spec, x, project, record=["blocks.0.attn.hook_z"])  # the fused-kernel path
    for s in range(S):
        table = {"learned": project.pos_embed[s] if positional == "learned" else None,
                 "sinusoidal": sinusoidal_table(7, 16, dtype=torch.float64)}.get(positional)
        ref_scores, ref_z = _reference_attention(
            spec, x[s, 0], project.weight(0, "W_q")[s], project.weight(0, "W_k")[s], project.weight(0, "W_v")[s], table)
        causal = ~torch.isnan(ref_scores)
        assert torch.allclose(cache[taps[0]][s, 0][causal], ref_scores[causal], atol=1e-12)
        assert torch.allclose(cache[taps[1]][s, 0], ref_z, atol=1e-12)
        assert torch.allclose(fused[taps[1]][s, 0], ref_z, atol=1e-12)


def test_learned_table_is_part_of_the_frozen_network():
    """Quenched: the other weights are those of positional 'none' (the table is drawn last);
    the table has N(0, sigma_embed^2) entries and depends on the seed only."""
    from simulate.engine.draw import draw_network

    spec = small_spec(d_model=64, n_heads=4, seq_len=200, sigma_embed=0.5)
    learned = spec.replace(positional="learned")
    cpu = torch.device("cpu")
    none_net, _ = draw_network(spec, 3, cpu, torch.float32)
    net, _ = draw_network(learned, 3, cpu, torch.float32)
    again, _ = draw_network(learned, 3, cpu, torch.float32)
    assert torch.equal(net.draws[(0, "qkv")][1], none_net.draws[(0, "qkv")][1])
    assert none_net.pos_embed is None and torch.equal(net.pos_embed, again.pos_embed)
    table = net.pos_embed.double().numpy()
    assert table.shape == (1, 200, 64)
    assert abs(table.std() - 0.5) < 5 * 0.5 / math.sqrt(2 * table.size)
    with pytest.raises(ValueError, match="learned"):
        forward(learned, torch.zeros(1, 1, 200, 64), none_net, record=["blocks.0.hook_resid_pre"])


def test_variants_run_under_both_measures_and_methods():
    """Every variant runs through `simulate.run` (Gram and explicit paths, fused and
    hand-written attention); annealed learned tables are fresh per network."""
    for positional in ("learned", "sinusoidal", "rope", "alibi"):
        spec = small_spec(seq_len=6, positional=positional, vocab_size=7)
        for method in ("explicit", "gram"):
            r = simulate.run(spec, taps=[("resid_post", 0), ("pattern", 0)], samples=8, seed=2,
                             method=method, device="cpu", progress=False, dtype="float64")
            assert np.all(np.isfinite(r["resid_post", 0].var))
            assert np.allclose(r["pattern", 0].mean, 1 / np.arange(1, 7), rtol=1e-12)
        q = simulate.run(spec, taps=[("resid_post", 0)], samples=4, seed=2, measure="quenched", device="cpu", progress=False)
        assert np.all(np.isfinite(q["resid_post", 0].var))
    # sinusoidal at GPT-2's sigma: the unscaled table dominates the residual stream (mean square 1/2)
    spec = small_spec(positional="sinusoidal", seq_len=6)
    r = simulate.run(spec, taps=[("resid_pre", 0)], samples=4, seed=0, device="cpu", progress=False, dtype="float64")
    table = sinusoidal_table(6, 32, dtype=torch.float64).numpy()
    assert np.allclose(r["resid_pre", 0].mean, table.mean(axis=1), atol=0.02)
