"""Projections: how the weights enter the forward pass, explicit or drawn by their Gram law.

Weights enter the forward pass (`simulate.engine.forward_pass`) only through a *projection*
callable ``project(layer, kind, inp)`` that maps rows ``inp`` (S, R, d_in) to
``inp @ W^T`` (S, R, d_out), scaled by the spec's sigmas. `Projections` does that with
explicit weight matrices, or -- under the annealed measure, where each matrix is used
exactly once -- by drawing ``inp @ W^T`` from its exact matrix-normal law given the Gram
matrix ``inp inp^T`` (see `psd_root`), which needs fewer random numbers and fewer FLOPs
than the weights themselves when R < d_in.
"""

from __future__ import annotations

from typing import Callable

import torch

from theory import ModelSpec
from theory.block import block

# The projections each sublayer kind applies, in the order a sample draws them: the
# attention's fused Q/K/V projection (d_model -> (n_heads + 2 n_kv_heads) d_head: the
# queries of every head, then the keys and the values of the key/value heads, which
# grouped-query attention makes fewer) and its output
# projection W_o (d_model -> d_model); the MLP's W_in (d_model -> d_mlp) and W_out
# (d_mlp -> d_model); SwiGLU's fused gate and up projections W_gate, W_up (d_model ->
# 2 * d_mlp, gate first) and W_down (d_mlp -> d_model). Kinds without weights (layernorm,
# rmsnorm, residual) draw nothing.
SUBLAYER_PROJECTIONS = {"attention": ("qkv", "o"), "mlp": ("in", "out"), "swiglu": ("gate_up", "down")}

Project = Callable[[int, str, torch.Tensor], torch.Tensor]


def projection_shape(spec: ModelSpec, kind: str) -> tuple[int, int]:
    """``(d_out, d_in)`` of a projection kind."""
    d = spec.d_model
    return {
        "qkv": ((spec.n_heads + 2 * spec.kv_heads) * spec.d_head, d),
        "o": (d, d),
        "in": (spec.mlp_width, d),
        "out": (d, spec.mlp_width),
        "gate_up": (2 * spec.mlp_width, d),
        "down": (d, spec.mlp_width),
    }[kind]


def projection_kinds(spec: ModelSpec, layer: int = 0) -> tuple[str, ...]:
    """The projections of ``layer``'s declared block (`theory.block`), in draw order."""
    return tuple(k for sub in block(spec, layer) for k in SUBLAYER_PROJECTIONS.get(sub.kind, ()))


def output_scale(spec: ModelSpec, kind: str) -> torch.Tensor | float:
    """The sigma(s) multiplying a projection of standard-normal weights."""
    if kind == "qkv":
        width, kv_width = spec.n_heads * spec.d_head, spec.kv_heads * spec.d_head
        return torch.tensor(
            [spec.sigma_q] * width + [spec.sigma_k] * kv_width + [spec.sigma_v] * kv_width,
            dtype=torch.float64,
        )
    return {"o": spec.sigma_o_effective, "in": spec.sigma_mlp_in, "out": spec.sigma_mlp_out_effective,
            "gate_up": spec.sigma_mlp_in, "down": spec.sigma_mlp_out_effective}[kind]


def psd_root(gram: torch.Tensor) -> torch.Tensor:
    """A square root ``L`` with ``L L^T = gram`` for a batch of PSD matrices (S, R, R).

    Cholesky where it succeeds; where the Gram matrix is singular or too ill-conditioned
    for it (a finite vocabulary repeating a token; strongly correlated positions in deep
    layers), a symmetric eigen-decomposition in float64 made triangular by a QR step.
    The root is always lower triangular (`tril_matmul` relies on it).

    A Gram matrix with a NaN or an inf in its lower triangle (its network's values
    overflowed or a LayerNorm divided by zero), or one whose eigen-decomposition fails,
    gets a root of NaNs: that network's outputs are NaN, so the run counts it as a
    non-finite sample and leaves it out, and the other networks of the chunk are unaffected.
    """
    root, info = torch.linalg.cholesky_ex(gram)
    bad = info != 0
    if bool(bad.any()):
        sub = gram[bad].double()  # (K, R, R)
        finite = torch.isfinite(sub.tril()).all(dim=-1).all(dim=-1)  # (K,): eigh reads the lower triangle
        lower = torch.full_like(sub, float("nan"))
        if bool(finite.any()):
            lower[finite] = _eigh_root(sub[finite])
        root = root.clone()
        root[bad] = lower.to(gram.dtype)
    return root


