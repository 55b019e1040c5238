"""`simulate bench`: the engine against a per-network loop, the matmul ceiling and the machine's peak.

For each width and each dtype (float32, bfloat16), four throughputs of the same model --
one pre-LN attention layer, ``T`` tokens -- measured in the same process, interleaved:

* ``engine``: `simulate.run` recording ``blocks.0.hook_resid_post`` (the layer's output)
  at every position, statistics included (``dtype="bfloat16"``: the matrix products in bf16);
* ``loop``: what a user would write -- for each network, draw the weights with
  ``torch.randn`` (rounded to bf16 for the bf16 loop), run the forward with torch's fused
  attention, accumulate per-position sums of the output;
* ``ceiling``: only the matrix products of that forward (the fused Q/K/V projection, all
  T x T scores, pattern x V, output projection), batched, with weights drawn beforehand
  and not timed: what the explicit-weights forward could reach if nothing but its
  matrix products cost anything;
* ``peak``: the machine's own dense matrix product (``PEAK_N`` square, in the dtype), the
  GFLOP/s the hardware gives torch here;
* ``draw``: the engine's random numbers alone (its `Drawer`, chunk by chunk, as `run` draws
  them): ``engine / draw`` is the share of the engine's time spent in the generator, which
  no matrix unit speeds up.

Each lower-precision dtype is also compared with float32 *in the same run*: the engine's,
the loop's and the ceiling's speed-up next to the dense product's (``peak_vs_float32``, what
the hardware gives), their quotient ``engine_speedup_over_peak_speedup`` and
``engine_share_of_peak_gain`` = (engine speed-up - 1) / (peak speed-up - 1), the fraction of
the hardware's gain that reaches the engine (0: none, 1: all of it).

Each figure is also given in GFLOP/s of the *nominal* work -- the matrix-product FLOPs of
the explicit forward (`forward_flops`: full T x T scores, as the ceiling computes them) --
and as a fraction of the peak; the engine's Gram path and the causal kernel do less
actual work, so the engine can exceed the ceiling. Optionally the 12-layer GPT-2-small
forward (d = 768, 12 heads, MLP 3072) per network, in each dtype. The ratios are what the
timings mean; absolute numbers depend on the machine and its load (``machine`` says which
matrix units torch found and the load averages at the start and the end).
"""

from __future__ import annotations

import math
import os
import time

import torch
import torch.nn.functional as F

from theory import ModelSpec

from theory.block import block

from .arguments import resolve_device, resolve_dtype
from .budget import default_chunk, run_sizes
from .draw import default_workers
from .runner import DEFAULT_MEMORY_BUDGET, run
from .sampler import Sampler

BENCH_DTYPES = ("float32", "bfloat16")
PEAK_N = 1024  # the square matrices of the peak measurement


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


def forward_flops(spec: ModelSpec) -> float:
    """Matrix-product FLOPs of one network's explicit forward (one sequence), ``2 m n k`` each:
    per layer Q/K/V ``2 T d (H + 2 H_kv) d_h``, all ``T^2`` scores and pattern x V ``2 x 2 T^2 H d_h``,
    W_o ``2 T H d_h d``, and the MLP ``2 T d d_mlp`` per matrix (two, SwiGLU three)."""
    T, d, H, dh = spec.seq_len, spec.d_model, spec.n_heads, spec.d_head
    attn = 2 * T * d * (H + 2 * spec.kv_heads) * dh + 4 * T * T * H * dh + 2 * T * H * dh * d
    mlp = 0 if spec.attn_only else (3 if spec.mlp == "swiglu" else 2) * 2 * T * d * spec.mlp_width
    return float(spec.n_layers * (attn + mlp))


def engine(spec: ModelSpec, device: torch.device, dtype: str = "float32"):
    output = block(spec).output_tap  # the layer's output

    def go(samples: int) -> None:
        run(spec, taps=[f"blocks.{spec.n_layers - 1}.{output}"], samples=samples, seed=0, device=device,
            progress=False, dtype=dtype)

    return go


def draws(spec: ModelSpec, device: torch.device, dtype: str = "float32"):
    """The engine's draws alone: ``fn(k)`` fills k units' normals (rounded to bf16 in a bf16 run)
    in `run`'s chunks; ``fn.close()`` ends its threads."""
    taps = [f"blocks.{spec.n_layers - 1}.{block(spec).output_tap}"]
    low = resolve_dtype(dtype, device)
    chunk = int(default_chunk(run_sizes(
        spec, taps=taps, samples=1 << 20, batch=1, chunk_size=None, positions=None, reservoir=0, measure="annealed",
        method="auto", dtype_bytes=4, memory_budget=DEFAULT_MEMORY_BUDGET)))  # as `run` chooses it
    sampler = Sampler(spec, seed=0, device=device, dtype=low, workers=default_workers(device))

    def go(samples: int) -> None:
        for first in range(0, samples, chunk):
            sampler.drawer.draw(first, min(chunk, samples - first), spec.vocab_size)

    go.close = sampler.close
    return go


