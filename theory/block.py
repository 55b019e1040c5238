"""The one declaration of the block: a sequence of named sublayers and the taps they emit.

Every part of the toolkit reads this declaration and nothing else to know what a block
is (neural-tangents' ``serial`` is the model: one list of layers drives both the finite
``apply_fn`` and the analytic ``kernel_fn``):

* the tap registry (`theory.taps`: which names exist, in which order);
* simulate's forward pass (``simulate/engine/sublayers.py``: one forward function per kind);
* theory's depth recursion (``theory/sublayers/``: one kernel map per kind) and the
  first-layer derivation (the steps each kind emits at layer 0).

A block carries two values: the residual *stream* ``x`` and the *branch* ``h`` being
computed from it. Each sublayer kind acts on them in one way:

============  ===============================  ==========================================
kind          acts as                          taps (suffix after ``blocks.{l}.``)
============  ===============================  ==========================================
layernorm     ``h = LN(x)``                    ``{name}.hook_normalized``
rmsnorm       ``h = x / rms(x)``               ``{name}.hook_normalized``
attention     ``h = W_o softmax(q k^T s) v``   ``attn.hook_q|k|v|attn_scores|pattern|z``,
              (causal, per head, of ``h``)     ``hook_attn_out``
mlp           ``h = W_out phi(W_in h)``        ``mlp.hook_pre|hook_post``, ``hook_mlp_out``
swiglu        ``h = W_down (silu(W_gate h)     ``mlp.hook_pre`` (gate), ``mlp.hook_pre_linear``
              * W_up h)``                      (up), ``mlp.hook_post``, ``hook_mlp_out``
residual      ``x = x + h``                    ``hook_resid_mid`` or ``hook_resid_post``
============  ===============================  ==========================================

The standard pre-LN block is ``layernorm ln1 -> attention -> residual -> layernorm ln2 ->
mlp -> residual``; the stream entering it is ``hook_resid_pre``. As in TransformerLens,
the block's last residual write is always ``hook_resid_post``: an attention-only block
(``attn_only=True``) is ``ln1 -> attention -> residual`` and has no ``hook_resid_mid``.

The norm is ``layernorm`` or ``rmsnorm`` (`ModelSpec.normalization`) and the MLP ``mlp``
or ``swiglu`` (`ModelSpec.mlp`; tap names as TransformerLens' ``GatedMLP``). The
attention sublayer's options carry what may change from layer to layer (Llama 4 and
SmolLM3 mix RoPE and NoPE layers): its positional scheme (``none`` is the subject of the
toolkit; ``learned``/``sinusoidal`` tables act on the network's input), whether it
RMS-normalises q and k (``qk_norm``), its key/value heads (grouped-query attention) and
the NoPE-layer query temperature.

A new sublayer kind is a new entry in `KINDS`, a new theory map in
``theory/depth_maps/`` and a new forward function in ``simulate/engine/sublayers.py``
under the same name; `block` says where it goes.

>>> from theory import ModelSpec
>>> [s.name for s in block(ModelSpec(n_layers=2))]
['ln1', 'attn', 'resid_mid', 'ln2', 'mlp', 'resid_post']
>>> block(ModelSpec(attn_only=True)).tap_suffixes[-1]
'hook_resid_post'
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Iterator, Mapping

# The tap every block starts from: the stream as it enters the block.
ENTRY_TAP = "hook_resid_pre"
ENTRY_MEANING = "residual stream entering the block, x  (S, B, T, d_model)"

# Sublayer kinds, with what each does to (stream x, branch h). The registries of the two
# sides (theory/sublayers, simulate/engine/sublayers.py) are keyed by these names, and a
# test holds them equal.
KINDS: Mapping[str, str] = MappingProxyType({
    "layernorm": "h = LN(x): (x - mean) / sqrt(var + eps), gain 1, bias 0",
    "rmsnorm": "h = x / sqrt(mean(x^2) + eps), gain 1 (no mean removal)",
    "attention": "h = W_o z, z_m = sum_{n<=m} softmax_n(s q_m.k_n) v_n, per head; q, k, v = W_{q,k,v} h",
    "mlp": "h = W_out phi(W_in h)",
    "swiglu": "h = W_down (silu(W_gate h) * (W_up h))",
    "residual": "x = x + h",
})


@dataclass(frozen=True)
class Tap:
    """One named intermediate a sublayer emits: its suffix and what it holds (with shape)."""

    suffix: str
    meaning: str


@dataclass(frozen=True)
class Sublayer:
    """One sublayer of the block: its name in the block, its kind, the taps it emits.

    ``options`` are the kind's settings read from the spec (the attention's positional
    scheme and logit scale rule, the MLP's activation and width, the norm's eps).
    """

    name: str
    kind: str
    taps: tuple[Tap, ...]
    options: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"sublayer {self.name!r}: kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "options", MappingProxyType(dict(self.options)))

    @property
    def tap_suffixes(self) -> tuple[str, ...]:
        return tuple(t.suffix for t in self.taps)


@dataclass(frozen=True)
class Block:
    """A block: the entry tap, then its sublayers in forward order."""

    sublayers: tuple[Sublayer, ...]

    def __iter__(self) -> Iterator[Sublayer]:
        return iter(self.sublayers)

    def __len__(self) -> int:
        return len(self.sublayers)

    def __getitem__(self, name: str) -> Sublayer:
        for sub in self.sublayers:
            if sub.name == name:
                return sub
        raise KeyError(f"no sublayer {name!r} in this block; it has {', '.join(s.name for s in self.sublayers)}")

    @property
    def taps(self) -> tuple[Tap, ...]:
        """Every tap of the block in forward order, the entry tap first."""
        return (Tap(ENTRY_TAP, ENTRY_MEANING),) + tuple(t for s in self.sublayers for t in s.taps)

    @property
    def tap_suffixes(self) -> tuple[str, ...]:
        return tuple(t.suffix for t in self.taps)

    @property
    def output_tap(self) -> str:
        """The block's output: the last residual write (``hook_resid_post``)."""
        return self.sublayers[-1].taps[-1].suffix

    def branches(self) -> list[tuple[Sublayer, ...]]:
        """The residual branches: each run of sublayers ending in a residual write."""
        out, current = [], []
        for sub in self.sublayers:
            current.append(sub)
            if sub.kind == "residual":
                out.append(tuple(current))
                current = []
        return out


