"""Modern decoder blocks (issue 16) in simulate: RMSNorm, SwiGLU, grouped-query attention,
QK-norm, per-layer RoPE / ALiBi / NoPE with ``rope_theta``, the NoPE-layer query temperature.

Every variant is checked tap by tap against a plain one-network, one-sequence reference
written here from the definitions (loops over heads and positions, float64, the same
weights), on the hand-written path (scores and pattern tapped) and the fused kernel; under
the quenched measure on the frozen network `draw_network` draws; under the annealed measure
the Gram fast path against explicit weights in law (means, variances, ``sum_sq`` within a
few standard errors). The comparison with Hugging Face's own modules is in
``tests/test_record_hf.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import simulate
from simulate import Projections, forward
from simulate.engine.budget import tap_groups
from simulate.engine.draw import draw_network, sample_plan
from simulate.engine.projections import projection_kinds, projection_shape
from theory import ModelSpec
from theory.taps import all_taps, block_taps
from tests.simulate_helpers import one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

TEMPERATURE = {"floor_scale": 2, "scale": 0.5}  # tau(p) > 1 from p = 1 on: visible at T = 8

SPECS = {
    # SmolLM3-like: RMSNorm, SwiGLU, GQA, RoPE on three of four layers
    "smollm3": ModelSpec(d_model=32, n_heads=4, n_kv_heads=2, n_layers=4, seq_len=8, normalization="rmsnorm",
                         mlp="swiglu", d_mlp=48, positional=["rope", "rope", "rope", "none"], rope_theta=500000.0,
                         sigma_q=0.4, sigma_k=0.4, sigma_embed=0.5),
    # Llama-4-like: QK-norm on the RoPE layers, the temperature on the NoPE layer, one kv head
    "llama4": ModelSpec(d_model=32, n_heads=4, n_kv_heads=1, n_layers=4, seq_len=8, normalization="rmsnorm",
                        mlp="swiglu", d_mlp=40, positional=["rope", "rope", "rope", "none"],
                        qk_norm=[True, True, True, False], attn_temperature=TEMPERATURE, sigma_q=0.5, sigma_k=0.5),
    # mixed: LayerNorm with SwiGLU, an ALiBi layer, a QK-norm NoPE layer with temperature
    "mixed": ModelSpec(d_model=32, n_heads=4, n_kv_heads=2, n_layers=2, seq_len=8, mlp="swiglu",
                       positional=["alibi", "none"], qk_norm=[False, True], attn_temperature=TEMPERATURE,
                       attn_scale="linear", ln_eps=1e-4, sigma_q=0.6, sigma_k=0.6, sigma_embed=0.3),
    # Qwen3-like attention only: QK-norm everywhere, RoPE, standard-MLP-free
    "qwen3_attn": ModelSpec(d_model=32, n_heads=2, n_kv_heads=1, n_layers=2, seq_len=8, normalization="rmsnorm",
                            attn_only=True, positional="rope", qk_norm=True, rope_theta=1000.0),
    # RMSNorm with the standard MLP, whole-model NoPE with the temperature
    "rms_gelu": ModelSpec(d_model=32, n_heads=4, n_layers=2, seq_len=8, normalization="rmsnorm", activation="gelu",
                          attn_temperature=TEMPERATURE, sigma_q=0.5, sigma_k=0.5, d_mlp=24),
}


# ---------------------------------------------------------------- the reference
def _layer_scheme(spec, layer):
    return spec.positional if isinstance(spec.positional, str) else spec.positional[layer]


def _layer_qk_norm(spec, layer):
    return spec.qk_norm if isinstance(spec.qk_norm, bool) else spec.qk_norm[layer]


def _tau(p, temperature):
    """The issue's formula: log(floor((p + 1) / floor_scale) + 1) * scale + 1, p 0-based."""
    return math.log(math.floor((p + 1) / temperature["floor_scale"]) + 1) * temperature["scale"] + 1


