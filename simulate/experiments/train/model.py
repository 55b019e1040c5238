"""`NoPETransformer`: a trainable ``nn.Module`` whose math is exactly `simulate.forward`.

The network a `theory.ModelSpec` describes, as a module one can train, with
TransformerLens-style hook points (identity modules) named like our taps, so that
`simulate.record` reads it with the same map as a TransformerLens ``HookedTransformer``.
Each block is built from the one declaration of the block (`theory.block`), one module
per sublayer (`SUBLAYER_MODULES`, keyed by the kinds of `theory.block.KINDS`)::

    x_0 = E[ids] (+ P[:T] when positional = "learned")           # blocks.0.hook_resid_pre
    x = x + W_o attn(LN(x) W_qkv^T)                               # hook_resid_mid
    x = x + W_out act(LN(x) W_in^T)                               # hook_resid_post
    logits = (g * LN(x_L) + b) E^T                                # tied unembedding (GPT-2)

(an attention-only block is the first line alone and ends at ``hook_resid_post``, as in
TransformerLens).

Decisions (so that the module *is* the functional forward for any weights, trained or not):

* no biases, no LayerNorm gains: ``LN(x) = (x - mean) / sqrt(var + eps)`` as in
  `simulate.layer_norm`; every weight is a plain matrix in math orientation
  ``(d_out, d_in)`` (``nn.Linear`` stores it that way), so `projections` hands the very
  same matrices to `simulate.forward`;
* initialisation as the spec says: i.i.d. ``N(0, sigma^2)`` entries per matrix, with GPT-2's
  ``1/sqrt(2 n_layers)`` on ``W_o`` and ``W_out`` when ``output_scaling = "gpt2"``;
  the token table ``E`` (and the learned position table ``P``) with ``sigma_embed``;
* the unembedding is tied to ``E`` behind a final LayerNorm with learnable gain and bias
  (GPT-2, Radford et al. 2019; gain 1 and bias 0 at init); it is not a tap (taps stop at
  ``hook_resid_post``), so the functional forward still covers every tap;
* ``positional``: ``"none"`` (the subject), ``"learned"`` (absolute embeddings added to
  the token embeddings, GPT-2's ``wpe``) or ``"rope"`` (each head's q and k rotated by
  position after ``hook_q``/``hook_k``, the engine's own rotation, ``simulate.POSITIONAL["rope"]``:
  rotate-half pairs as Hugging Face Llama, base ``spec.rope_theta``; Su et al. 2021) for the
  training comparison. A RoPE model, like a NoPE one, runs on sequences of any length.

Shapes follow TransformerLens (batch first, no network axis): residual taps
``(B, T, d_model)``, q/k/v/z ``(B, T, H, d_head)``, scores/pattern ``(B, H, T, T)`` with the
query on axis -2 (scores are ``-inf`` above the diagonal, as TransformerLens has them).

>>> import torch
>>> from theory import ModelSpec
>>> spec = ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=8, vocab_size=11)
>>> model = NoPETransformer(spec, seed=0)
>>> model(torch.zeros(3, 8, dtype=torch.long)).shape
torch.Size([3, 8, 11])
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from theory import ModelSpec
from theory.block import ENTRY_TAP, Sublayer, block

from ...engine import (ACTIVATIONS, POSITIONAL, Projections, attention_scale, check_positional, layer_norm, output_scale, projection_kinds,
                       rms_norm)

MODEL_POSITIONALS = ("none", "learned", "rope")


class HookPoint(nn.Identity):
    """An identity module that forward hooks attach to (TransformerLens' ``HookPoint``)."""


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks) or bool(module._forward_pre_hooks)