# ---------------------------------------------------------------- the sublayers
def _norm(name: str, kind: str, eps) -> Sublayer:
    number = name[-1]
    what = "LayerNorm" if kind == "layernorm" else "RMSNorm"
    return Sublayer(name, kind, (Tap(f"{name}.hook_normalized", f"{what}-{number} output e = {what}(x)  (S, B, T, d_model)"),),
                    {"eps": eps})


def _attention(spec, layer: int) -> Sublayer:
    return Sublayer("attn", "attention", (
        Tap("attn.hook_q", "queries q = W_q e  (S, B, T, H, d_head)"),
        Tap("attn.hook_k", "keys k = W_k e  (S, B, T, H_kv, d_head)"),
        Tap("attn.hook_v", "values v = W_v e  (S, B, T, H_kv, d_head)"),
        Tap("attn.hook_attn_scores", "scaled logits l_mn = q_m.k_n / scale, keys n <= m  (S, B, H, T, T)"),
        Tap("attn.hook_pattern", "attention weights a_mn = softmax_n(l_mn), causal  (S, B, H, T, T)"),
        Tap("attn.hook_z", "per-head attention output z_m = sum_n a_mn v_n  (S, B, T, H, d_head)"),
        Tap("hook_attn_out", "attention output W_o z  (S, B, T, d_model)"),
    ), {
        "positional": spec.positional_at(layer),
        "attn_scale": spec.attn_scale,
        "qk_norm": spec.qk_norm_at(layer),
        "qk_norm_eps": spec.ln_eps,
        "n_kv_heads": spec.kv_heads,
        "rope_theta": spec.rope_theta,
        "temperature": spec.temperature_at(layer),
    })


