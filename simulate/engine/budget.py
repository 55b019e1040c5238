"""Size guards: the memory and time a request needs, estimated before anything is allocated.

`simulate.run` and `simulate.activations` call `check_run_size` first (the probe
experiment its own estimate, through `refuse_sizes`): a spec whose estimate does not fit is refused with one `ValueError` that names the
field most responsible, the estimate and the limit, instead of asking torch for 224 GB,
overflowing an index, or looping over 10^9 layers. The estimates are formulas of the
sizes (floats: a value of 10^300 gives inf, never an exception), close to a factor of two,
and cost nothing.

Limits (both overridable with ``force=True`` / ``--force``, or explicit ``memory_limit`` /
``time_limit`` arguments):

* **memory**: `MEMORY_FRACTION` of the memory available now: on the CPU, psutil's
  ``virtual_memory().available`` when psutil is installed, else ``MemAvailable`` of
  ``/proc/meminfo``, else ``sysconf(SC_AVPHYS_PAGES * SC_PAGE_SIZE)``, capped by a cgroup
  ``memory.max`` when one is set; on a GPU, the free device memory
  (``torch.cuda.mem_get_info``) for the device-side part;
* **time**: `TIME_LIMIT_S` (one day) of estimated work, at assumed throughputs
  (`RATES`): floating-point operations per second, normals drawn per second, and a fixed
  cost per kernel launch (which is what a 10^9-layer network of width 8 spends).

A request that no machine could hold (more than 2^63 bytes, or a tensor with more than
2^63 - 1 elements, beyond torch's indices) is refused even with ``force``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch

from theory._budget import MEMORY_FRACTION, TIME_LIMIT_S, available_memory, format_bytes, format_seconds  # noqa: F401 (re-exported)
from theory.taps import block_taps, parse_tap, tap_name

from .stats import BLOCK, MASKED_TAPS
HARD_BYTES = 2.0**63
# assumed throughputs: (flop/s, normals/s, seconds per kernel launch)
RATES = {"cpu": (2e10, 1.5e8, 1e-5), "cuda": (2e13, 2e10, 2e-5)}
JSON_BYTES_PER_STAT = 2000.0  # one (tap, position) entry of a result as Python objects and JSON text
MAX_CHUNK = 256  # units per chunk at most


def size_value(value: Any) -> float:
    """A size as a float (None: 0); beyond float range it is inf (never OverflowError)."""
    if value is None:
        return 0.0
    try:
        return float(value)
    except OverflowError:
        return math.inf


def nan_to_inf(x: float) -> float:
    """An estimate that overflowed into NaN (inf - inf, 0 * inf) is infinite."""
    return math.inf if math.isnan(x) else x


def device_memory(device: Any) -> tuple[float | None, str]:
    """Free memory of a CUDA device (bytes) and the source; (None, why) when unknown."""
    try:
        free, _ = torch.cuda.mem_get_info(device)
        return float(free), "torch.cuda.mem_get_info"
    except Exception:  # noqa: BLE001
        return None, "unknown"


def _format_value(value: Any) -> str:
    text = repr(value)
    if len(text) <= 24:
        return text
    if isinstance(value, int):
        return f"~10^{len(str(abs(value))) - 1}"
    return f"{size_value(value):.3g}"


# ====================================================================== the run estimate
@dataclass(frozen=True)
class RunSizes:
    """The numbers an estimate of `simulate.run` needs (floats; see `run_sizes`)."""

    d_model: float
    n_heads: float
    n_layers: float
    seq_len: float
    mlp_ratio: float
    vocab_size: float  # 0: Gaussian inputs
    attn_only: bool
    learned: bool
    samples: float
    batch: float
    chunk_size: float  # 0: the default, from memory_budget
    positions: float
    reservoir: float
    quenched: bool
    method: str
    item: float  # bytes per element (4 or 8)
    taps: tuple  # ((suffix or None, count, layer or -1), ...) None: the widest tap
    memory_budget: float
    qkv_ratio: float = 3.0  # width of the fused Q/K/V projection / d_model ((H + 2 H_kv) / H)
    gated: bool = False  # SwiGLU: the MLP's first projection is gate and up (2 d_mlp wide)


def tap_groups(taps: Any, n_layers: float, spec_or_attn_only: Any) -> tuple:
    """``taps`` (as `simulate.run` takes it) as ``((suffix, count, last layer), ...)`` without
    listing a network's taps (that is O(n_layers)); a callable counts as every tap of the
    spec's block (`theory.taps.block_taps`: a SwiGLU block adds ``mlp.hook_pre_linear``)."""
    if taps is None or callable(taps):
        return tuple((s, n_layers, n_layers - 1) for s in block_taps(spec_or_attn_only))
    items = [taps] if isinstance(taps, (str, tuple)) else taps
    try:
        items = list(items)
    except TypeError:
        return ((None, 1.0, n_layers - 1),)
    groups = []
    for t in items:
        try:
            suffix, layer = parse_tap(tap_name(t) if isinstance(t, tuple) else t)
        except (ValueError, TypeError, KeyError):
            suffix, layer = None, n_layers - 1  # select_taps names the problem later
        groups.append((suffix, 1.0, float(layer)))
    return tuple(groups) or ((None, 1.0, n_layers - 1),)


