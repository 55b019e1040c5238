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
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16, "float16": torch.float16}
# The dtypes of the matrix units: only the matrix products run in them; the stream, the
# norms' statistics, the softmax, the Gram matrix and its root stay float32 (`stream_dtype`).
MATMUL_DTYPES = (torch.bfloat16, torch.float16)


def stream_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of everything but the matrix products: float32 for bfloat16/float16 runs."""
    return torch.float32 if dtype in MATMUL_DTYPES else dtype


def matmul_dtype(dtype: torch.dtype) -> torch.dtype | None:
    """The dtype the matrix products run in when it is not the stream's (None: the stream's)."""
    return dtype if dtype in MATMUL_DTYPES else None


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


def resolve_dtype(dtype: str | torch.dtype, device: torch.device | None = None) -> torch.dtype:
    """``"float32"``, ``"float64"``, ``"bfloat16"`` or ``"float16"`` (CUDA only: a CPU has no
    float16 matrix units, and float16's range is narrow) as a torch dtype."""
    if isinstance(dtype, torch.dtype):
        if dtype not in DTYPES.values():
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype}")
    elif dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    else:
        dtype = DTYPES[dtype]
    if dtype == torch.float16 and device is not None and device.type != "cuda":
        raise ValueError("dtype 'float16' is for CUDA devices; on a CPU use 'bfloat16' (or float32)")
    return dtype


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
