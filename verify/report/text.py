"""How the report writes taps and numbers (shared by report.md, the console and LaTeX)."""

from __future__ import annotations

import math

from ..checks.theory import suffix_of as short  # a tap without its layer: ``attn.hook_z``


def label(report, tap: str) -> str:
    """A tap as tables show it: without ``blocks.0.`` for one layer, in full otherwise."""
    return short(tap) if report.layers <= 1 else tap


def pct(x) -> str:
    """A signed percentage, ``+1.23%``; ``n/a`` for None or non-finite."""
    return "n/a" if x is None or not math.isfinite(x) else f"{100 * x:+.2f}%"


def g(x, digits: int = 4) -> str:
    """``x`` to ``digits`` significant digits; ``n/a`` for None or non-finite floats."""
    return "n/a" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}g}"


def has_depth(report) -> bool:
    """Whether the report covers more than layer 0's attention (more layers, or an MLP)."""
    return report.layers > 1 or not report.spec.attn_only


__all__ = ["short", "label", "pct", "g", "has_depth"]