def run_sizes(spec, *, taps, samples, batch, chunk_size, positions, reservoir, measure, method, dtype_bytes,
              memory_budget) -> RunSizes:
    if positions is None:
        n_pos = size_value(spec.seq_len)
    else:
        try:
            n_pos = float(len(positions))
        except TypeError:
            n_pos = size_value(spec.seq_len)
        n_pos = min(n_pos, size_value(spec.seq_len))
    return RunSizes(
        d_model=size_value(spec.d_model), n_heads=size_value(spec.n_heads), n_layers=size_value(spec.n_layers),
        seq_len=size_value(spec.seq_len),
        mlp_ratio=size_value(spec.mlp_ratio) if spec.d_mlp is None else size_value(spec.d_mlp) / size_value(spec.d_model),
        vocab_size=size_value(spec.vocab_size),
        attn_only=bool(spec.attn_only), learned=spec.positional == "learned", samples=size_value(samples),
        batch=size_value(batch), chunk_size=size_value(chunk_size), positions=n_pos, reservoir=size_value(reservoir),
        quenched=measure == "quenched", method=method, item=float(dtype_bytes),
        taps=tap_groups(taps, size_value(spec.n_layers), spec), memory_budget=size_value(memory_budget),
        qkv_ratio=(size_value(spec.n_heads) + 2 * size_value(spec.kv_heads)) / size_value(spec.n_heads),
        gated=spec.mlp == "swiglu",
    )


def layer_projections(z: RunSizes) -> list[tuple[float, float]]:
    """(d_out, d_in) of each projection of a layer (the attention's, then the MLP's)."""
    d, dmlp = z.d_model, z.mlp_ratio * z.d_model
    kinds = [(z.qkv_ratio * z.d_model, d), (d, d)]  # qkv ((n_heads + 2 n_kv_heads) d_head), o
    if not z.attn_only:
        kinds += [((2 if z.gated else 1) * dmlp, d), (d, dmlp)]  # in (SwiGLU: gate and up), out
    return kinds


def _gram(z: RunSizes, d_in: float, rows: float) -> bool:
    if z.quenched or z.method == "explicit":
        return False
    return z.method == "gram" or rows < d_in


def _tap_elements(z: RunSizes, suffix: str | None) -> float:
    """Elements of one tap of one unit."""
    R = z.batch * z.seq_len
    if suffix in MASKED_TAPS:
        return z.batch * z.n_heads * z.seq_len * z.seq_len
    if suffix in ("mlp.hook_pre", "mlp.hook_pre_linear", "mlp.hook_post"):
        return R * z.mlp_ratio * z.d_model
    if suffix is None:  # unknown: the widest
        return max(R * max(z.mlp_ratio, 1.0) * z.d_model, z.batch * z.n_heads * z.seq_len * z.seq_len)
    return R * z.d_model


