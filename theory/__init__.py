"""theory: the NoPE transformer and its mathematics (sympy, scipy; never torch)."""

from .spec import ModelSpec
from . import taps

__all__ = ["ModelSpec", "taps"]