def _eigh_root(gram: torch.Tensor) -> torch.Tensor:
    """Lower-triangular roots of finite symmetric matrices (K, R, R) float64 via eigh + QR;
    a matrix whose decomposition fails (LAPACK did not converge) gets NaNs."""
    try:
        eigval, eigvec = torch.linalg.eigh(gram)
    except torch.linalg.LinAlgError:
        if gram.shape[0] == 1:
            return torch.full_like(gram, float("nan"))
        # one matrix failed the batch: decompose each alone, so only the failing ones are lost
        return torch.cat([_eigh_root(gram[i:i + 1]) for i in range(gram.shape[0])])
    full = eigvec * eigval.clamp(min=0.0).sqrt().unsqueeze(-2)  # M with M M^T = gram, not triangular
    # The callers multiply with `tril_matmul`, which reads the lower triangle only: make
    # the root triangular. With M^T = Q R, M M^T = R^T R, so R^T is a lower-triangular root.
    # (Without this, every row but the last lost part of its variance: deep layers, where
    # positions are strongly correlated and the float32 Cholesky fails, came out far too small.)
    upper = torch.linalg.qr(full.transpose(-1, -2), mode="r").R
    return upper.transpose(-1, -2)


def _row_blocks(rows: int) -> list[tuple[int, int]]:
    """Row blocks for the triangular products: two halves from 64 rows on.

    (More blocks save more FLOPs on paper, but thinner products run slower on a CPU;
    measured with `simulate bench`, two halves were the best.)
    """
    k = 2 if rows >= 64 else 1
    edges = [round(i * rows / k) for i in range(k + 1)]
    return list(zip(edges[:-1], edges[1:]))


def gram_matrix(rows: torch.Tensor) -> torch.Tensor:
    """The lower triangle of ``rows @ rows^T`` (S, R, R); above the diagonal, 0 or the true value.

    Row block ``i`` needs only the rows up to its own end: with two blocks, 3/4 of the
    FLOPs of the full product. (Cholesky and eigh read the lower triangle only.)
    """
    S, R, _ = rows.shape
    gram = torch.empty(S, R, R, device=rows.device, dtype=rows.dtype)
    for r0, r1 in _row_blocks(R):
        torch.bmm(rows[:, r0:r1], rows[:, :r1].transpose(-1, -2), out=gram[:, r0:r1, :r1])
        gram[:, r0:r1, r1:] = 0.0
    return gram