def plan_elements(z: RunSizes) -> float:
    """Normals one unit draws (`simulate.engine.draw.sample_plan`'s total, without building it)."""
    R = z.batch * z.seq_len
    if z.quenched:
        return 0.0 if z.vocab_size else R * z.d_model
    per_layer = sum(R * d_out if _gram(z, d_in, R) else d_out * d_in for d_out, d_in in layer_projections(z))
    total = R * z.d_model + z.n_layers * per_layer
    if z.learned:
        total += z.seq_len * z.d_model
    return nan_to_inf(total)


def unit_bytes(z: RunSizes) -> float:
    """The working memory one unit adds to a chunk: the plan's normals, one layer's live
    tensors, the statistics' temporaries (`default_chunk` sizes `run`'s chunks by it)."""
    R, item = z.batch * z.seq_len, z.item
    wide = max(d_out for d_out, _ in layer_projections(z))
    act = (4 * R * wide + 6 * R * z.d_model + 2 * R * R) * item
    if any(s in MASKED_TAPS for s, _, _ in z.taps):
        act += 6 * z.n_heads * R * z.seq_len * item
    rows = sum(c * (2 if s == "attn.hook_pattern" else 1) for s, c, _ in z.taps)
    stats = 3 * R * max(wide, z.d_model) * item * max(1.0, rows)
    return nan_to_inf(plan_elements(z) * item + act + stats)