def loop(spec: ModelSpec, device: torch.device, dtype: str = "float32"):
    d, T, H = spec.d_model, spec.seq_len, spec.n_heads
    dh = spec.d_head
    low = resolve_dtype(dtype, device)

    def draw(rows: int, gen, sigma: float) -> torch.Tensor:
        return (torch.randn(rows, d, generator=gen, device=device) * sigma).to(low)  # float32 drawn, rounded

    def go(samples: int) -> None:
        s1 = torch.zeros(T, device=device, dtype=torch.float64)
        s2 = torch.zeros(T, device=device, dtype=torch.float64)
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.no_grad():
            for _ in range(samples):
                x = torch.randn(T, d, generator=gen, device=device) * spec.sigma_embed
                w_q, w_k, w_v = draw(d, gen, spec.sigma_q), draw(d, gen, spec.sigma_k), draw(d, gen, spec.sigma_v)
                w_o = draw(d, gen, spec.sigma_o)
                e = F.layer_norm(x, (d,), eps=spec.ln_eps).to(low)
                q = (e @ w_q.T).view(T, H, dh).transpose(0, 1)
                k = (e @ w_k.T).view(T, H, dh).transpose(0, 1)
                v = (e @ w_v.T).view(T, H, dh).transpose(0, 1)
                z = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                out = x + (z.transpose(0, 1).reshape(T, d) @ w_o.T).float()
                s1 += out.double().sum(-1)
                s2 += (out.double() ** 2).sum(-1)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return go


def ceiling(spec: ModelSpec, device: torch.device, chunk: int, dtype: str = "float32"):
    d, T, H = spec.d_model, spec.seq_len, spec.n_heads
    dh = spec.d_head
    low = resolve_dtype(dtype, device)
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.randn(chunk, T, d, generator=gen, device=device).to(low)
    w_qkv = torch.randn(chunk, 3 * d, d, generator=gen, device=device).to(low)  # W_q, W_k, W_v stacked
    w_o = torch.randn(chunk, d, d, generator=gen, device=device).to(low)

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


def peak(device: torch.device, dtype: str = "float32", n: int = PEAK_N):
    """The machine's dense product: ``fn(k)`` multiplies two n x n matrices k times (2 n^3 FLOPs each)."""
    low = resolve_dtype(dtype, device)
    gen = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=gen, device=device).to(low)
    b = torch.randn(n, n, generator=gen, device=device).to(low)
    out = torch.empty(n, n, device=device, dtype=low)

    def go(samples: int) -> None:
        for _ in range(samples):
            torch.mm(a, b, out=out)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return go


def gpt2_small_spec(seq_len: int) -> ModelSpec:
    """GPT-2 small's shape: 12 pre-LN layers, d = 768, 12 heads, MLP 3072 (GPT-2 init)."""
    return ModelSpec(d_model=768, n_heads=12, n_layers=12, seq_len=seq_len)


# CPU flags (Linux /proc/cpuinfo names) that give bf16 matrix products their speed.
BF16_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")


def cpu_features(cpuinfo: str | None = None) -> dict:
    """Which bf16 matrix units the CPU has: ``{"flags": [...], "bf16_units": "AMX" |
    "AVX512-BF16" | "none", "model": ...}`` from ``/proc/cpuinfo`` (or ``cpuinfo``, its text);
    ``{"bf16_units": "unknown"}`` where there is no such file (not Linux).

    AMX (Sapphire Rapids and later) multiplies bf16 tiles: dense bf16 runs 5-16x float32.
    AVX512-BF16 (Cooper Lake, Zen 4) has a bf16 dot-product instruction: about 2-2.5x. Without
    either, torch converts bf16 to float32 and bf16 products are no faster, often slower.
    """
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
                cpuinfo = fh.read(1 << 20)
        except OSError:
            return {"bf16_units": "unknown"}
    flags, model = set(), ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "model name" and not model:
            model = value.strip()
    units = "AMX" if "amx_bf16" in flags else "AVX512-BF16" if "avx512_bf16" in flags else "none"
    return {"model": model, "flags": [f for f in BF16_FLAGS if f in flags], "bf16_units": units}