def _mlp(spec) -> Sublayer:
    if spec.mlp == "swiglu":
        return Sublayer("mlp", "swiglu", (
            Tap("mlp.hook_pre", "gate pre-activation W_gate e  (S, B, T, d_mlp)"),
            Tap("mlp.hook_pre_linear", "up projection W_up e  (S, B, T, d_mlp)"),
            Tap("mlp.hook_post", "silu(gate) * up  (S, B, T, d_mlp)"),
            Tap("hook_mlp_out", "MLP output W_down post  (S, B, T, d_model)"),
        ), {"activation": "silu"})
    return Sublayer("mlp", "mlp", (
        Tap("mlp.hook_pre", "MLP pre-activation  (S, B, T, d_mlp)"),
        Tap("mlp.hook_post", "MLP post-activation  (S, B, T, d_mlp)"),
        Tap("hook_mlp_out", "MLP output  (S, B, T, d_model)"),
    ), {"activation": spec.activation})


def _residual(name: str, last: bool) -> Sublayer:
    meaning = "residual leaving the block  (S, B, T, d_model)" if last else "residual after attention, x + W_o z  (S, B, T, d_model)"
    return Sublayer(name, "residual", (Tap(f"hook_{name}", meaning),))


def block(spec, layer: int = 0) -> Block:
    """The declared block of ``spec`` at ``layer`` (0-based).

    Pre-LN: ``ln1 -> attn -> resid_mid -> ln2 -> mlp -> resid_post``; attention only:
    ``ln1 -> attn -> resid_post`` (TransformerLens' naming). The norms are LayerNorm or
    RMSNorm, the MLP standard or SwiGLU; the attention's options are those of ``layer``.
    """
    if getattr(spec, "norm", "pre") != "pre":
        raise ValueError(f"norm must be 'pre' (the only placement declared), got {spec.norm!r}")
    norm = spec.normalization
    if spec.attn_only:
        return Block((_norm("ln1", norm, spec.ln_eps), _attention(spec, layer), _residual("resid_post", last=True)))
    return Block((
        _norm("ln1", norm, spec.ln_eps), _attention(spec, layer), _residual("resid_mid", last=False),
        _norm("ln2", norm, spec.ln_eps), _mlp(spec), _residual("resid_post", last=True),
    ))


class BlockShape:
    """The spec fields `block` reads, without a spec: for the registry of tap names."""

    norm, ln_eps, positional, attn_scale, activation = "pre", 0.0, "none", "sqrt", "gelu"
    qk_norm, n_kv_heads, rope_theta, attn_temperature = False, None, 10000.0, None

    def __init__(self, attn_only: bool = False, normalization: str = "layernorm", mlp: str = "standard") -> None:
        self.attn_only = bool(attn_only)
        self.normalization, self.mlp = normalization, mlp
        self.kv_heads = 1

    def positional_at(self, layer: int) -> str:
        return self.positional

    def qk_norm_at(self, layer: int) -> bool:
        return self.qk_norm

    def temperature_at(self, layer: int):
        return None


# The standard block (LayerNorm, standard MLP): the taps of GPT-2's block in forward order.
FULL_BLOCK = block(BlockShape(attn_only=False))

# Every tap suffix any declared block can emit, in forward order (SwiGLU's
# ``mlp.hook_pre_linear`` after ``mlp.hook_pre``), with its meaning.
_SWIGLU_TAPS = block(BlockShape(mlp="swiglu")).taps
_AT_PRE = FULL_BLOCK.tap_suffixes.index("mlp.hook_pre") + 1
ALL_TAPS: tuple[Tap, ...] = (FULL_BLOCK.taps[:_AT_PRE]
                             + tuple(t for t in _SWIGLU_TAPS if t.suffix == "mlp.hook_pre_linear")
                             + FULL_BLOCK.taps[_AT_PRE:])

__all__ = ["KINDS", "ENTRY_TAP", "Tap", "Sublayer", "Block", "BlockShape", "block", "FULL_BLOCK", "ALL_TAPS"]
