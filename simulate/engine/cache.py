"""`activations`: raw tap tensors of a few samples, TransformerLens-style cache."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Iterator

import torch

from theory import ModelSpec
from theory.taps import TapFilter, select_taps, tap_name

from .arguments import check_run_arguments, resolve_device, resolve_dtype, stream_dtype
from .budget import check_run_size
from .sampler import Sampler


class ActivationCache(Mapping):
    """Tap tensors indexed by full name, ``(name, layer)`` or ``name, layer``.

    Shapes: (S, B, T, ...) as `simulate.forward` documents, S networks (annealed) with B
    sequences each, or one network (quenched, S = 1) with B = samples sequences.
    """

    def __init__(self, tensors: dict[str, torch.Tensor], spec: ModelSpec, meta: dict[str, Any]):
        self._tensors = tensors
        self.spec = spec
        self.meta = meta

    def __getitem__(self, key: Any) -> torch.Tensor:
        name = tap_name(key) if isinstance(key, tuple) else key
        if name not in self._tensors:
            raise KeyError(f"tap {name!r} was not recorded; recorded: {', '.join(self._tensors)}")
        return self._tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)


def activations(
    spec: ModelSpec,
    taps: TapFilter = None,
    samples: int = 4,
    seed: int = 0,
    *,
    measure: str = "annealed",
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "float32",
    method: str = "auto",
    batch: int = 1,
    force: bool = False,
) -> ActivationCache:
    """The taps of samples ``0 .. samples-1``: the very numbers `simulate.run` summarises
    for the same seed, measure, method and dtype (each sample has its own generator).

    >>> from theory import ModelSpec
    >>> spec = ModelSpec(d_model=32, n_heads=2, n_layers=1, seq_len=8, attn_only=True)
    >>> cache = activations(spec, taps=[("pattern", 0)], samples=3, seed=1, device="cpu")
    >>> tuple(cache["pattern", 0].shape)
    (3, 1, 2, 8, 8)
    """
    samples, seed, batch = check_run_arguments(spec, samples, seed, batch, measure, method)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    # the size guard of `run` (one chunk of every sample; ``force=True`` skips its limits)
    check_run_size(
        spec, taps=taps, samples=samples, batch=batch, chunk_size=samples, positions=None, reservoir=0,
        measure=measure, method=method, dtype_bytes=torch.finfo(stream_dtype(dt)).bits // 8, memory_budget=0, device=dev,
        force=bool(force),
    )
    tap_list = select_taps(taps, spec.n_layers, spec)
    with Sampler(spec, seed=seed, measure=measure, method=method, batch=batch, device=dev, dtype=dt) as sampler:
        cache = sampler.taps(0, samples, tap_list)
    meta = {"seed": seed, "measure": measure, "method": method, "device": str(dev), "dtype": str(dt).replace("torch.", "")}
    return ActivationCache({t: cache[t] for t in tap_list}, spec, meta)
