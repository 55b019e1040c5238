"""Shared fixtures of the simulate tests: small specs and a plain one-network reference."""

from __future__ import annotations

import math

import pytest

import torch
import torch.nn.functional as F

from theory import ModelSpec
from theory.taps import all_taps


def small_spec(**changes) -> ModelSpec:
    base = dict(d_model=32, n_heads=4, n_layers=1, seq_len=12, attn_only=True)
    base.update(changes)
    return ModelSpec(**base)


def reference_forward(spec: ModelSpec, x: torch.Tensor, weights: dict) -> dict[str, torch.Tensor]:
    """One network, one sequence, written with loops over heads and query positions.

    ``x`` (T, d); ``weights[(layer, name)]`` (d_out, d_in) in math orientation. Returns
    every tap: (T, d) or (T, H, d_head) or (H, T, T) for scores/pattern (with NaN above
    the diagonal, where the tap has no entries).
    """
    T, d = x.shape
    H, dh = spec.n_heads, spec.d_head
    scale = math.sqrt(dh) if spec.attn_scale == "sqrt" else dh
    act = {"gelu": F.gelu, "gelu_tanh": lambda t: F.gelu(t, approximate="tanh"), "relu": torch.relu}[spec.activation]

    def ln(t):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + spec.ln_eps)

    out = {}
    for layer in range(spec.n_layers):
        p = f"blocks.{layer}."
        out[p + "hook_resid_pre"] = x
        e = ln(x)
        out[p + "ln1.hook_normalized"] = e
        q = (e @ weights[(layer, "W_q")].T).view(T, H, dh)
        k = (e @ weights[(layer, "W_k")].T).view(T, H, dh)
        v = (e @ weights[(layer, "W_v")].T).view(T, H, dh)
        out[p + "attn.hook_q"], out[p + "attn.hook_k"], out[p + "attn.hook_v"] = q, k, v
        scores = torch.full((H, T, T), float("nan"), dtype=x.dtype)
        pattern = torch.full((H, T, T), float("nan"), dtype=x.dtype)
        z = torch.zeros(T, H, dh, dtype=x.dtype)
        for h in range(H):
            for m in range(T):
                logits = torch.stack([q[m, h] @ k[n, h] for n in range(m + 1)]) / scale
                a = torch.exp(logits - logits.max())
                a = a / a.sum()
                scores[h, m, : m + 1] = logits
                pattern[h, m, : m + 1] = a
                z[m, h] = sum(a[n] * v[n, h] for n in range(m + 1))
        out[p + "attn.hook_attn_scores"], out[p + "attn.hook_pattern"], out[p + "attn.hook_z"] = scores, pattern, z
        attn_out = z.reshape(T, d) @ weights[(layer, "W_o")].T
        out[p + "hook_attn_out"] = attn_out
        x = x + attn_out
        if spec.attn_only:  # the block ends here, at hook_resid_post (TransformerLens' naming)
            out[p + "hook_resid_post"] = x
            continue
        out[p + "hook_resid_mid"] = x
        e2 = ln(x)
        out[p + "ln2.hook_normalized"] = e2
        pre = e2 @ weights[(layer, "W_in")].T
        post = act(pre)
        mlp_out = post @ weights[(layer, "W_out")].T
        x = x + mlp_out
        out[p + "mlp.hook_pre"], out[p + "mlp.hook_post"] = pre, post
        out[p + "hook_mlp_out"], out[p + "hook_resid_post"] = mlp_out, x
    assert set(out) == set(all_taps(spec.n_layers, spec.attn_only))
    return out


@pytest.fixture(autouse=False)
def one_thread():
    """Tiny tensors gain nothing from a second thread, and an OpenMP team loses whole
    scheduler time slices when another process holds a core: run the tests on one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
