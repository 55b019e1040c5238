"""One forward function per sublayer kind of `theory.block`, under the kind's name.

A block carries the residual *stream* ``x`` and the *branch* ``h`` computed from it
(`theory.block`). Each function takes the declared `Sublayer` (its name, taps and
options), ``(x, h)`` and the pass's `Context`, records the sublayer's taps and returns the
new ``(x, h)``; `FORWARD` maps each kind of `theory.block.KINDS` to its function (a test
holds the keys equal). Shapes: S networks, B sequences per network, T positions::

    layernorm   h = LN(x)                                  (S, B, T, d)
    rmsnorm     h = x / sqrt(mean(x^2) + eps)              (S, B, T, d)
    attention   h = W_o softmax(scale q k^T [+ bias]) v    (S, B, T, d), per head of h
                (GQA, QK-norm, per-layer RoPE/ALiBi/NoPE, NoPE-layer temperature)
    mlp         h = W_out phi(W_in h)                      (S, B, T, d)
    swiglu      h = W_down (silu(W_gate h) * W_up h)       (S, B, T, d)
    residual    x = x + h                                  (S, B, T, d)

A new kind is a new function here and a new entry of `FORWARD`,
named as its entry of `theory.block.KINDS` and its theory map.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from typing import Callable

import torch
import torch.nn.functional as F

from theory import ModelSpec
from theory.block import Sublayer
from theory.quantities import logit_scale

from .positional import POSITIONAL, Positional
from .projections import Project

# The MLP's activations phi, by `ModelSpec.activation`.
ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,  # exact: x * Phi(x)
    "gelu_tanh": partial(F.gelu, approximate="tanh"),
    "relu": torch.relu,
}


def layer_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` over the last axis, biased variance, gain 1, bias 0.

    torch's fused kernel computes exactly this (one pass instead of five).
    """
    return F.layer_norm(x, x.shape[-1:], eps=eps)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``x / sqrt(mean(x^2) + eps)`` over the last axis, gain 1 (no mean removal).

    torch's fused kernel computes exactly this (Hugging Face's ``LlamaRMSNorm`` at weight 1).
    """
    return F.rms_norm(x, x.shape[-1:], eps=eps)


def attention_scale(spec: ModelSpec) -> float:
    """Logit scale of ``spec``: 1/sqrt(d_head) ("sqrt") or 1/d_head ("linear")."""
    return logit_scale(spec.d_head, spec.attn_scale)  # the one formula, theory.quantities


def causal_mask(seq_len: int, device: torch.device) -> torch.Tensor:
    """``mask[m, n] = n <= m`` (keys a query may attend to), shape (T, T)."""
    return torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()


@dataclass
class Context:
    """What a sublayer reads besides ``(x, h)``: the spec, the layer, the weights, the taps.

    ``tap(suffix, value)`` records ``blocks.{layer}.{suffix}`` when it was asked for (and
    ends the pass after the last one needed); ``hand_written`` says whether attention
    materialises its scores and pattern (they are tapped) or runs the fused kernel.
    ``shared`` holds what the pass computes once for every layer (masks, positional tables).
    """

    spec: ModelSpec
    layer: int
    project: Project
    tap: Callable[[str, torch.Tensor], None]
    hand_written: bool
    shared: dict = field(default_factory=dict)

    def at(self, layer: int, tap: Callable[[str, torch.Tensor], None]) -> "Context":
        """The context of ``layer`` (its taps recorded by ``tap``), sharing this pass's ``shared``."""
        return replace(self, layer=layer, tap=tap)

    @property
    def matmul(self) -> torch.dtype | None:
        """The dtype of the matrix units (bfloat16/float16) when the products run in it, else None."""
        return getattr(self.project, "matmul_dtype", None)

    def projection(self, kind: str, rows: torch.Tensor) -> torch.Tensor:
        """``sigma * rows @ W^T`` of this layer's projection ``kind`` (see `Projections`)."""
        return self.project(self.layer, kind, rows)

    def positional(self, name: str, like: torch.Tensor, rope_theta: float | None = None) -> Positional:
        """The pass's instance of positional scheme ``name`` (`POSITIONAL`), for tensors like
        ``like`` (RoPE with base ``rope_theta``, by default the spec's)."""
        theta = float(self.spec.rope_theta if rope_theta is None else rope_theta)
        key = ("positional", name, theta)
        if key not in self.shared:
            spec = self.spec
            self.shared[key] = POSITIONAL[name](spec.n_heads, spec.d_head, like.shape[2], like.device, like.dtype,
                                                rope_theta=theta)
        return self.shared[key]

    def temperature(self, temperature, like: torch.Tensor) -> torch.Tensor:
        """``tau(p)`` of `theory._spec_schedule.AttnTemperature` for p = 0..T-1, shaped
        (T, 1, 1) to multiply queries (S, B, T, H, d_head); made once per pass."""
        T = like.shape[2]
        key = ("temperature", temperature.floor_scale, temperature.scale, T)
        if key not in self.shared:
            factors = torch.tensor(temperature.factors(T), dtype=torch.float64, device=like.device)  # (T,)
            self.shared[key] = factors.to(like.dtype).view(T, 1, 1)
        return self.shared[key]

    def causal_mask(self, seq_len: int, device: torch.device) -> torch.Tensor:
        """The pass's `causal_mask` (T, T), made once."""
        if "mask" not in self.shared:
            self.shared["mask"] = causal_mask(seq_len, device)
        return self.shared["mask"]


