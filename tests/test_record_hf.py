"""simulate.record on Hugging Face GPT-2 and LLaMA modules built from small configs (no download).

GPT-2: with our weights copied in (position table, biases zero, LayerNorm gains one) a
``GPT2LMHeadModel`` is our network, so every tap the "gpt2" map offers must equal what
`simulate.forward` computes. LLaMA (RMSNorm, rotary positions, gated MLP) is not a network
our forward realises, so its taps are checked against the definitions computed by hand from
the module's own weights, and the residual stream against ``output_hidden_states``.
"""

from __future__ import annotations

import warnings

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


# ---------------------------------------------------------------- modern blocks (issue 16)
# Hugging Face's own Llama, Qwen3, SmolLM3 and Llama 4 modules, built from a config, with the
# weights of our frozen network copied in (norm gains one, no biases): every tap the "llama"
# map offers must equal `simulate.forward` on the same inputs. Hugging Face computes the RMS
# norms and the rotary angles in float32 even in a float64 model, so the agreement is at
# float32 rounding (relative ~1e-7 of a tap's scale); we ask for 2e-5 of it.
from simulate.engine.draw import draw_network  # noqa: E402
from simulate.record.names import resolve_sites  # noqa: E402
from simulate.record.recorder import _hooked  # noqa: E402

MODERN_TOL = 2e-5  # of max |tap|: float32 rounding in HF's norms and rotary angles, with margin
_AGREEMENT: dict[str, tuple[float, float]] = {}  # family -> (max abs difference, max relative to the tap's scale)


def _interleave(d_head: int) -> torch.Tensor:
    """Row order taking our rotate-half head layout to Llama 4's interleaved pairs:
    Llama 4's row 2i is our row i, its row 2i+1 our row i + d_head/2 (both pair i)."""
    half = d_head // 2
    return torch.stack([torch.arange(half), torch.arange(half) + half], dim=1).reshape(-1)


def _copy_weights(hf, spec, project, interleaved: bool):
    dh = spec.d_head
    order = _interleave(dh)

    def heads(w, n):  # permute the rows within each head
        return w.view(n, dh, -1)[:, order].reshape(n * dh, -1) if interleaved else w

    with torch.no_grad():
        for l, layer in enumerate(hf.model.layers):
            a = layer.self_attn
            a.q_proj.weight.copy_(heads(project.weight(l, "W_q")[0], spec.n_heads))
            a.k_proj.weight.copy_(heads(project.weight(l, "W_k")[0], spec.kv_heads))
            a.v_proj.weight.copy_(project.weight(l, "W_v")[0])
            a.o_proj.weight.copy_(project.weight(l, "W_o")[0])
            mlp = getattr(layer, "mlp", None) or layer.feed_forward
            mlp.gate_proj.weight.copy_(project.weight(l, "W_gate")[0])
            mlp.up_proj.weight.copy_(project.weight(l, "W_up")[0])
            mlp.down_proj.weight.copy_(project.weight(l, "W_down")[0])
            for norm in (layer.input_layernorm, layer.post_attention_layernorm,
                         getattr(a, "q_norm", None), getattr(a, "k_norm", None)):
                if norm is not None:
                    norm.weight.fill_(1.0)


