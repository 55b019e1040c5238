"""The RoPE twin of the trainable model (issue 20): the engine's rotation, checked independently."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

import simulate
from theory import ModelSpec
from simulate.experiments.train import PRESETS, NoPETransformer, evaluate, load_model, train_model, windows
from simulate.experiments.train.corpus import load_corpus

pytestmark = pytest.mark.usefixtures("torch_one_thread")

SPEC = ModelSpec(d_model=16, n_heads=2, n_layers=2, seq_len=10, vocab_size=13, output_scaling="gpt2", positional="rope")
FIXTURE = Path(__file__).parent / "data" / "tiny_corpus.txt"


def _capture(model, names):
    """Forward hooks of our own on the model's hook points: name -> output of the last call."""
    got, handles = {}, []
    modules = dict(model.named_modules())
    for name in names:
        handles.append(modules[name].register_forward_hook(lambda mod, inp, out, name=name: got.__setitem__(name, out.detach())))
    return got, handles


def _complex_rotation(x: torch.Tensor, theta: float) -> torch.Tensor:
    """RoPE written independently: pair (i, i + dh/2) as the complex number x_i + 1j x_{i+dh/2},
    multiplied by exp(1j p theta^(-2i/dh)) at 0-based position p. ``x`` is (B, T, H, dh)."""
    T, dh = x.shape[1], x.shape[-1]
    half = dh // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())  # (B, T, H, dh/2)
    freq = theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / dh)  # (dh/2,)
    phase = torch.polar(torch.ones(T, half, dtype=torch.float64), torch.arange(T, dtype=torch.float64)[:, None] * freq)
    r = z * phase[None, :, None, :]  # (B, T, H, dh/2)
    return torch.cat((r.real, r.imag), dim=-1)  # (B, T, H, dh)


def test_rope_model_is_the_engine_forward_and_rotates_like_complex_numbers():
    model = NoPETransformer(SPEC, seed=3, dtype=torch.float64)
    ids = torch.randint(13, (4, 10), generator=torch.Generator().manual_seed(0))
    names = [f"blocks.{l}.{t}" for l in range(2) for t in ("attn.hook_q", "attn.hook_k", "attn.hook_attn_scores",
                                                           "attn.hook_z", "hook_attn_out", "hook_resid_post")]
    got, handles = _capture(model, names)
    with torch.no_grad():
        model(ids)
        cache = simulate.forward(model.functional_spec(), model.embed_input(ids).unsqueeze(0), model.projections(),
                                 record=[n for n in names if not n.endswith("hook_attn_scores")])
    for h in handles:
        h.remove()
    assert model.functional_spec().positional == "rope"
    for name in names:
        if name.endswith("hook_attn_scores"):
            continue
        np.testing.assert_allclose(got[name].numpy(), cache[name][0].numpy(), rtol=1e-10, atol=1e-14, err_msg=name)
    # the scores are q_rot . k_rot / sqrt(d_head) with the rotation of the complex-number form
    for l in range(2):
        q = _complex_rotation(got[f"blocks.{l}.attn.hook_q"], SPEC.rope_theta)
        k = _complex_rotation(got[f"blocks.{l}.attn.hook_k"], SPEC.rope_theta)
        ref = torch.einsum("bmhd,bnhd->bhmn", q, k) / SPEC.d_head ** 0.5  # (B, H, T, T)
        scores = got[f"blocks.{l}.attn.hook_attn_scores"]
        lower = torch.ones(10, 10, dtype=torch.bool).tril()
        np.testing.assert_allclose(scores[..., lower].numpy(), ref[..., lower].numpy(), rtol=1e-10, atol=1e-14)
        assert torch.isinf(scores[..., ~lower]).all()


def test_rope_twin_shares_the_init_draw_and_position_one():
    """Same seed, same weights as the NoPE model (no table); position 1 is rotated by angle 0,
    so the first position's outputs agree exactly and later ones differ."""
    rope = NoPETransformer(SPEC, seed=1, dtype=torch.float64)
    nope = NoPETransformer(dataclasses.replace(SPEC, positional="none"), seed=1, dtype=torch.float64)
    assert all(torch.equal(a, b) for a, b in zip(rope.state_dict().values(), nope.state_dict().values()))
    ids = torch.randint(13, (3, 25), generator=torch.Generator().manual_seed(2))  # longer than seq_len: runs
    with torch.no_grad():
        r, n = rope.residual(ids), nope.residual(ids)  # (3, 25, 16)
    assert torch.equal(r[:, 0], n[:, 0])
    assert (r[:, 1:] - n[:, 1:]).abs().max() > 1e-6


def test_rope_needs_an_even_head_and_is_a_training_option(tmp_path):
    with pytest.raises(ValueError, match="d_head"):
        NoPETransformer(dataclasses.replace(SPEC, d_model=15, n_heads=5), seed=0)  # d_head 3
    corpus = load_corpus(FIXTURE, holdout=0.1)
    cfg = dataclasses.replace(PRESETS["tiny"], d_model=16, n_heads=2, n_layers=2, seq_len=16, batch_size=8, steps=30,
                              warmup=4, eval_every=10, eval_windows=4, checkpoint_every=30, positionals=("rope",))
    train_model(cfg, corpus, tmp_path, "rope", progress=False)
    model = load_model(tmp_path / "rope" / "checkpoint.pt")
    assert model.spec.positional == "rope"
    batch = windows(corpus.heldout, cfg.seq_len + 1, 16)
    assert evaluate(model, batch) < evaluate(load_model(tmp_path / "rope" / "init.pt"), batch) - 0.5  # nats