def reference(spec: ModelSpec, x: torch.Tensor, W: dict, temperature: dict | None) -> dict[str, torch.Tensor]:
    """Every tap of one network on one sequence ``x`` (T, d), from the definitions.

    ``W[(layer, name)]`` (d_out, d_in): W_q (H dh rows), W_k, W_v (H_kv dh rows), W_o, and
    W_gate, W_up, W_down (SwiGLU) or W_in, W_out. Scores/pattern (H, T, T), NaN above the diagonal.
    """
    T, d = x.shape
    H, Hkv, dh = spec.n_heads, spec.n_kv_heads or spec.n_heads, spec.d_model // spec.n_heads
    scale = 1 / math.sqrt(dh) if spec.attn_scale == "sqrt" else 1 / dh
    eps = spec.ln_eps

    def norm(t):
        if spec.normalization == "rmsnorm":
            return t / torch.sqrt((t * t).mean(-1, keepdim=True) + eps)
        c = t - t.mean(-1, keepdim=True)
        return c / torch.sqrt((c * c).mean(-1, keepdim=True) + eps)

    def rotate(vec, p):  # RoPE, rotate-half pairs (i, i + dh/2), angle p * theta^(-2i/dh)
        out = vec.clone()
        for i in range(dh // 2):
            a = p * spec.rope_theta ** (-2 * i / dh)
            out[i] = vec[i] * math.cos(a) - vec[i + dh // 2] * math.sin(a)
            out[i + dh // 2] = vec[i + dh // 2] * math.cos(a) + vec[i] * math.sin(a)
        return out

    out = {}
    for layer in range(spec.n_layers):
        pre = f"blocks.{layer}."
        scheme = _layer_scheme(spec, layer)
        out[pre + "hook_resid_pre"] = x
        e = norm(x)
        out[pre + "ln1.hook_normalized"] = e
        q = (e @ W[(layer, "W_q")].T).view(T, H, dh)
        k = (e @ W[(layer, "W_k")].T).view(T, Hkv, dh)
        v = (e @ W[(layer, "W_v")].T).view(T, Hkv, dh)
        out[pre + "attn.hook_q"], out[pre + "attn.hook_k"], out[pre + "attn.hook_v"] = q, k, v
        qs, ks = q.clone(), k.clone()
        if _layer_qk_norm(spec, layer):
            qs = qs / torch.sqrt((qs * qs).mean(-1, keepdim=True) + eps)
            ks = ks / torch.sqrt((ks * ks).mean(-1, keepdim=True) + eps)
        if scheme == "rope":
            qs = torch.stack([torch.stack([rotate(qs[p, h], p) for h in range(H)]) for p in range(T)])
            ks = torch.stack([torch.stack([rotate(ks[p, h], p) for h in range(Hkv)]) for p in range(T)])
        if scheme == "none" and temperature is not None:
            qs = torch.stack([qs[p] * _tau(p, temperature) for p in range(T)])
        slopes = [2.0 ** (-8 * (h + 1) / H) for h in range(H)] if scheme == "alibi" else [0.0] * H  # H a power of 2
        scores = torch.full((H, T, T), float("nan"), dtype=x.dtype)
        pattern = torch.full((H, T, T), float("nan"), dtype=x.dtype)
        z = torch.zeros(T, H, dh, dtype=x.dtype)
        for h in range(H):
            j = h // (H // Hkv)  # the key/value head of query head h
            for m in range(T):
                logits = torch.stack([qs[m, h] @ ks[n, j] * scale - slopes[h] * (m - n) for n in range(m + 1)])
                a = torch.exp(logits - logits.max())
                a = a / a.sum()
                scores[h, m, :m + 1], pattern[h, m, :m + 1] = logits, a
                z[m, h] = sum(a[n] * v[n, j] for n in range(m + 1))
        out[pre + "attn.hook_attn_scores"], out[pre + "attn.hook_pattern"], out[pre + "attn.hook_z"] = scores, pattern, z
        attn_out = z.reshape(T, H * dh) @ W[(layer, "W_o")].T
        out[pre + "hook_attn_out"] = attn_out
        x = x + attn_out
        if spec.attn_only:
            out[pre + "hook_resid_post"] = x
            continue
        out[pre + "hook_resid_mid"] = x
        e2 = norm(x)
        out[pre + "ln2.hook_normalized"] = e2
        if spec.mlp == "swiglu":
            gate, up = e2 @ W[(layer, "W_gate")].T, e2 @ W[(layer, "W_up")].T
            post = gate / (1 + torch.exp(-gate)) * up  # silu(gate) * up
            out[pre + "mlp.hook_pre"], out[pre + "mlp.hook_pre_linear"] = gate, up
            mlp_out = post @ W[(layer, "W_down")].T
        else:
            gate = e2 @ W[(layer, "W_in")].T
            post = 0.5 * gate * (1 + torch.erf(gate / math.sqrt(2)))  # exact GELU
            out[pre + "mlp.hook_pre"] = gate
            mlp_out = post @ W[(layer, "W_out")].T
        out[pre + "mlp.hook_post"], out[pre + "hook_mlp_out"] = post, mlp_out
        x = x + mlp_out
        out[pre + "hook_resid_post"] = x
    return out


def _weight_names(spec):
    attn = ("W_q", "W_k", "W_v", "W_o")
    if spec.attn_only:
        return attn
    return attn + (("W_gate", "W_up", "W_down") if spec.mlp == "swiglu" else ("W_in", "W_out"))


def _explicit(spec, S, gen):
    draws = {(l, kind): ("W", torch.randn(S, *projection_shape(spec, kind), generator=gen, dtype=torch.float64))
             for l in range(spec.n_layers) for kind in projection_kinds(spec, l)}
    return Projections(spec, draws)


def _check_against_reference(spec, project, x, temperature):
    """Every tap on the hand-written path, and the fused path's taps, equal the reference."""
    S, B = x.shape[:2]
    taps = all_taps(spec.n_layers, spec)
    hand = forward(spec, x, project, record=taps)
    no_pattern = [t for t in taps if not t.endswith(("hook_attn_scores", "hook_pattern"))]
    fused = forward(spec, x, project, record=no_pattern)
    assert set(hand) == set(taps) and set(fused) == set(no_pattern)
    for s in range(S):
        W = {(l, n): project.weight(l, n)[s] for l in range(spec.n_layers) for n in _weight_names(spec)}
        for b in range(B):
            ref = reference(spec, x[s, b], W, temperature)
            assert set(ref) == set(taps)
            for tap in taps:
                want = ref[tap]
                if tap.endswith(("hook_attn_scores", "hook_pattern")):
                    causal = ~torch.isnan(want)
                    torch.testing.assert_close(hand[tap][s, b][causal], want[causal], rtol=1e-10, atol=1e-12, msg=tap)
                    continue
                got = hand[tap][s, b]
                assert got.shape == want.shape, (tap, got.shape, want.shape)
                torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12, msg=tap)
                torch.testing.assert_close(fused[tap][s, b], want, rtol=1e-10, atol=1e-12, msg=f"fused {tap}")


@pytest.mark.parametrize("name", list(SPECS))
def test_every_tap_equals_the_reference_annealed_networks(name):
    """S networks with their own explicit weights (the annealed measure's explicit path)."""
    spec = SPECS[name]
    gen = torch.Generator().manual_seed(5)
    project = _explicit(spec, 2, gen)
    x = torch.randn(2, 2, spec.seq_len, spec.d_model, generator=gen, dtype=torch.float64) * spec.sigma_embed
    temperature = TEMPERATURE if spec.attn_temperature is not None else None
    _check_against_reference(spec, project, x, temperature)


@pytest.mark.parametrize("name", ["smollm3", "llama4"])
def test_every_tap_equals_the_reference_on_the_quenched_network(name):
    """The one frozen network of a quenched run (`draw_network`), several input sequences."""
    spec = SPECS[name]
    project, _ = draw_network(spec, 3, torch.device("cpu"), torch.float64)
    x = torch.randn(1, 3, spec.seq_len, spec.d_model, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    _check_against_reference(spec, project, x * spec.sigma_embed, TEMPERATURE if spec.attn_temperature else None)


def test_the_variants_change_the_numbers():
    """The reference is not vacuous: each option changes hook_z of its layer."""
    base = SPECS["smollm3"]
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 1, base.seq_len, base.d_model, generator=gen, dtype=torch.float64)
    project = _explicit(base, 1, gen)

    def z(spec, layer):
        return forward(spec, x, Projections(spec, project.draws), record=[f"blocks.{layer}.attn.hook_z"])[f"blocks.{layer}.attn.hook_z"]

    for change, layer in (({"rope_theta": 10000.0}, 0), ({"qk_norm": True}, 0), ({"attn_temperature": TEMPERATURE}, 3),
                          ({"positional": ["rope", "alibi", "rope", "none"]}, 1)):
        assert not torch.allclose(z(base, layer), z(base.replace(**change), layer)), change
    assert torch.allclose(z(base, 0), z(base.replace(attn_temperature=TEMPERATURE), 0))  # RoPE layers: no temperature


def test_taps_shapes_and_the_tap_list():
    spec = SPECS["llama4"]
    taps = block_taps(spec)
    assert "mlp.hook_pre_linear" in taps and taps.index("mlp.hook_pre_linear") == taps.index("mlp.hook_pre") + 1
    # simulate.run lists every tap of the spec's own block, SwiGLU's up projection included
    result = simulate.run(spec, samples=4, device="cpu", progress=False, seed=1)
    assert list(result.taps) == all_taps(spec.n_layers, spec)
    assert {s for s, _, _ in tap_groups(None, spec.n_layers, spec)} == set(taps)
    x = torch.zeros(1, 1, spec.seq_len, spec.d_model, dtype=torch.float64)
    project, _ = draw_network(spec, 0, torch.device("cpu"), torch.float64)
    cache = forward(spec, x + 0.1, project, record=["blocks.0.attn.hook_q", "blocks.0.attn.hook_k", "blocks.0.attn.hook_v",
                                                    "blocks.0.mlp.hook_pre_linear"])
    T, dh = spec.seq_len, spec.d_head
    assert cache["blocks.0.attn.hook_q"].shape == (1, 1, T, 4, dh)
    assert cache["blocks.0.attn.hook_k"].shape == cache["blocks.0.attn.hook_v"].shape == (1, 1, T, 1, dh)  # TL's GQA
    assert cache["blocks.0.mlp.hook_pre_linear"].shape == (1, 1, T, spec.mlp_width)


def test_rope_on_any_layer_needs_an_even_head_width():
    spec = ModelSpec(d_model=12, n_heads=4, n_layers=2, seq_len=4, positional=["none", "rope"])  # d_head = 3
    with pytest.raises(ValueError, match=r"rope.*layer\(s\) 1.*d_head"):
        simulate.run(spec, samples=2, device="cpu", progress=False)
    simulate.run(spec.replace(positional=["none", "alibi"]), samples=2, device="cpu", progress=False)  # no rotation: fine


def _same_law(a, b, limit=4.5):
    worst = 0.0
    for tap in a.taps:
        sa, sb = a[tap], b[tap]
        pairs = [(sa.mean, sa.mean_se, sb.mean, sb.mean_se), (sa.var, sa.var_se, sb.var, sb.var_se)]
        if sa.sum_sq is not None:
            pairs.append((sa.sum_sq, sa.sum_sq_se, sb.sum_sq, sb.sum_sq_se))
        for xa, ea, xb, eb in pairs:
            se = np.sqrt(ea**2 + eb**2)
            ok = se > 0  # exact quantities (pattern mean at m = 1) have no spread
            assert np.allclose(xa[~ok], xb[~ok], rtol=1e-6, atol=1e-12), tap
            worst = max(worst, (np.abs(xa[ok] - xb[ok]) / se[ok]).max(initial=0.0))
    # ~800 comparisons of independent runs: |z| < 4.5 for all with probability ~0.995
    assert worst < limit, worst


def test_gram_path_has_the_law_of_explicit_weights():
    """Annealed: the Gram fast path (GQA's narrower qkv, SwiGLU's gate_up) against explicit
    weights, every tap of every layer, in law."""
    spec = ModelSpec(d_model=48, n_heads=4, n_kv_heads=2, n_layers=2, seq_len=6, normalization="rmsnorm", mlp="swiglu",
                     d_mlp=64, positional=["rope", "none"], qk_norm=[True, False], attn_temperature=TEMPERATURE,
                     sigma_q=0.4, sigma_k=0.4, sigma_v=0.3, sigma_o=0.3, sigma_mlp_in=0.3, sigma_mlp_out=0.3, sigma_embed=0.5)
    plan = sample_plan(spec, spec.seq_len, with_weights=True, method="auto")
    assert {e.key[1]: e.form for e in plan.entries if e.form != "x"} == {"qkv": "G", "o": "G", "gate_up": "G", "down": "G"}
    assert [e.shape for e in plan.entries if e.key == (0, "qkv")] == [(6, (4 + 2 * 2) * 12)]
    kw = dict(samples=700, device="cpu", progress=False, dtype="float64")
    explicit = simulate.run(spec, seed=20, method="explicit", **kw)
    gram = simulate.run(spec, seed=21, method="gram", **kw)
    assert gram.meta["gram_projections"] and not explicit.meta["gram_projections"]
    _same_law(explicit, gram)


def test_quenched_run_of_a_modern_spec():
    """A quenched run: every tap, finite, and the pattern rows sum to one."""
    spec = SPECS["mixed"]
    result = simulate.run(spec, samples=16, measure="quenched", device="cpu", progress=False, seed=2)
    assert list(result.taps) == all_taps(spec.n_layers, spec)
    for tap in result.taps:
        assert np.isfinite(result[tap].var).all(), tap
    pattern = result["blocks.1.attn.hook_pattern"]
    m = np.asarray(result.positions)
    np.testing.assert_allclose(pattern.mean * m, 1.0, rtol=1e-5)  # mean over the m keys of a row that sums to 1