def tril_matmul(lower: torch.Tensor, right: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """``alpha * lower @ right`` for lower-triangular ``lower`` (S, R, R), skipping its zeros.

    Row block ``i`` of the product needs only the columns of ``lower`` up to the block's
    end: with two blocks, 3/4 of the FLOPs of a dense product, written in place.
    """
    S, R, _ = lower.shape
    out = torch.empty(S, R, right.shape[-1], device=right.device, dtype=right.dtype)
    for r0, r1 in _row_blocks(R):
        block = out[:, r0:r1]
        torch.baddbmm(block, lower[:, r0:r1, :r1], right[:, :r1], beta=0, alpha=alpha, out=block)
    return out


class Projections:
    """Realises ``project(layer, kind, inp) = sigma * inp @ W^T`` for each projection.

    ``draws[(layer, kind)]`` holds standard normals of one of two shapes:

    * ``("W", (S, d_out, d_in))``: the weight matrix itself (explicit path);
    * ``("G", (S, R, d_out))``: under the annealed measure only. Given ``inp`` (S, R, d_in)
      and weights with i.i.d. N(0, sigma^2) entries used nowhere else, ``inp @ W^T`` is
      exactly matrix-normal: its columns are i.i.d. N(0, sigma^2 inp inp^T). So it equals
      in law ``sigma * L @ G`` with ``L L^T = inp inp^T`` (R x R) and ``G`` standard normal.

    ``matmul_dtype`` (bfloat16, or float16 on CUDA) runs the products in that dtype: the
    normals are rounded to it once, here; each input is rounded when it enters a product and
    the product (float32 accumulation inside the kernel) comes back as float32. The Gram
    matrix and its root are computed in the input's dtype (float32), and the root is rounded
    only to enter ``L @ G``. The learned position table stays in the stream's dtype.
    """

    def __init__(self, spec: ModelSpec, draws: dict[tuple[int, str], tuple[str, torch.Tensor]],
                 matmul_dtype: torch.dtype | None = None):
        self.spec = spec
        self.matmul_dtype = matmul_dtype
        if matmul_dtype is not None:
            draws = {k: (form, t if form == "P" else t.to(matmul_dtype)) for k, (form, t) in draws.items()}
        self.draws = draws
        self._scales: dict[str, torch.Tensor | float] = {}

    def to(self, dtype: torch.dtype) -> "Projections":
        """The same network with its normals in ``dtype`` (the matrix-unit dtype kept)."""
        draws = {k: (form, t if (self.matmul_dtype is not None and form != "P") else t.to(dtype))
                 for k, (form, t) in self.draws.items()}
        out = Projections(self.spec, draws)
        out.matmul_dtype = self.matmul_dtype
        return out

    def _scale(self, kind: str, like: torch.Tensor) -> torch.Tensor | float:
        scale = self._scales.get(kind)
        if scale is None or (isinstance(scale, torch.Tensor) and (scale.device, scale.dtype) != (like.device, like.dtype)):
            scale = output_scale(self.spec, kind)
            if isinstance(scale, torch.Tensor):
                unique = torch.unique(scale)
                scale = float(unique[0]) if len(unique) == 1 else scale.to(device=like.device, dtype=like.dtype)
            self._scales[kind] = scale
        return scale

    def __call__(self, layer: int, kind: str, inp: torch.Tensor) -> torch.Tensor:
        form, normals = self.draws[(layer, kind)]
        scale = self._scale(kind, inp)
        # a scalar sigma rides inside the matrix product (alpha), saving a pass over the output
        alpha = scale if isinstance(scale, float) else 1.0
        low = self.matmul_dtype
        if form == "W":
            S = max(inp.shape[0], normals.shape[0])
            rows = inp if low is None else inp.to(low)
            out = torch.empty(S, inp.shape[1], normals.shape[1], device=inp.device, dtype=rows.dtype)
            torch.baddbmm(out, rows, normals.transpose(-1, -2), beta=0, alpha=alpha, out=out)  # (S, R, d_out)
        else:
            root = psd_root(gram_matrix(inp))  # (S, R, R) in the input's dtype (float32 in a bfloat16 run)
            out = tril_matmul(root if low is None else root.to(low), normals, alpha)  # (S, R, d_out)
        if low is not None:
            out = out.to(inp.dtype)  # back to the stream's dtype
        return out if isinstance(scale, float) else out * scale

    @property
    def pos_embed(self) -> torch.Tensor | None:
        """The learned position table (S, T, d), N(0, sigma_embed^2) entries, of a
        ``positional="learned"`` network (drawn as ``draws["pos"]``); None otherwise."""
        entry = self.draws.get("pos")
        return None if entry is None else entry[1] * self.spec.sigma_embed

    def weight(self, layer: int, name: str) -> torch.Tensor:
        """The scaled weight matrix ``name`` of ``layer``, shape (S, d_out, d_in).

        ``W_q`` (H d_head rows), ``W_k``, ``W_v`` (n_kv_heads d_head rows each), ``W_o``;
        the MLP's ``W_in``, ``W_out``; SwiGLU's ``W_gate``, ``W_up``, ``W_down``.
        """
        kind = {"W_q": "qkv", "W_k": "qkv", "W_v": "qkv", "W_o": "o", "W_in": "in", "W_out": "out",
                "W_gate": "gate_up", "W_up": "gate_up", "W_down": "down"}[name]
        form, normals = self.draws[(layer, kind)]
        if form != "W":
            raise ValueError(f"{name} of layer {layer} was never drawn: the Gram fast path drew its output")
        spec = self.spec
        if kind == "qkv":
            width, kv_width = spec.n_heads * spec.d_head, spec.kv_heads * spec.d_head
            start, stop, sigma = {"W_q": (0, width, spec.sigma_q),
                                  "W_k": (width, width + kv_width, spec.sigma_k),
                                  "W_v": (width + kv_width, width + 2 * kv_width, spec.sigma_v)}[name]
            return normals[:, start:stop] * sigma
        if kind == "gate_up":
            part = ("W_gate", "W_up").index(name)
            return normals[:, part * spec.mlp_width:(part + 1) * spec.mlp_width] * output_scale(spec, kind)
        return normals * output_scale(spec, kind)
