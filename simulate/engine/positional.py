"""Positional schemes, one registry entry each; NoPE (``"none"``, the identity) is the subject.

`POSITIONAL` maps a scheme's name (`ModelSpec.positional`, the attention sublayer's
``options["positional"]`` in `theory.block`) to its class. The forward pass prepares one
instance per pass (tables depend on the sequence length, device and dtype) and asks it at
exactly three places, each the identity for ``none``:

* `Positional.embed`: the network's input, before the first block (``learned``, ``sinusoidal``);
* `Positional.rotate`: each head's q and k after ``hook_q``/``hook_k`` (``rope``);
* `Positional.bias`: added to the scaled logits, inside ``hook_attn_scores`` (``alibi``).

A new scheme (ALiBi variants, ...) is a new subclass and a new entry. A layer's scheme is
the attention sublayer's option, so a per-layer schedule (SmolLM3, Llama 4) needs nothing here.
Each variant follows its reference paper:

* ``learned`` -- absolute position embeddings added to the token embeddings, as GPT-2's
  ``wpe`` (Radford et al. 2019): a ``(seq_len, d_model)`` table with i.i.d.
  ``N(0, sigma_embed^2)`` entries, drawn at random initialisation like every other weight
  (it belongs to the network: the quenched network draws it once; the annealed measure
  draws a fresh one per network). Row ``m - 1`` is added at 1-based position ``m``.
* ``sinusoidal`` -- the fixed table of Vaswani et al. 2017 (sec. 3.5), added to the token
  embeddings **unscaled**, exactly as the reference defines it (0-based position ``p``):

      PE[p, 2i]   = sin(p / 10000^(2i / d_model))
      PE[p, 2i+1] = cos(p / 10000^(2i / d_model))

  Every entry has magnitude <= 1 (mean square 1/2 per coordinate), against token
  embeddings of std ``sigma_embed`` (0.02 at GPT-2's init), so at initialisation the table
  dominates the residual stream by a factor ~``1 / (sqrt(2) sigma_embed)`` in norm. (Vaswani
  et al. multiply the *token* embeddings by ``sqrt(d_model)`` instead; our token embeddings
  follow the spec's ``sigma_embed``, so we keep the table as defined and say so.)
* ``rope`` -- rotary embeddings of Su et al. 2021 (RoFormer), applied to each head's query
  and key after the projection, in the **rotate-half convention of Hugging Face Llama**
  (GPT-NeoX): for 0-based position ``p`` and frequency ``i < d_head/2`` of a head of width
  ``d_head`` (``theta_i = rope_theta^(-2i / d_head)``, `ModelSpec.rope_theta`, 10000 by
  default), coordinates ``i`` and ``i + d_head/2`` form the pair

      (x_i, x_{i+d/2}) -> (x_i cos(p theta_i) - x_{i+d/2} sin(p theta_i),
                           x_{i+d/2} cos(p theta_i) + x_i sin(p theta_i)),

  i.e. ``x cos + rotate_half(x) sin`` with ``rotate_half(x) = (-x_2, x_1)``. The paper's
  interleaved pairs ``(2i, 2i+1)`` (Llama 4's complex form) are a fixed permutation of a
  head's coordinates: for i.i.d. ``W_q``, ``W_k`` the same law, and the same logits for
  weights whose rows are permuted alike. Rotations preserve norms, and ``R_m q . R_n k``
  depends on ``m - n`` only. A spec may use RoPE on some layers only (``positional`` as a
  per-layer list, `ModelSpec.positional_at`).
* ``alibi`` -- attention with linear biases of Press et al. 2022: the logit of query ``m`` and
  key ``n <= m`` in head ``h`` gets ``-slope_h (m - n)`` after the ``1/sqrt(d_head)`` scale.
  Slopes: for ``H`` a power of two, the geometric sequence starting at ``2^(-8/H)`` with that
  ratio (``2^(-8h/H)``, ``h = 1..H``; 1/2 .. 1/256 for 8 heads); otherwise the paper's rule:
  the slopes of the closest power of two ``P < H``, then every other slope of ``2P`` for the
  remaining ``H - P`` heads (the reference implementation, ofirpress/attention_with_linear_biases).
"""