def machine(device: torch.device) -> dict:
    """What the timings ran on: torch's CPU capability and the CPU's bf16 units (or the GPU),
    threads, load averages."""
    info = {"device": str(device), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
        info["cpu"] = cpu_features()
    if hasattr(os, "getloadavg"):
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    return info


def bench(
    widths=(64, 768), seq_len: int = 256, seconds: float = 3.0, device: str = "cpu",
    threads: int | None = None, rounds: int = 3, dtypes=BENCH_DTYPES, gpt2_seq_len: int | None = None,
) -> dict:
    """``{"d64": {"engine": s/s, "loop": s/s, "ceiling": s/s, "float32": {...}, "bfloat16": {...}}, ...,
    "peak": {...}, "gpt2_small": {...}, "machine": {...}}``.

    Today's keys ``engine``, ``loop``, ``ceiling`` (float32 networks per second) stay at the top
    of each width; per dtype, each of them with ``*_gflops`` (nominal FLOPs, `forward_flops`)
    and ``*_of_peak``, and ``peak_gflops``. Each measurement runs ``rounds`` times for about
    ``seconds / rounds``, interleaved with the others (peaks included), and the best of each is
    kept. ``threads`` sets torch's intra-op threads for all alike. ``gpt2_seq_len`` adds the
    GPT-2-small forward at that T (one network per dtype, after a warm-up one).
    """
    dev = resolve_device(device)
    dtypes = tuple(dtypes)
    for dt in dtypes:
        resolve_dtype(dt, dev)
    before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        start = machine(dev)
        out = _bench(widths, seq_len, seconds, dev, rounds, dtypes)
        if gpt2_seq_len:
            out["gpt2_small"] = _gpt2(gpt2_seq_len, dev, dtypes, out["peak"])
        out["machine"] = dict(start, load_average_end=machine(dev).get("load_average"))
        return out
    finally:
        torch.set_num_threads(before)


def _bench(widths, seq_len, seconds, dev, rounds, dtypes) -> dict:
    peaks = {f"peak/{dt}": peak(dev, dt) for dt in dtypes}
    sizes = {name: _calibrate(fn, seconds / rounds, 1) for name, fn in peaks.items()}
    out, best = {}, dict.fromkeys(peaks, 0.0)
    for d in widths:
        spec = bench_spec(d, seq_len)
        chunk = 64 if d <= 128 else 8
        fns = dict(peaks)
        for dt in dtypes:
            fns.update({f"engine/{dt}": engine(spec, dev, dt), f"loop/{dt}": loop(spec, dev, dt),
                        f"ceiling/{dt}": ceiling(spec, dev, chunk, dt), f"draw/{dt}": draws(spec, dev, dt)})
        try:
            for name, fn in fns.items():
                if name not in peaks:  # each width's own sizes and bests (the peaks are shared)
                    sizes[name] = _calibrate(fn, seconds / rounds, chunk if name.startswith("ceiling") else 2)
                    best[name] = 0.0
            for _ in range(rounds):  # interleaved rounds, best of each: robust to a passing load
                for name, fn in fns.items():
                    best[name] = max(best[name], _timed(fn, sizes[name]))
        finally:
            for dt in dtypes:
                fns[f"draw/{dt}"].close()
        out[f"d{d}"] = _row(spec, best, dtypes)
    out["peak"] = {dt: best[f"peak/{dt}"] * 2 * PEAK_N**3 / 1e9 for dt in dtypes}
    return out


def _row(spec: ModelSpec, best: dict, dtypes) -> dict:
    """One width's figures from the best rates: per dtype, and each dtype against float32."""
    flops = forward_flops(spec)
    row = {k: best[f"{k}/float32"] for k in ("engine", "loop", "ceiling") if f"{k}/float32" in best}
    for dt in dtypes:
        peak_gflops = best[f"peak/{dt}"] * 2 * PEAK_N**3 / 1e9
        r = {"peak_gflops": peak_gflops}
        for k in ("engine", "loop", "ceiling"):
            r[k] = best[f"{k}/{dt}"]
            r[f"{k}_gflops"] = r[k] * flops / 1e9
            r[f"{k}_of_peak"] = r[f"{k}_gflops"] / peak_gflops
        r["draw"] = best[f"draw/{dt}"]
        r["draw_share"] = r["engine"] / r["draw"]  # the generator's share of the engine's time
        row[dt] = r
    if "float32" in row:
        ref = row["float32"]
        for dt in dtypes:
            if dt == "float32":
                continue
            r = row[dt]
            for k in ("engine", "loop", "ceiling"):
                r[f"{k}_vs_float32"] = r[k] / ref[k]
            r["peak_vs_float32"] = r["peak_gflops"] / ref["peak_gflops"]
            r["engine_speedup_over_peak_speedup"] = r["engine_vs_float32"] / r["peak_vs_float32"]
            gain = r["peak_vs_float32"] - 1.0
            r["engine_share_of_peak_gain"] = (r["engine_vs_float32"] - 1.0) / gain if gain > 0 else float("nan")
    row["nominal_gflop_per_network"] = flops / 1e9
    return row


def _gpt2(seq_len: int, dev: torch.device, dtypes, peaks: dict) -> dict:
    spec = gpt2_small_spec(seq_len)
    flops = forward_flops(spec)
    out = {"seq_len": seq_len, "nominal_gflop_per_network": flops / 1e9}
    for dt in dtypes:
        fn = engine(spec, dev, dt)
        fn(1)  # warm-up
        t0 = time.perf_counter()
        fn(1)
        dt_s = time.perf_counter() - t0
        gflops = flops / dt_s / 1e9
        out[dt] = {"seconds_per_network": dt_s, "gflops": gflops, "of_peak": gflops / peaks[dt]}
    return out


def format_table(results: dict) -> str:
    """The table `simulate bench` prints: per width and dtype, networks/s, GFLOP/s, fraction of peak."""
    lines = []
    peaks = results.get("peak", {})
    if peaks:
        lines.append("machine peak (dense %d^3 product): " % PEAK_N
                     + ", ".join(f"{dt} {g:.1f} GFLOP/s" for dt, g in peaks.items()))
    lines.append(f"{'model':<8}{'dtype':<10}{'engine':>10}{'loop':>10}{'ceiling':>10}{'eng/loop':>9}{'eng/ceil':>9}"
                 f"{'eng GF/s':>10}{'eng/peak':>9}{'ceil/peak':>10}   (networks/s)")
    for name, r in results.items():
        if not name.startswith("d") or not isinstance(r, dict):
            continue
        per = {dt: r[dt] for dt in BENCH_DTYPES if dt in r} or {"float32": dict(r, engine_gflops=float("nan"),
                                                                                 engine_of_peak=float("nan"),
                                                                                 ceiling_of_peak=float("nan"))}
        for dt, x in per.items():
            lines.append(
                f"{name:<8}{dt:<10}{x['engine']:>10.1f}{x['loop']:>10.1f}{x['ceiling']:>10.1f}"
                f"{x['engine'] / x['loop']:>9.2f}{x['engine'] / x['ceiling']:>9.2f}"
                f"{x['engine_gflops']:>10.1f}{x['engine_of_peak']:>9.2f}{x['ceiling_of_peak']:>10.2f}"
            )
    for name, r in results.items():
        if not name.startswith("d") or not isinstance(r, dict):
            continue
        for dt in BENCH_DTYPES:
            x = r.get(dt)
            if x and "engine_vs_float32" in x:
                lines.append(
                    f"{name} {dt} / float32, same run: engine {x['engine_vs_float32']:.2f}x, loop "
                    f"{x['loop_vs_float32']:.2f}x, ceiling {x['ceiling_vs_float32']:.2f}x; the machine's dense "
                    f"product {x['peak_vs_float32']:.2f}x (engine/product {x['engine_speedup_over_peak_speedup']:.2f}; the engine "
                    f"gets {x['engine_share_of_peak_gain']:.2f} of the gain); draws {r['float32']['draw_share']:.0%} of the float32 engine's time, "
                    f"{x['draw_share']:.0%} of the {dt} one's")
    g = results.get("gpt2_small")
    if g:
        lines.append(f"GPT-2 small, 12 layers, T = {g['seq_len']} ({g['nominal_gflop_per_network']:.1f} GFLOP nominal):")
        for dt in BENCH_DTYPES:
            if dt in g:
                x = g[dt]
                lines.append(f"  {dt:<9} {x['seconds_per_network']:.2f} s/network, {x['gflops']:.1f} GFLOP/s, "
                             f"{x['of_peak']:.2f} of peak")
    m = results.get("machine")
    if m:
        cpu = m.get("cpu", {})
        units = f" ({cpu.get('model') or 'CPU'}; bf16 matrix units: {cpu['bf16_units']})" if cpu else ""
        lines.append(f"machine: {m.get('cpu_capability', m.get('gpu', ''))}{units}, {m['threads']} threads, load average "
                     f"{m.get('load_average')} -> {m.get('load_average_end')} (ratios of one run are what count)")
    return "\n".join(lines)
