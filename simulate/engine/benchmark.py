"""`simulate bench`: the engine against a per-network loop and the matmul ceiling.

Three throughputs (networks per second) of the same model -- one pre-LN attention layer,
``T`` tokens, float32 -- measured in the same process, one after the other:

* ``engine``: `simulate.run` recording ``blocks.0.hook_resid_post`` (the layer's output)
  at every position, statistics included;
* ``loop``: what a user would write -- for each network, draw the weights with
  ``torch.randn``, run the forward with torch's fused attention, accumulate per-position
  sums of the output;
* ``ceiling``: only the matrix products of that forward (the fused Q/K/V projection, all
  T x T scores, pattern x V, output projection), batched, with weights drawn beforehand
  and not timed: what the explicit-weights forward could reach if nothing but its
  matrix products cost anything.

The ratios engine/loop and engine/ceiling are what the timings mean; absolute numbers
depend on the machine.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from theory import ModelSpec

from theory.block import block

from .arguments import resolve_device
from .runner import run


def bench_spec(d_model: int, seq_len: int) -> ModelSpec:
    """One attention layer, heads of 64 (one head below d = 64), GPT-2 init."""
    return ModelSpec(d_model=d_model, n_heads=max(1, d_model // 64), n_layers=1, seq_len=seq_len, attn_only=True)


def _timed(fn, samples: int) -> float:
    t0 = time.perf_counter()
    fn(samples)
    return samples / (time.perf_counter() - t0)


def _calibrate(fn, seconds: float, first: int) -> int:
    """A sample count for which one call of ``fn`` lasts about ``seconds`` (after a warm-up)."""
    fn(first)
    n = first
    while True:
        t0 = time.perf_counter()
        fn(n)
        dt = time.perf_counter() - t0
        if dt >= seconds * 0.7 or n >= 1 << 20:
            return n
        n = max(n + 1, int(n * min(8.0, seconds / max(dt, 1e-3))))


def engine(spec: ModelSpec, device: torch.device):
    output = block(spec).output_tap  # the layer's output

    def go(samples: int) -> None:
        run(spec, taps=[f"blocks.0.{output}"], samples=samples, seed=0, device=device, progress=False)

    return go


def loop(spec: ModelSpec, device: torch.device):
    d, T, H = spec.d_model, spec.seq_len, spec.n_heads
    dh = spec.d_head

    def go(samples: int) -> None:
        s1 = torch.zeros(T, device=device, dtype=torch.float64)
        s2 = torch.zeros(T, device=device, dtype=torch.float64)
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            for _ in range(samples):
                x = torch.randn(T, d, generator=gen, device=device) * spec.sigma_embed
                w_q = torch.randn(d, d, generator=gen, device=device) * spec.sigma_q
                w_k = torch.randn(d, d, generator=gen, device=device) * spec.sigma_k
                w_v = torch.randn(d, d, generator=gen, device=device) * spec.sigma_v
                w_o = torch.randn(d, d, generator=gen, device=device) * spec.sigma_o
                e = F.layer_norm(x, (d,), eps=spec.ln_eps)
                q = (e @ w_q.T).view(T, H, dh).transpose(0, 1)
                k = (e @ w_k.T).view(T, H, dh).transpose(0, 1)
                v = (e @ w_v.T).view(T, H, dh).transpose(0, 1)
                z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                out = x + z.transpose(0, 1).reshape(T, d) @ w_o.T
                s1 += out.double().sum(-1)
                s2 += (out.double() ** 2).sum(-1)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return go


def ceiling(spec: ModelSpec, device: torch.device, chunk: int):
    d, T, H = spec.d_model, spec.seq_len, spec.n_heads
    dh = spec.d_head
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(chunk, T, d, generator=gen, device=device)
    w_qkv = torch.randn(chunk, 3 * d, d, generator=gen, device=device)  # W_q, W_k, W_v stacked
    w_o = torch.randn(chunk, d, d, generator=gen, device=device)

    def go(samples: int) -> None:
        with torch.no_grad():
            for _ in range(math.ceil(samples / chunk)):
                qkv = (x @ w_qkv.transpose(1, 2)).view(chunk, T, 3, H, dh)  # (S, T, 3, H, dh), one fused product
                q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (S, H, T, dh) each
                a = q @ k.transpose(-1, -2)  # (S, H, T, T)
                z = (a @ v).transpose(1, 2).reshape(chunk, T, d)  # (S, T, d)
                z @ w_o.transpose(1, 2)  # (S, T, d)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return go


def bench(
    widths=(64, 768), seq_len: int = 256, seconds: float = 3.0, device: str = "cpu",
    threads: int | None = None, rounds: int = 3,
) -> dict[str, dict[str, float]]:
    """``{"d64": {"engine": s/s, "loop": s/s, "ceiling": s/s}, ...}`` (networks per second).

    Each of the three runs ``rounds`` times for about ``seconds / rounds``, interleaved, and
    the best throughput of each is kept. ``threads`` sets torch's intra-op threads for all
    three alike.
    """
    dev = resolve_device(device)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _bench(widths, seq_len, seconds, dev, rounds)
    finally:
        torch.set_num_threads(before)


def _bench(widths, seq_len, seconds, dev, rounds) -> dict[str, dict[str, float]]:
    out = {}
    for d in widths:
        spec = bench_spec(d, seq_len)
        chunk = 64 if d <= 128 else 8
        fns = {"engine": engine(spec, dev), "loop": loop(spec, dev), "ceiling": ceiling(spec, dev, chunk)}
        first = {"engine": 2, "loop": 2, "ceiling": chunk}
        sizes = {name: _calibrate(fn, seconds / rounds, first[name]) for name, fn in fns.items()}
        best = dict.fromkeys(fns, 0.0)
        for _ in range(rounds):  # interleaved rounds, best of each: robust to a passing load
            for name, fn in fns.items():
                best[name] = max(best[name], _timed(fn, sizes[name]))
        out[f"d{d}"] = best
    return out


def format_table(results: dict[str, dict[str, float]]) -> str:
    lines = [f"{'model':<8}{'engine':>12}{'loop':>12}{'ceiling':>12}{'eng/loop':>10}{'eng/ceil':>10}   (networks/s)"]
    for name, r in results.items():
        lines.append(
            f"{name:<8}{r['engine']:>12.1f}{r['loop']:>12.1f}{r['ceiling']:>12.1f}"
            f"{r['engine'] / r['loop']:>10.2f}{r['engine'] / r['ceiling']:>10.2f}"
        )
    return "\n".join(lines)
