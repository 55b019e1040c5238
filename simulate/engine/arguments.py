"""The arguments `run`, `activations` and the experiments share, validated at the boundary.

Each check raises a ValueError that names the argument and what it may be.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from theory import ModelSpec

from .positional import check_positional

MEASURES = ("annealed", "quenched")
METHODS = ("auto", "explicit", "gram")
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` is CUDA when present, else the CPU."""
    if isinstance(device, torch.device):
        device = str(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
        return torch.device(device)
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be float32 or float64, got {dtype}")
        return dtype
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def check_int(name: str, value: Any, minimum: int) -> int:
    """``value`` as an int when it is an integer >= ``minimum`` (a bool is not)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_run_arguments(spec: ModelSpec, samples: Any, seed: Any, batch: Any, measure: str, method: str) -> tuple[int, int, int]:
    """Validate the arguments `run` and `activations` share; returns (samples, seed, batch)."""
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"spec must be a theory.ModelSpec, got {type(spec).__name__}")
    if spec.is_symbolic:
        raise ValueError("spec has symbolic fields; simulate needs numbers (use a numeric ModelSpec)")
    check_positional(spec)
    samples = check_int("samples", samples, 1)
    seed = check_int("seed", seed, 0)
    batch = check_int("batch", batch, 1)
    if measure not in MEASURES:
        raise ValueError(f"measure must be 'annealed' or 'quenched', got {measure!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if measure == "quenched" and batch != 1:
        raise ValueError("batch applies to the annealed measure; quenched samples are sequences (batch=1)")
    return samples, seed, batch


def check_limits(memory_limit: Any, time_limit: Any) -> None:
    """``memory_limit`` (bytes) and ``time_limit`` (seconds): None or a positive number."""
    for name, value in (("memory_limit", memory_limit), ("time_limit", time_limit)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not value > 0:
            raise ValueError(f"{name} must be a positive number or None, got {value!r}")