# ---------------------------------------------------------------- the kinds
def layernorm(sub: Sublayer, x: torch.Tensor, h: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = LN(x)``: the branch starts from the normalised stream."""
    h = layer_norm(x, sub.options["eps"])  # (S, B, T, d)
    ctx.tap(f"{sub.name}.hook_normalized", h)
    return x, h


def rmsnorm(sub: Sublayer, x: torch.Tensor, h: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = x / rms(x)``: the branch starts from the RMS-normalised stream."""
    h = rms_norm(x, sub.options["eps"])  # (S, B, T, d)
    ctx.tap(f"{sub.name}.hook_normalized", h)
    return x, h


def attention(sub: Sublayer, x: torch.Tensor, h: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = W_o z`` with ``z_m = sum_{n <= m} softmax_n(scale q_m.k_n [+ bias_mn]) v_n`` per head.

    ``q, k, v = W_{q,k,v} h`` (``hook_q``, ``hook_k``, ``hook_v``: the projections, as in
    TransformerLens). Then, by the layer's options (`theory.block`), in this order (Llama 4's):

    * ``qk_norm``: each head's q and k divided by its RMS over ``d_head``
      (``q / sqrt(mean(q^2) + eps)``, gain 1, eps ``qk_norm_eps``); RMS normalisation commutes
      with the RoPE rotation (it preserves each head's norm), so before or after RoPE gives
      the same values;
    * ``positional``: ``rope`` rotates q and k (base ``rope_theta``), ``alibi`` biases the
      logits (inside ``hook_attn_scores``), ``none`` does nothing;
    * ``temperature`` (NoPE layers): the query at 0-based position p is multiplied by tau(p);
    * grouped-query attention (``n_kv_heads`` < H): k and v have ``n_kv_heads`` heads
      (``hook_k``/``hook_v`` (S, B, T, n_kv_heads, d_head), as TransformerLens' GQA); key/value
      head j serves the query heads ``j g .. j g + g - 1``, ``g = H / n_kv_heads`` (Hugging
      Face's ``repeat_kv``).
    """
    spec, opts = ctx.spec, sub.options
    S, B, T, d = h.shape
    H, dh = spec.n_heads, spec.d_head
    Hkv = opts.get("n_kv_heads") or H
    positional = ctx.positional(opts["positional"], h, opts.get("rope_theta"))
    scale = logit_scale(dh, opts["attn_scale"])
    qkv = ctx.projection("qkv", h.reshape(S, B * T, d)).view(S, B, T, H + 2 * Hkv, dh)  # (S, B, T, H + 2 Hkv, dh)
    q, k, v = qkv.split((H, Hkv, Hkv), dim=3)  # (S, B, T, H, dh), (S, B, T, Hkv, dh) twice
    ctx.tap("attn.hook_q", q)
    ctx.tap("attn.hook_k", k)
    ctx.tap("attn.hook_v", v)
    if opts.get("qk_norm"):
        q, k = rms_norm(q, opts["qk_norm_eps"]), rms_norm(k, opts["qk_norm_eps"])  # over d_head
    q, k = positional.rotate(q, k)  # each (S, B, T, H or Hkv, dh)
    if opts.get("temperature") is not None:
        q = q * ctx.temperature(opts["temperature"], q)  # (S, B, T, H, dh): tau(p) at position p
    if ctx.hand_written:
        z = _softmax_average(q, k, v, scale, positional.bias, ctx)  # (S, B, T, H, dh)
    else:
        z = _fused_softmax_average(q, k, v, scale, positional.bias, ctx)  # (S, B, T, H, dh)
    ctx.tap("attn.hook_z", z)
    out = ctx.projection("o", z.reshape(S, B * T, H * dh)).view(S, B, T, d)  # (S, B, T, d)
    ctx.tap("hook_attn_out", out)
    return x, out


def _softmax_average(q, k, v, scale: float, bias: torch.Tensor | None, ctx: Context) -> torch.Tensor:
    """The hand-written path: scores -> pattern -> z, each materialised (and tapped).

    Grouped-query attention repeats each key/value head for its query heads first
    (``repeat_interleave``: kv head j serves query heads j g .. j g + g - 1).
    """
    T, H = q.shape[2], q.shape[3]
    if k.shape[3] != H:
        k, v = k.repeat_interleave(H // k.shape[3], dim=3), v.repeat_interleave(H // v.shape[3], dim=3)  # (S, B, T, H, dh)
    # matmul over a fixed (S, B, H) batch layout: the numbers of one network do not
    # depend on how many networks share the chunk (einsum may regroup axes)
    # (contiguous copies too: with S = B = 1 a strided view would reach BLAS with
    # other leading dimensions, and other rounding)
    low = ctx.matmul  # bfloat16/float16: the two products in it, scores and softmax in float32
    cast = (lambda t: t) if low is None else (lambda t: t.to(low))
    q_h = cast(q.permute(0, 1, 3, 2, 4)).contiguous()  # (S, B, H, T, dh)
    k_h = cast(k.permute(0, 1, 3, 2, 4)).contiguous()  # (S, B, H, T, dh)
    v_h = cast(v.permute(0, 1, 3, 2, 4)).contiguous()  # (S, B, H, T, dh)
    scores = (q_h @ k_h.transpose(-1, -2)).to(q.dtype) * scale  # (S, B, H, T, T)
    if bias is not None:  # ALiBi: -slope_h (m - n)
        scores = scores + bias  # (S, B, H, T, T)
    ctx.tap("attn.hook_attn_scores", scores)
    pattern = scores.masked_fill(~ctx.causal_mask(T, q.device), float("-inf")).softmax(dim=-1)  # (S, B, H, T, T)
    ctx.tap("attn.hook_pattern", pattern)
    if low is None:
        return (pattern @ v_h).transpose(2, 3)  # (S, B, T, H, dh)
    # Low precision: z = U v + (pattern - U) v with U the uniform causal pattern (1/m on keys
    # n <= m). Rounding the pattern itself would snap near-uniform weights 1/m (m a power of
    # two: a binade edge) to exactly 1/m and bias E z^2 down (measured -4.5e-4 at m = 2, 4 with
    # small logits); rounding only the deviation keeps the error relative to the signal.
    steps = torch.arange(1, T + 1, device=q.device, dtype=q.dtype).unsqueeze(-1)  # (T, 1): m
    uniform = ctx.causal_mask(T, q.device) / steps  # (T, T): U
    mean_v = v.permute(0, 1, 3, 2, 4).cumsum(dim=-2) / steps  # (S, B, H, T, dh): U v, float32
    return (mean_v + (cast(pattern - uniform) @ v_h).to(q.dtype)).transpose(2, 3)  # (S, B, T, H, dh)


def _fused_softmax_average(q, k, v, scale: float, bias: torch.Tensor | None, ctx: Context) -> torch.Tensor:
    """The fused kernel: the same causal softmax average, the pattern never materialised
    (grouped-query attention by the kernel's own ``enable_gqa``: k, v are never repeated).
    It runs in the stream's dtype (float32 in a bfloat16 run): a low-precision kernel rounds
    the softmax weights before pattern x V, which snaps near-uniform weights 1/m to 1/m and
    biases E z^2 (see `_softmax_average`); the projections around it carry the bf16 gain."""
    S, B, T, H, dh = q.shape
    Hkv = k.shape[3]
    mask = None if bias is None else bias.masked_fill(~ctx.causal_mask(T, q.device), float("-inf"))  # (H, T, T)
    fused = F.scaled_dot_product_attention(
        q.reshape(S * B, T, H, dh).transpose(1, 2),  # (S*B, H, T, dh)
        k.reshape(S * B, T, Hkv, dh).transpose(1, 2),  # (S*B, Hkv, T, dh)
        v.reshape(S * B, T, Hkv, dh).transpose(1, 2),  # (S*B, Hkv, T, dh)
        attn_mask=mask,
        is_causal=bias is None,
        scale=scale,
        enable_gqa=Hkv != H,
    )  # (S*B, H, T, dh)
    return fused.transpose(1, 2).reshape(S, B, T, H, dh)  # (S, B, T, H, dh)


def mlp(sub: Sublayer, x: torch.Tensor, h: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = W_out phi(W_in h)``, phi the activation of ``options["activation"]``."""
    S, B, T, d = h.shape
    pre = ctx.projection("in", h.reshape(S, B * T, d)).view(S, B, T, -1)  # (S, B, T, d_mlp)
    ctx.tap("mlp.hook_pre", pre)
    post = ACTIVATIONS[sub.options["activation"]](pre)  # (S, B, T, d_mlp)
    ctx.tap("mlp.hook_post", post)
    out = ctx.projection("out", post.reshape(S, B * T, -1)).view(S, B, T, d)  # (S, B, T, d)
    ctx.tap("hook_mlp_out", out)
    return x, out


def swiglu(sub: Sublayer, x: torch.Tensor, h: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """``h = W_down (silu(W_gate h) * (W_up h))`` (Llama's MLP; TransformerLens' ``GatedMLP`` taps)."""
    S, B, T, d = h.shape
    gate_up = ctx.projection("gate_up", h.reshape(S, B * T, d)).view(S, B, T, 2, -1)  # (S, B, T, 2, d_mlp)
    gate, up = gate_up.unbind(dim=3)  # each (S, B, T, d_mlp)
    ctx.tap("mlp.hook_pre", gate)
    ctx.tap("mlp.hook_pre_linear", up)
    post = F.silu(gate) * up  # (S, B, T, d_mlp)
    ctx.tap("mlp.hook_post", post)
    out = ctx.projection("down", post.reshape(S, B * T, -1)).view(S, B, T, d)  # (S, B, T, d)
    ctx.tap("hook_mlp_out", out)
    return x, out


def residual(sub: Sublayer, x: torch.Tensor, h: torch.Tensor, ctx: Context) -> tuple[torch.Tensor, torch.Tensor]:
    """``x = x + h``: the branch is written into the stream (``hook_resid_mid``/``_post``)."""
    x = x + h  # (S, B, T, d)
    ctx.tap(f"hook_{sub.name}", x)
    return x, h


SublayerForward = Callable[[Sublayer, torch.Tensor, torch.Tensor, Context], tuple[torch.Tensor, torch.Tensor]]

# The registry: kind of `theory.block.KINDS` -> its forward function, under the same name.
FORWARD: dict[str, SublayerForward] = {
    "layernorm": layernorm,
    "rmsnorm": rmsnorm,
    "attention": attention,
    "mlp": mlp,
    "swiglu": swiglu,
    "residual": residual,
}
