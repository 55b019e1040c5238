"""simulate.record on Hugging Face GPT-2 and LLaMA modules built from small configs (no download).

GPT-2: with our weights copied in (position table, biases zero, LayerNorm gains one) a
``GPT2LMHeadModel`` is our network, so every tap the "gpt2" map offers must equal what
`simulate.forward` computes. LLaMA (RMSNorm, rotary positions, gated MLP) is not a network
our forward realises, so its taps are checked against the definitions computed by hand from
the module's own weights, and the residual stream against ``output_hidden_states``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import simulate
from simulate import NoPETransformer, record
from theory import ModelSpec

transformers = pytest.importorskip("transformers")

from test_record import direct_stats  # noqa: E402  (tests/ is on sys.path under pytest)


pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _gpt2_from(model: NoPETransformer):
    spec = model.spec
    config = transformers.GPT2Config(
        vocab_size=spec.vocab_size, n_positions=spec.seq_len, n_embd=spec.d_model, n_layer=spec.n_layers,
        n_head=spec.n_heads, n_inner=spec.mlp_width, activation_function="gelu_new", layer_norm_epsilon=spec.ln_eps,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    hf = transformers.GPT2LMHeadModel(config).double().eval()
    with torch.no_grad():
        hf.transformer.wte.weight.copy_(model.embed.weight)
        hf.transformer.wpe.weight.zero_()  # NoPE
        for block, ours in zip(hf.transformer.h, model.blocks):
            for ln in (block.ln_1, block.ln_2):
                ln.weight.fill_(1.0)
                ln.bias.zero_()
            # Conv1D stores (d_in, d_out): the transpose of our (d_out, d_in)
            block.attn.c_attn.weight.copy_(ours.attn.W_qkv.weight.T)
            block.attn.c_proj.weight.copy_(ours.attn.W_o.weight.T)
            block.mlp.c_fc.weight.copy_(ours.mlp.W_in.weight.T)
            block.mlp.c_proj.weight.copy_(ours.mlp.W_out.weight.T)
            for lin in (block.attn.c_attn, block.attn.c_proj, block.mlp.c_fc, block.mlp.c_proj):
                lin.bias.zero_()
    return hf


def test_gpt2_equals_our_forward():
    spec = ModelSpec(d_model=32, n_heads=4, n_layers=2, seq_len=12, vocab_size=40, output_scaling="gpt2",
                     sigma_embed=0.5, sigma_q=0.3, sigma_k=0.3)  # larger logits: non-uniform attention
    ours = NoPETransformer(spec, seed=4, dtype=torch.float64)
    hf = _gpt2_from(ours)
    ids = torch.randint(40, (10, 12), generator=torch.Generator().manual_seed(2))
    result = record(hf, ids, batch_size=4, progress=False)
    assert result.meta["names"] == "gpt2"
    assert len(result.taps) == 2 * 13  # every tap but scores and pattern
    with torch.no_grad():
        cache = simulate.forward(ours.functional_spec(), ours.embed_input(ids).unsqueeze(0), ours.projections(),
                                 record=result.taps)
    for tap in result.taps:
        ref = direct_stats(cache[tap][0])
        np.testing.assert_allclose(result[tap].mean, ref["mean"], rtol=1e-8, atol=1e-13, err_msg=tap)
        np.testing.assert_allclose(result[tap].var, ref["var"], rtol=1e-8, atol=1e-13, err_msg=tap)
    with pytest.raises(ValueError, match="not available from this model"):
        record(hf, ids, taps=[("pattern", 0)])


def test_llama_taps_match_their_definitions():
    config = transformers.LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-6,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(config).double().eval()
    with torch.no_grad():  # gains away from one, so a map that skipped them would be caught
        for layer in hf.model.layers:
            layer.input_layernorm.weight.uniform_(0.5, 1.5)
            layer.post_attention_layernorm.weight.uniform_(0.5, 1.5)
    ids = torch.randint(40, (9, 11), generator=torch.Generator().manual_seed(3))
    result = record(hf, ids, batch_size=4, progress=False)
    assert result.meta["names"] == "llama"
    with torch.no_grad():
        hidden = hf(ids, output_hidden_states=True).hidden_states  # embeddings, then after each layer (last normed)
        refs = {}
        for l, layer in enumerate(hf.model.layers):
            x = hidden[l]
            rms = lambda t: t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6)  # noqa: E731
            e = rms(x)
            a = layer.self_attn
            g = layer.input_layernorm.weight * e
            refs.update({f"blocks.{l}.hook_resid_pre": x, f"blocks.{l}.ln1.hook_normalized": e,
                         f"blocks.{l}.attn.hook_q": g @ a.q_proj.weight.T, f"blocks.{l}.attn.hook_k": g @ a.k_proj.weight.T,
                         f"blocks.{l}.attn.hook_v": g @ a.v_proj.weight.T})
            if l + 1 < len(hf.model.layers):
                refs[f"blocks.{l}.hook_resid_post"] = hidden[l + 1]
    # Hugging Face's RMSNorm computes in float32 even in a float64 model: taps downstream of a
    # norm carry its rounding (relative ~1e-7) against the float64 definitions here
    for tap, ref in refs.items():
        st = direct_stats(ref)
        np.testing.assert_allclose(result[tap].var, st["var"], rtol=1e-6, err_msg=tap)
        np.testing.assert_allclose(result[tap].mean, st["mean"], rtol=1e-6, atol=1e-7, err_msg=tap)
    # the remaining taps by identity: resid_mid = resid_pre + attn_out, resid_post = resid_mid + mlp_out
    cache = {}
    hooks = [hf.model.layers[0].register_forward_hook(lambda m, a, o: cache.__setitem__("post", o[0] if isinstance(o, tuple) else o))]
    with torch.no_grad():
        mlp = hf.model.layers[0].mlp
        hooks.append(mlp.register_forward_hook(lambda m, a, o: cache.update(mlp_in=a[0], mlp_out=o)))
        hf(ids)
    for h in hooks:
        h.remove()
    with torch.no_grad():
        e2 = cache["mlp_in"] / hf.model.layers[0].post_attention_layernorm.weight
        gate = cache["mlp_in"] @ mlp.gate_proj.weight.T
        post = F.silu(gate) * (cache["mlp_in"] @ mlp.up_proj.weight.T)
    for tap, ref in (("ln2.hook_normalized", e2), ("mlp.hook_pre", gate), ("mlp.hook_post", post),
                     ("hook_mlp_out", cache["mlp_out"]), ("hook_resid_mid", cache["post"] - cache["mlp_out"])):
        np.testing.assert_allclose(result[f"blocks.0.{tap}"].var, direct_stats(ref)["var"], rtol=1e-6, err_msg=tap)