def _modern_pair(config, model_cls, seed=0, B=3, T=12):
    """(our taps, HF's taps) on the same inputs, for a config and its HF model class."""
    # config.to_dict() also holds PretrainedConfig's generic keys (return_dict, ...), which a
    # saved config.json leaves out; the reading reports them: not the subject here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        spec = ModelSpec.from_hf_config(config.to_dict())
    interleaved = config.model_type == "llama4_text"
    project, _ = draw_network(spec, seed, torch.device("cpu"), torch.float64)
    hf = model_cls(config).double().eval()
    _copy_weights(hf, spec, project, interleaved)
    x = torch.randn(B, T, spec.d_model, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    x = x * spec.sigma_embed
    _, sites = resolve_sites(hf, "llama")
    with _hooked(hf, sites) as captured:
        hf(inputs_embeds=x)
        theirs = dict(captured)
    with torch.no_grad():
        ours = simulate.forward(spec, x.unsqueeze(0), project, record=list(sites))
    if interleaved:  # back to our head layout
        back = torch.argsort(_interleave(spec.d_head))
        for tap, n in (("attn.hook_q", spec.n_heads), ("attn.hook_k", spec.kv_heads)):
            for l in range(spec.n_layers):
                t = theirs[f"blocks.{l}.{tap}"]
                theirs[f"blocks.{l}.{tap}"] = t.view(B, T, n, spec.d_head)[..., back].reshape(B, T, -1)
    return spec, {t: ours[t][0].reshape(B, T, -1) for t in sites}, {t: theirs[t].reshape(B, T, -1) for t in sites}


def _assert_modern_agreement(family, ours, theirs):
    worst_abs = worst_rel = 0.0
    for tap in ours:
        diff = (ours[tap] - theirs[tap]).abs().max().item()
        rel = diff / theirs[tap].abs().max().item()
        worst_abs, worst_rel = max(worst_abs, diff), max(worst_rel, rel)
        assert rel < MODERN_TOL, (family, tap, diff, rel)
    _AGREEMENT[family] = (worst_abs, worst_rel)
    print(f"\n{family}: {len(ours)} taps, max |ours - HF| = {worst_abs:.2e}, relative to the tap's scale {worst_rel:.2e}")


_LLAMA_SIZES = dict(vocab_size=40, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=16, rms_norm_eps=1e-6, initializer_range=0.25,
                    attn_implementation="eager")


def test_llama_module_equals_our_forward():
    """RMSNorm, SwiGLU, grouped-query attention, RoPE with rope_theta (LlamaForCausalLM)."""
    config = transformers.LlamaConfig(**_LLAMA_SIZES, rope_theta=500000.0)
    spec, ours, theirs = _modern_pair(config, transformers.LlamaForCausalLM)
    assert (spec.normalization, spec.mlp, spec.kv_heads, spec.positional, spec.rope_theta) == \
        ("rmsnorm", "swiglu", 2, "rope", 500000.0)
    assert "blocks.1.mlp.hook_pre_linear" in ours and ours["blocks.0.attn.hook_k"].shape[-1] == 2 * spec.d_head
    _assert_modern_agreement("llama", ours, theirs)
    # the comparison can fail: another rope_theta moves the attention output
    wrong = spec.replace(rope_theta=10000.0)
    project, _ = draw_network(spec, 0, torch.device("cpu"), torch.float64)
    x = torch.randn(3, 12, 32, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * spec.sigma_embed
    moved = simulate.forward(wrong, x.unsqueeze(0), project, record=["blocks.0.attn.hook_z"])["blocks.0.attn.hook_z"]
    assert (moved[0].reshape(3, 12, -1) - theirs["blocks.0.attn.hook_z"]).abs().max() > 1e-3


def test_qwen3_module_equals_our_forward():
    """QK-norm (per-head RMS over d_head before RoPE; Qwen3ForCausalLM's q_norm, k_norm at gain one)."""
    sizes = dict(_LLAMA_SIZES, head_dim=8)
    config = transformers.Qwen3Config(**sizes, rope_theta=10000.0)
    spec, ours, theirs = _modern_pair(config, transformers.Qwen3ForCausalLM, seed=2)
    assert spec.qk_norm is True
    _assert_modern_agreement("qwen3", ours, theirs)


def test_smollm3_module_equals_our_forward():
    """RoPE on three layers of four (no_rope_layers), GQA, SwiGLU, RMSNorm (SmolLM3ForCausalLM)."""
    sizes = dict(_LLAMA_SIZES, num_hidden_layers=4)
    config = transformers.SmolLM3Config(**sizes, no_rope_layers=[1, 1, 1, 0], rope_theta=5000000.0, pad_token_id=None)
    spec, ours, theirs = _modern_pair(config, transformers.SmolLM3ForCausalLM, seed=4)
    assert spec.positional == ("rope", "rope", "rope", "none")
    _assert_modern_agreement("smollm3", ours, theirs)
    # record's statistics of the same model (batches of inputs_embeds) are those of our taps
    project, _ = draw_network(spec, 4, torch.device("cpu"), torch.float64)
    hf = transformers.SmolLM3ForCausalLM(config).double().eval()
    _copy_weights(hf, spec, project, interleaved=False)
    x = torch.randn(3, 12, spec.d_model, generator=torch.Generator().manual_seed(5), dtype=torch.float64) * spec.sigma_embed
    result = record(hf, [{"inputs_embeds": x}], taps=list(ours), progress=False)
    assert result.meta["names"] == "llama" and "blocks.3.mlp.hook_pre_linear" in result.taps
    for tap in ours:
        st = direct_stats(ours[tap])
        np.testing.assert_allclose(result[tap].var, st["var"], rtol=1e-5, err_msg=tap)


def test_llama4_text_module_equals_our_forward():
    """Llama 4 text: QK-norm on the RoPE layers only (after RoPE there, the same values: RMS
    commutes with the rotation), the query temperature on the NoPE layer with a small
    floor_scale, one key/value head. Every layer dense (moe_layers=[]: Llama4TextMLP of width
    intermediate_size_mlp), attention_chunk_size >= T (chunking changes nothing). Llama 4 rotates
    interleaved pairs: the q/k rows of each head are permuted to match (same logits)."""
    config = transformers.Llama4TextConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, intermediate_size_mlp=48, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=1, head_dim=8, max_position_embeddings=16, rms_norm_eps=1e-5,
        moe_layers=[], floor_scale=2, attn_scale=0.5, attention_chunk_size=16, initializer_range=0.25,
        rope_theta=500000.0, attn_implementation="eager")
    with warnings.catch_warnings():  # moe_layers = []: every layer dense, nothing left not understood
        warnings.simplefilter("error")
        ModelSpec.from_hf_config(config.to_dict())
    spec, ours, theirs = _modern_pair(config, transformers.Llama4ForCausalLM, seed=6)
    assert spec.qk_norm == (True, True, True, False) and spec.positional == ("rope", "rope", "rope", "none")
    assert spec.attn_temperature.floor_scale == 2 and spec.attn_temperature.scale == 0.5
    _assert_modern_agreement("llama4_text", ours, theirs)