def default_chunk(z: RunSizes) -> float:
    """`simulate.run`'s chunk: as given, else as many units as ``memory_budget`` allows (<= `MAX_CHUNK`)."""
    if z.chunk_size:
        return z.chunk_size
    per = unit_bytes(z)
    if not math.isfinite(per):
        return 1.0
    return float(max(1, min(MAX_CHUNK, int(z.memory_budget // max(per, 1)), z.samples)))


def run_estimate(z: RunSizes) -> dict[str, float]:
    """Bytes (device and host), seconds and FLOPs of a run; inf where a size overflows."""
    c = min(default_chunk(z), max(z.samples, 1.0))
    R, T, B, d, H, item = z.batch * z.seq_len, z.seq_len, z.batch, z.d_model, z.n_heads, z.item
    dmlp = z.mlp_ratio * d
    rows = sum(cnt * (2 if s == "attn.hook_pattern" else 1) for s, cnt, _ in z.taps)  # statistic rows
    ntaps = sum(cnt for _, cnt, _ in z.taps)
    last = max((layer for _, _, layer in z.taps), default=z.n_layers - 1)
    layers_run = min(z.n_layers, last + 1)  # the forward stops after the last tap
    P = z.positions
    need_pattern = any(s in MASKED_TAPS for s, _, _ in z.taps)
    gram_any = any(_gram(z, d_in, R) for _, d_in in layer_projections(z))
    # ---- device: the chunk's buffer, the frozen network, one layer's live tensors, the
    # recorded taps (kept until the forward returns) and the statistics' temporaries
    plan = plan_elements(z)
    device = c * plan * item
    if z.vocab_size:
        device += c * R * 8 + c * R * R * 2  # ids and their first-occurrence comparison
    if z.quenched:
        device += z.n_layers * sum(o * i for o, i in layer_projections(z)) * item
        if z.vocab_size:
            device += 2 * z.vocab_size * d * item
        if z.learned:
            device += T * d * item
    wide = max(d_out for d_out, _ in layer_projections(z))
    live = (4 * R * wide + 6 * R * d + 2 * R * R) * item
    if gram_any:
        live += 4 * R * R * 8  # the float64 eigen-decomposition fallback
    if need_pattern:
        live += 6 * H * R * T * item
    recorded = sum(cnt * _tap_elements(z, s) for s, cnt, _ in z.taps) * item
    widest = max((_tap_elements(z, s) for s, _, _ in z.taps), default=0.0)
    device += c * (live + recorded + 3 * widest * item)
    device += T * T * (1 + (H * item if need_pattern else 0))  # causal mask, ALiBi bias
    # ---- host: per-unit moments of a chunk, the accumulator (pending block, reservoirs),
    # the finished statistics and the JSON of a saved result
    host = 4 * c * rows * P * 8 * 2
    host += rows * P * 8 * (13 + 4 * (BLOCK + c) + 2 * z.reservoir)
    host += rows * P * 8 * 30 + ntaps * P * JSON_BYTES_PER_STAT
    # ---- time
    flops = 0.0
    for d_out, d_in in layer_projections(z):
        if _gram(z, d_in, R):
            flops += 1.5 * R * R * d_in + R**3 / 3 + 1.5 * R * R * d_out
        else:
            flops += 2 * R * d_in * d_out
    flops += 4 * B * T * T * d + 5 * B * H * T * T + 20 * R * d + 10 * (0 if z.attn_only else R * dmlp)
    flops *= layers_run
    flops += 10 * recorded / item  # moments of the recorded taps
    flops *= z.samples
    normals = z.samples * plan
    if z.quenched:
        normals += z.n_layers * sum(o * i for o, i in layer_projections(z)) + (z.vocab_size * d if z.vocab_size else 0.0)
    chunks = math.ceil(z.samples / c) if math.isfinite(z.samples / c) else math.inf
    launches = chunks * (30 * layers_run + 20 * ntaps) + 3 * z.samples
    host_ops = chunks * 4 * c * rows * P * 20 + (z.samples / BLOCK) * rows * P * 200
    largest = max(plan, R * wide, B * H * T * T if need_pattern else 0.0, rows * P * (BLOCK + c))
    return {"device": nan_to_inf(device), "host": nan_to_inf(host), "flops": nan_to_inf(flops), "normals": nan_to_inf(normals),
            "launches": nan_to_inf(launches), "host_ops": nan_to_inf(host_ops), "largest_tensor": nan_to_inf(largest * c)}


def _seconds(est: dict, device_type: str) -> float:
    flop_rate, normal_rate, launch = RATES.get(device_type, RATES["cpu"])
    return nan_to_inf(est["flops"] / flop_rate + est["normals"] / normal_rate + est["launches"] * launch
                  + est["host_ops"] / 1e9)


# the fields an over-large estimate is blamed on, with the small value each is compared at
_RUN_CULPRITS = (("d_model", 8.0), ("n_layers", 1.0), ("seq_len", 8.0), ("vocab_size", 0.0), ("n_heads", 1.0),
                 ("mlp_ratio", 1.0), ("samples", 1.0), ("batch", 1.0), ("chunk_size", 1.0), ("reservoir", 0.0),
                 ("positions", 1.0))


def _culprit(z: RunSizes, measure, candidates, values: dict) -> str:
    """The field whose reduction to a small value shrinks ``measure(z)`` the most, as ``field = value``."""
    full = measure(z)
    best, best_ratio = None, 1.0
    for name, small in candidates:
        current = getattr(z, name)
        if not current or current <= small:
            continue
        changes = {name: small}
        if name == "d_model":
            changes["n_heads"] = 1.0
        if name == "n_layers":  # the taps of the removed layers go too
            changes["taps"] = tuple((s, min(cnt, 1.0), min(layer, 0.0)) for s, cnt, layer in z.taps)
        if name == "seq_len":
            changes["positions"] = min(z.positions, small)
        reduced = measure(replace(z, **changes))
        ratio = full / reduced if reduced > 0 else math.inf
        if math.isnan(ratio):
            ratio = 1.0
        if ratio > best_ratio:
            best, best_ratio = name, ratio
    if best is None:
        return "this run"
    return f"{best} = {_format_value(values.get(best, getattr(z, best)))}"


def _memory_limits(device_type: str, device: Any, memory_limit: float | None) -> list[tuple[str, float, str]]:
    """[(which part, limit bytes, how the limit was found)]: one for a CPU, two for a GPU."""
    if memory_limit is not None:
        return [("all", float(memory_limit), "memory_limit")]
    host, source = available_memory()
    out = []
    if device_type == "cuda":
        free, dsource = device_memory(device)
        if free is not None:
            out.append(("device", MEMORY_FRACTION * free,
                        f"{MEMORY_FRACTION:.0%} of the GPU's {format_bytes(free)} free, {dsource}"))
        if host is not None:
            out.append(("host", MEMORY_FRACTION * host,
                        f"{MEMORY_FRACTION:.0%} of the {format_bytes(host)} of RAM available, {source}"))
    elif host is not None:
        out.append(("all", MEMORY_FRACTION * host,
                    f"{MEMORY_FRACTION:.0%} of the {format_bytes(host)} of RAM available, {source}"))
    return out


def refuse_sizes(z: RunSizes, est_of, culprits, values: dict, *, device_type: str, device: Any, force: bool,
                  memory_limit: float | None, time_limit: float | None, what: str) -> dict:
    """Compare the estimate ``est_of(z)`` with the limits; raise the one-line ValueError
    naming the field most responsible (among ``culprits``), or return the figures."""
    est = est_of(z)
    total = est["device"] + est["host"]
    both = lambda w: w["device"] + w["host"]  # noqa: E731
    if total >= HARD_BYTES or est["largest_tensor"] >= HARD_BYTES / 8:
        blame = _culprit(z, lambda w: both(est_of(w)), culprits, values)
        raise ValueError(f"{blame}: a {what} would need {format_bytes(total)} (beyond 2^63 bytes or tensor "
                         "elements, more than any machine or torch index holds); use a smaller size")
    seconds = _seconds(est, device_type)
    if force:
        return {"bytes": total, "seconds": seconds}
    for part, limit, source in _memory_limits(device_type, device, memory_limit):
        need = total if part == "all" else est[part]
        if need > limit:
            blame = _culprit(z, lambda w: both(est_of(w)) if part == "all" else est_of(w)[part], culprits, values)
            where = "" if part == "all" else f" of {part} memory"
            raise ValueError(f"{blame}: a {what} needs about {format_bytes(need)}{where}, limit {format_bytes(limit)} "
                             f"({source}); pass --force (force=True) to try anyway")
    limit_s = TIME_LIMIT_S if time_limit is None else float(time_limit)
    if seconds > limit_s:
        flop_rate, normal_rate, launch = RATES.get(device_type, RATES["cpu"])
        blame = _culprit(z, lambda w: _seconds(est_of(w), device_type), culprits, values)
        raise ValueError(
            f"{blame}: a {what} needs about {est['flops']:.2g} flop, {est['normals']:.2g} normals and "
            f"{est['launches']:.2g} kernel launches, ~{format_seconds(seconds)} at an assumed {flop_rate:.0e} flop/s, "
            f"{normal_rate:.1e} normals/s and {launch * 1e6:.0f} us a launch ({device_type}); limit "
            f"{format_seconds(limit_s)}; pass --force (force=True) to try anyway"
        )
    return {"bytes": total, "seconds": seconds}


def check_run_size(spec, *, taps, samples, batch, chunk_size, positions, reservoir, measure, method, dtype_bytes,
                   memory_budget, device, force=False, memory_limit=None, time_limit=None) -> dict:
    """Refuse (ValueError) a `simulate.run` whose estimated memory or time exceeds the limits.

    Returns ``{"bytes", "seconds"}``, the estimate. ``force`` skips the limits (not the
    hard ceiling of 2^63 bytes); ``memory_limit`` (bytes) and ``time_limit`` (seconds)
    replace the defaults.
    """
    z = run_sizes(spec, taps=taps, samples=samples, batch=batch, chunk_size=chunk_size, positions=positions,
                  reservoir=reservoir, measure=measure, method=method, dtype_bytes=dtype_bytes,
                  memory_budget=memory_budget)
    values = {"d_model": spec.d_model, "n_layers": spec.n_layers, "seq_len": spec.seq_len, "n_heads": spec.n_heads,
              "vocab_size": spec.vocab_size, "mlp_ratio": spec.mlp_ratio, "samples": samples, "batch": batch,
              "chunk_size": chunk_size, "reservoir": reservoir, "positions": f"{z.positions:.0f} positions"}
    return refuse_sizes(z, run_estimate, _RUN_CULPRITS, values, device_type=getattr(device, "type", str(device)), device=device,
                         force=force, memory_limit=memory_limit, time_limit=time_limit, what="run")