from __future__ import annotations

import torch

from theory import ModelSpec
from theory.quantities import alibi_slopes  # noqa: F401 (the one rule for theory and simulate; re-exported)

ROPE_BASE = 10000.0
SINUSOID_BASE = 10000.0


def sinusoidal_table(seq_len: int, d_model: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """The (seq_len, d_model) table of Vaswani et al. 2017; row ``p`` is 0-based position ``p``.

    >>> t = sinusoidal_table(3, 4)
    >>> [round(v, 6) for v in t[1].tolist()]
    [0.841471, 0.540302, 0.01, 0.99995]
    """
    pos = torch.arange(seq_len, device=device, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    two_i = torch.arange(0, d_model, 2, device=device, dtype=torch.float64)  # (ceil(d/2),)
    angle = pos / SINUSOID_BASE ** (two_i / d_model)  # (T, ceil(d/2))
    table = torch.empty(seq_len, d_model, device=device, dtype=torch.float64)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : d_model // 2])
    return table.to(dtype)


def rope_angles(seq_len: int, d_head: int, *, base: float = ROPE_BASE, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos(p theta_i)`` and ``sin(p theta_i)``, each (seq_len, d_head // 2), float64, with
    ``theta_i = base^(-2i / d_head)`` and 0-based positions ``p``."""
    if d_head % 2:
        raise ValueError(f"positional 'rope' rotates pairs of coordinates: d_head must be even, got {d_head}")
    pos = torch.arange(seq_len, device=device, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    theta = float(base) ** (-torch.arange(0, d_head, 2, device=device, dtype=torch.float64) / d_head)  # (dh/2,)
    angle = pos * theta  # (T, dh/2)
    return torch.cos(angle), torch.sin(angle)


def rope_rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the pairs ``(i, i + d_head/2)`` of ``x`` (..., T, H, d_head) by position
    (rotate-half, as Hugging Face Llama): ``x cos + rotate_half(x) sin``.

    ``cos``, ``sin`` are (T, d_head // 2) from `rope_angles`.
    """
    half = x.shape[-1] // 2
    first, second = x[..., :half], x[..., half:]  # (..., T, H, dh/2)
    c = cos.to(x.dtype).unsqueeze(-2)  # (T, 1, dh/2)
    s = sin.to(x.dtype).unsqueeze(-2)  # (T, 1, dh/2)
    return torch.cat((first * c - second * s, second * c + first * s), dim=-1)  # (..., T, H, dh)


def alibi_bias(n_heads: int, seq_len: int, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """``bias[h, m, n] = -slope_h (m - n)`` for keys ``n <= m``, 0 above the diagonal; (H, T, T)."""
    slopes = torch.tensor(alibi_slopes(n_heads), device=device, dtype=torch.float64)  # (H,)
    pos = torch.arange(seq_len, device=device, dtype=torch.float64)
    distance = (pos.unsqueeze(1) - pos.unsqueeze(0)).clamp(min=0.0)  # (T, T): m - n below the diagonal
    return (-slopes.view(-1, 1, 1) * distance).to(dtype)  # (H, T, T)


def check_positional(spec: ModelSpec) -> None:
    """Refuse, at the boundary, a spec whose positional variant cannot be realised: RoPE on
    any layer needs an even ``d_head``."""
    if "rope" in spec.positional_schemes and spec.d_head % 2:
        layers = [l for l in range(spec.n_layers) if spec.positional_at(l) == "rope"]
        where = "" if isinstance(spec.positional, str) else f" (on layer(s) {', '.join(map(str, layers))})"
        raise ValueError(
            f"positional 'rope'{where} rotates pairs of coordinates: d_head = d_model / n_heads must be even, "
            f"got {spec.d_head}"
        )


def input_scheme(spec: ModelSpec) -> str:
    """The scheme acting on the network's input: the whole-model string (a per-layer list
    holds only layer-level schemes, so its input scheme is ``none``)."""
    return spec.positional if isinstance(spec.positional, str) else "none"


class Positional:
    """The scheme ``none``: the identity at the input and inside attention.

    One instance serves one forward pass of ``n_heads`` heads of width ``d_head`` over
    ``seq_len`` positions on ``device`` in ``dtype``; subclasses override what they change.
    """

    name = "none"
    bias: torch.Tensor | None = None  # (H, T, T) added to the scaled logits, or None

    def __init__(self, n_heads: int, d_head: int, seq_len: int, device, dtype: torch.dtype, *, rope_theta: float = ROPE_BASE):
        self.n_heads, self.d_head, self.seq_len, self.device, self.dtype = n_heads, d_head, seq_len, device, dtype
        self.rope_theta = rope_theta

    def embed(self, x: torch.Tensor, pos_embed: torch.Tensor | None) -> torch.Tensor:
        """The network's input ``x`` (S, B, T, d) with the scheme's position table added."""
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Queries and keys (S, B, T, H, d_head) as the logits see them."""
        return q, k


class Learned(Positional):
    """GPT-2's ``wpe``: the network's own table (drawn with its weights), added at the input."""

    name = "learned"

    def embed(self, x: torch.Tensor, pos_embed: torch.Tensor | None) -> torch.Tensor:
        """``pos_embed`` (S or 1, T_table >= T, d) is the learned table of the network(s)."""
        T, d = x.shape[-2], x.shape[-1]
        if pos_embed is None:
            raise ValueError(
                "positional = 'learned' needs the network's position table: pass pos_embed "
                "(S, seq_len, d_model) to forward, or a Projections that carries one"
            )
        if pos_embed.dim() != 3 or pos_embed.shape[1] < T or pos_embed.shape[2] != d:
            raise ValueError(f"pos_embed must be (S, >= {T}, {d}), got {tuple(pos_embed.shape)}")
        return x + pos_embed[:, :T].unsqueeze(1).to(x.dtype)  # (S, B, T, d): token + position embeddings


class Sinusoidal(Positional):
    """Vaswani et al.'s fixed table, unscaled, added at the input."""

    name = "sinusoidal"

    def embed(self, x: torch.Tensor, pos_embed: torch.Tensor | None) -> torch.Tensor:
        T = x.shape[-2]
        table = sinusoidal_table(T, x.shape[-1], device=x.device, dtype=x.dtype).view(1, 1, T, -1)  # (1, 1, T, d)
        return x + table  # (S, B, T, d)


class Rope(Positional):
    """RoFormer's rotation of each head's q and k by position (rotate-half pairs, base ``rope_theta``)."""

    name = "rope"

    def __init__(self, n_heads: int, d_head: int, seq_len: int, device, dtype: torch.dtype, *, rope_theta: float = ROPE_BASE):
        super().__init__(n_heads, d_head, seq_len, device, dtype, rope_theta=rope_theta)
        self.cos, self.sin = rope_angles(seq_len, d_head, base=rope_theta, device=device)  # each (T, dh/2), float64

    def rotate(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return rope_rotate(q, self.cos, self.sin), rope_rotate(k, self.cos, self.sin)  # each (S, B, T, H, dh)


class Alibi(Positional):
    """Press et al.'s linear biases ``-slope_h (m - n)`` on the logits."""

    name = "alibi"

    def __init__(self, n_heads: int, d_head: int, seq_len: int, device, dtype: torch.dtype, *, rope_theta: float = ROPE_BASE):
        super().__init__(n_heads, d_head, seq_len, device, dtype, rope_theta=rope_theta)
        self.bias = alibi_bias(n_heads, seq_len, device=device, dtype=dtype)  # (H, T, T)


# The registry: scheme name -> its class (`ModelSpec.positional` takes exactly these names).
POSITIONAL: dict[str, type[Positional]] = {cls.name: cls for cls in (Positional, Learned, Sinusoidal, Rope, Alibi)}