class LayerNormPre(nn.Module):
    """``(x - mean) / sqrt(var_biased + eps)``, no gain or bias; ``hook_normalized`` taps it."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = float(eps)
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(layer_norm(x, self.eps))


class RMSNormGain(nn.Module):
    """``g * x / sqrt(mean(x^2) + eps)`` with a trainable gain ``g`` (Llama's ``LlamaRMSNorm``),
    1 at init, so that at init it is `simulate.rms_norm`; ``hook_normalized`` taps the
    normalised stream (after the gain, as TransformerLens' ``RMSNorm``). `NoPETransformer.projections`
    folds ``g`` into the next projection's columns (``W diag(g)``), exactly."""

    def __init__(self, d_model: int, eps: float):
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(d_model))
        self.hook_normalized = HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_normalized(rms_norm(x, self.eps) * self.weight)


class Attention(nn.Module):
    """Causal multi-head softmax attention, fused Q/K/V matrix ``W_qkv`` (3 H d_head, d)."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.n_heads, self.d_head = spec.n_heads, spec.d_head
        self.scale = attention_scale(spec)
        self.rope_theta = spec.rope_theta if spec.positional == "rope" else None
        self._rope: dict = {}  # (T, device) -> the engine's Rope (its cos/sin tables); not a parameter
        self.W_qkv = nn.Linear(spec.d_model, 3 * spec.n_heads * spec.d_head, bias=False)
        self.W_o = nn.Linear(spec.n_heads * spec.d_head, spec.d_model, bias=False)
        for name in ("q", "k", "v", "attn_scores", "pattern", "z"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        B, T, _ = e.shape
        H, dh = self.n_heads, self.d_head
        q, k, v = self.W_qkv(e).view(B, T, 3, H, dh).unbind(dim=2)  # each (B, T, H, dh)
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        if self.rope_theta is not None:  # the engine's rotation, in the engine's place (after the q/k taps)
            q, k = self._rotation(T, e.device).rotate(q, k)  # each (B, T, H, dh)
        q_h, k_h, v_h = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, T, dh)
        if _has_hooks(self.hook_attn_scores) or _has_hooks(self.hook_pattern):
            mask = torch.ones(T, T, dtype=torch.bool, device=e.device).tril()  # key n <= query m
            scores = (q_h @ k_h.transpose(-1, -2)) * self.scale  # (B, H, T, T)
            scores = self.hook_attn_scores(scores.masked_fill(~mask, float("-inf")))
            pattern = self.hook_pattern(scores.softmax(dim=-1))  # (B, H, T, T)
            z = pattern @ v_h  # (B, H, T, dh)
        else:  # fused kernel: the same causal softmax average
            z = F.scaled_dot_product_attention(q_h, k_h, v_h, is_causal=True, scale=self.scale)
        z = self.hook_z(z.transpose(1, 2))  # (B, T, H, dh)
        return self.W_o(z.reshape(B, T, H * dh))  # (B, T, d)

    def _rotation(self, T: int, device):
        key = (T, str(device))
        if key not in self._rope:
            self._rope = {key: POSITIONAL["rope"](self.n_heads, self.d_head, T, device, torch.float64,
                                                  rope_theta=self.rope_theta)}
        return self._rope[key]


class MLP(nn.Module):
    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.phi = ACTIVATIONS[spec.activation]
        self.W_in = nn.Linear(spec.d_model, spec.mlp_width, bias=False)
        self.W_out = nn.Linear(spec.mlp_width, spec.d_model, bias=False)
        self.hook_pre, self.hook_post = HookPoint(), HookPoint()

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(self.W_in(e))  # (B, T, d_mlp)
        post = self.hook_post(self.phi(pre))  # (B, T, d_mlp)
        return self.W_out(post)  # (B, T, d)


class SwiGLU(nn.Module):
    """``W_down (silu(W_gate e) * (W_up e))`` (Llama's MLP), TransformerLens' ``GatedMLP`` hooks:
    ``hook_pre`` (gate), ``hook_pre_linear`` (up), ``hook_post``."""

    def __init__(self, spec: ModelSpec):
        super().__init__()
        self.W_gate = nn.Linear(spec.d_model, spec.mlp_width, bias=False)
        self.W_up = nn.Linear(spec.d_model, spec.mlp_width, bias=False)
        self.W_down = nn.Linear(spec.mlp_width, spec.d_model, bias=False)
        self.hook_pre, self.hook_pre_linear, self.hook_post = HookPoint(), HookPoint(), HookPoint()

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        gate = self.hook_pre(self.W_gate(e))  # (B, T, d_mlp)
        up = self.hook_pre_linear(self.W_up(e))  # (B, T, d_mlp)
        post = self.hook_post(F.silu(gate) * up)  # (B, T, d_mlp)
        return self.W_down(post)  # (B, T, d)


# Per sublayer kind: the modules it adds to its block (attribute -> module; a hook point
# for each tap named directly under the block) and how it acts on (stream x, branch h).
def _layernorm_modules(spec: ModelSpec, sub: Sublayer) -> dict[str, nn.Module]:
    return {sub.name: LayerNormPre(sub.options["eps"])}


def _rmsnorm_modules(spec: ModelSpec, sub: Sublayer) -> dict[str, nn.Module]:
    return {sub.name: RMSNormGain(spec.d_model, sub.options["eps"])}


def _attention_modules(spec: ModelSpec, sub: Sublayer) -> dict[str, nn.Module]:
    return {"attn": Attention(spec), "hook_attn_out": HookPoint()}


def _mlp_modules(spec: ModelSpec, sub: Sublayer) -> dict[str, nn.Module]:
    return {"mlp": MLP(spec), "hook_mlp_out": HookPoint()}


def _swiglu_modules(spec: ModelSpec, sub: Sublayer) -> dict[str, nn.Module]:
    return {"mlp": SwiGLU(spec), "hook_mlp_out": HookPoint()}


def _residual_modules(spec: ModelSpec, sub: Sublayer) -> dict[str, nn.Module]:
    return {f"hook_{sub.name}": HookPoint()}


SUBLAYER_MODULES: dict[str, Callable[[ModelSpec, Sublayer], dict[str, nn.Module]]] = {
    "layernorm": _layernorm_modules,
    "rmsnorm": _rmsnorm_modules,
    "attention": _attention_modules,
    "mlp": _mlp_modules,
    "swiglu": _swiglu_modules,
    "residual": _residual_modules,
}

SUBLAYER_APPLY: dict[str, Callable[["Block", Sublayer, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]] = {
    "layernorm": lambda blk, sub, x, h: (x, getattr(blk, sub.name)(x)),  # h = LN(x)
    "rmsnorm": lambda blk, sub, x, h: (x, getattr(blk, sub.name)(x)),  # h = g x / rms(x)
    "attention": lambda blk, sub, x, h: (x, blk.hook_attn_out(blk.attn(h))),  # h = W_o attn(h)
    "mlp": lambda blk, sub, x, h: (x, blk.hook_mlp_out(blk.mlp(h))),  # h = W_out act(W_in h)
    "swiglu": lambda blk, sub, x, h: (x, blk.hook_mlp_out(blk.mlp(h))),  # h = W_down (silu(W_gate h) W_up h)
    "residual": lambda blk, sub, x, h: (getattr(blk, f"hook_{sub.name}")(x + h), h),  # x = x + h
}


# The engine's projection kinds (`simulate.engine.projections`) -> (sublayer module, its weight).
# SwiGLU's fused kind "gate_up" is its two matrices stacked, gate first (the engine's draw layout).
_WEIGHTS = {"qkv": ("attn", ("W_qkv",)), "o": ("attn", ("W_o",)), "in": ("mlp", ("W_in",)), "out": ("mlp", ("W_out",)),
            "gate_up": ("mlp", ("W_gate", "W_up")), "down": ("mlp", ("W_down",))}


def _weights(blk: nn.Module, kind: str) -> list[torch.Tensor]:
    """The weight matrices of projection ``kind`` of ``blk`` (two for SwiGLU's gate_up, stacked by rows)."""
    module, names = _WEIGHTS[kind]
    return [getattr(getattr(blk, module), name).weight for name in names]


def _weight(blk: nn.Module, kind: str) -> torch.Tensor:
    """The (d_out, d_in) matrix of projection ``kind``, as the engine lays it out (a copy for gate_up)."""
    mats = _weights(blk, kind)
    return mats[0] if len(mats) == 1 else torch.cat(mats, dim=0)


def _input_gains(blk: "Block") -> dict[str, torch.Tensor]:
    """Projection kind -> the RMSNorm gain ``g`` its input carries (the norm just before its sublayer)."""
    gains, pending = {}, None
    kinds = {"attention": "qkv", "mlp": "in", "swiglu": "gate_up"}
    for sub in blk.sublayers:
        if sub.kind == "rmsnorm":
            pending = getattr(blk, sub.name).weight
        elif sub.kind in kinds:
            if pending is not None:
                gains[kinds[sub.kind]] = pending
            pending = None
    return gains


class Block(nn.Module):
    """The declared block of ``layer`` (`theory.block`) with TransformerLens' hook names:
    ``x = x + attn(ln1(x)); x = x + mlp(ln2(x))``, or the first half alone (attention only)."""

    def __init__(self, spec: ModelSpec, layer: int = 0):
        super().__init__()
        self.sublayers = block(spec, layer).sublayers  # plain data, not modules
        setattr(self, ENTRY_TAP, HookPoint())
        for sub in self.sublayers:
            for name, module in SUBLAYER_MODULES[sub.kind](spec, sub).items():
                self.add_module(name, module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = getattr(self, ENTRY_TAP)(x)  # (B, T, d)
        h = x
        for sub in self.sublayers:
            x, h = SUBLAYER_APPLY[sub.kind](self, sub, x, h)  # each (B, T, d)
        return x


class NoPETransformer(nn.Module):
    """A byte- (or token-) level causal LM realising ``spec`` (see the module docstring).

    ``spec.vocab_size`` must be an integer; ``spec.positional`` is ``"none"``,
    ``"learned"`` or ``"rope"``; ``seed`` seeds the initialisation (a private generator, so the global
    RNG is untouched).
    """

    def __init__(self, spec: ModelSpec, seed: int = 0, dtype: torch.dtype = torch.float32):
        super().__init__()
        if not isinstance(spec, ModelSpec) or spec.is_symbolic:
            raise ValueError("spec must be a numeric theory.ModelSpec")
        if spec.vocab_size is None:
            raise ValueError("vocab_size must be an integer for a trainable model (256 for bytes), got null")
        if spec.positional not in MODEL_POSITIONALS:
            raise ValueError(
                f"positional must be one of {', '.join(map(repr, MODEL_POSITIONALS))} for NoPETransformer, "
                f"got {spec.positional!r}"
            )
        check_positional(spec)  # RoPE rotates pairs: an even d_head
        self.spec = spec
        self.embed = nn.Embedding(spec.vocab_size, spec.d_model)
        self.pos_embed = nn.Parameter(torch.zeros(spec.seq_len, spec.d_model)) if spec.positional == "learned" else None
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(Block(spec, layer) for layer in range(spec.n_layers))
        # the final LayerNorm has GPT-2's learnable gain and bias (not a tap; it sets the
        # logit scale, which a gain-free LayerNorm would leave to the tied embedding alone)
        self.ln_final = nn.LayerNorm(spec.d_model, eps=spec.ln_eps)
        self.to(dtype)
        self.reset_parameters(seed)

    @torch.no_grad()
    def reset_parameters(self, seed: int) -> None:
        """i.i.d. ``N(0, sigma^2)`` entries, the sigmas of the spec, drawn in a fixed order."""
        spec = self.spec
        gen = torch.Generator().manual_seed(int(seed))

        def fill(ts: list[torch.Tensor], std: torch.Tensor | float) -> None:
            """One draw for the matrices ``ts`` stacked by rows (one matrix but SwiGLU's gate_up)."""
            rows = sum(t.shape[0] for t in ts)
            draw = torch.randn((rows, *ts[0].shape[1:]), generator=gen, dtype=torch.float64)
            std = std.unsqueeze(-1) if isinstance(std, torch.Tensor) else std  # per output row
            for t, part in zip(ts, (draw * std).split([t.shape[0] for t in ts])):
                t.copy_(part)

        fill([self.embed.weight], float(spec.sigma_embed))
        if self.pos_embed is not None:
            fill([self.pos_embed], float(spec.sigma_embed))
        for layer, blk in enumerate(self.blocks):
            for kind in projection_kinds(spec, layer):  # qkv, o[, in, out]: the draw order of the engine
                scale = output_scale(spec, kind)
                fill(_weights(blk, kind), scale if isinstance(scale, torch.Tensor) else float(scale))
            for module in blk.modules():
                if isinstance(module, RMSNormGain):
                    module.weight.fill_(1.0)  # Llama's init

    def embed_input(self, ids: torch.Tensor) -> torch.Tensor:
        """``x_0 = E[ids] (+ P[:T])``, shape (B, T, d_model). A NoPE model (no position table)
        runs on sequences longer than ``seq_len`` too (nothing in it depends on T: length
        generalisation); a learned table ends at ``seq_len``."""
        if ids.dim() != 2:
            raise ValueError(f"token ids must have shape (batch, positions), got {tuple(ids.shape)}")
        T = ids.shape[1]
        if T > self.spec.seq_len and self.pos_embed is not None:
            raise ValueError(f"sequence of {T} tokens is longer than seq_len = {self.spec.seq_len} (the position table's length)")
        x = self.embed(ids)
        if self.pos_embed is not None:
            x = x + self.pos_embed[:T]
        return self.hook_embed(x)

    def residual(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed_input(ids)
        for blk in self.blocks:
            x = blk(x)
        return x  # (B, T, d)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits (B, T, vocab) of the next token."""
        return self.ln_final(self.residual(ids)) @ self.embed.weight.T

    def loss(self, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy in nats."""
        logits = self(ids)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    # ---------------------------------------------------------------- functional view
    def functional_spec(self) -> ModelSpec:
        """The spec `simulate.forward` runs: the model's, with the position table already
        inside the input ``x_0`` (`embed_input`), so ``positional="none"`` for a learned table;
        a RoPE model's spec as it is (the engine rotates q and k itself)."""
        if self.spec.positional == "rope":
            return self.spec
        return dataclasses.replace(self.spec, positional="none")

    @torch.no_grad()
    def projections(self) -> Projections:
        """`simulate.Projections` holding this model's matrices (one network, S = 1).

        ``Projections`` multiplies standard normals by the spec's sigmas, so each matrix is
        divided by its sigma here (exact up to one rounding; use float64 for 1e-12 checks).
        An RMSNorm gain ``g`` is folded into the projection that reads it: ``W diag(g)``.
        """
        spec = self.spec
        draws = {}
        for layer, blk in enumerate(self.blocks):
            gains = _input_gains(blk)
            for kind in projection_kinds(spec, layer):
                w = _weight(blk, kind)
                if kind in gains:
                    w = w * gains[kind]  # (d_out, d_in) * (d_in,): W diag(g)
                scale = output_scale(spec, kind)
                scale = scale.to(w.dtype).unsqueeze(-1) if isinstance(scale, torch.Tensor) else float(scale)
                if (isinstance(scale, float) and scale == 0) or (isinstance(scale, torch.Tensor) and bool((scale == 0).any())):
                    raise ValueError(f"a zero sigma for {kind!r} leaves no way to express the weights as normals")
                draws[(layer, kind)] = ("W", (w.detach() / scale).unsqueeze(0))
        return Projections(self.functional_spec(), draws)

    def n_params(self) -> int:
        return sum(p.numel() for p in self.parameters())


def parameter_count(spec: ModelSpec) -> int:
    """Parameters of `NoPETransformer(spec)` without building it."""
    d = spec.d_model
    mlp = 0 if spec.attn_only else (3 if spec.mlp == "swiglu" else 2) * d * spec.mlp_width
    norms = 0 if spec.normalization != "rmsnorm" else (1 if spec.attn_only else 2) * d  # RMSNorm gains
    per_layer = 3 * spec.n_heads * spec.d_head * d + d * d + mlp + norms
    pos = spec.seq_len * d if spec.positional == "learned" else 0
    return spec.vocab_size * d + pos + spec.n_layers * per_layer


__all__ = ["NoPETransformer", "HookPoint", "parameter_count", "MODEL_POSITIONALS", "SUBLAYER_MODULES", "SUBLAYER_APPLY"]
