"""The one validator of query positions, used by every package and command line.

Positions are 1-based query positions m (1 is the first token; row m of the causal
attention averages m keys). Every entry point -- `theory.predict`, ``theory predict
--positions``, `simulate.run`, ``simulate run --positions``, verify -- goes through
`check_positions`, so a bad value gets the same one-line message everywhere.

>>> check_positions([8, 1, 2, 2], 16).tolist()
[1, 2, 8]
>>> check_positions("1,4-6", 16).tolist()
[1, 4, 5, 6]
>>> check_positions(None, 4).tolist()
[1, 2, 3, 4]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._budget import format_count


def _from_text(text: str, name: str) -> list[int]:
    """``"1,2,8"`` or ranges ``"1-64"`` (inclusive), comma-separated."""
    values: list[int] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        lo, sep, hi = item.partition("-")
        try:
            if sep:
                values.extend(range(int(lo), int(hi) + 1))
            else:
                values.append(int(item))
        except ValueError:
            raise ValueError(f"{name} must be integers >= 1 separated by commas (ranges as 1-64), "
                             f"got {text[:60]!r}") from None
    if not values:
        raise ValueError(f"{name} must be a comma-separated list of integers >= 1, got {text[:60]!r}")
    return values


def check_positions(positions: Any, seq_len: Any, *, name: str = "positions") -> np.ndarray:
    """Sorted unique 1-based positions (int64); ``None`` is every position 1..seq_len.

    ``positions``: an iterable of integers, or text (``"1,2,8"``, ``"1-64"``). ValueError
    naming ``name`` when a value is not an integer or lies outside 1..seq_len
    (``seq_len`` may be symbolic: then only ``>= 1`` is checked).
    """
    bounded = isinstance(seq_len, (int, np.integer)) and not isinstance(seq_len, bool)
    if positions is None:
        if not bounded:
            raise ValueError(f"{name}: give them explicitly when seq_len is symbolic")
        return np.arange(1, int(seq_len) + 1, dtype=np.int64)
    if isinstance(positions, str):
        values = _from_text(positions, name)
    else:
        try:
            raw = list(positions) if not isinstance(positions, (int, np.integer)) else [positions]
        except TypeError:
            raise ValueError(f"{name} must be a list of integers >= 1, got {positions!r}") from None
        values = []
        for p in raw:
            if isinstance(p, bool) or not isinstance(p, (int, np.integer, float, np.floating)) or p != p \
                    or float(p) != int(p):
                raise ValueError(f"{name} must be integers >= 1, got {str(raw[:8])[:80]}")
            values.append(int(p))
    if not values:
        raise ValueError(f"{name} must not be empty")
    bad = [m for m in values if m < 1 or (bounded and m > int(seq_len))]
    if bad:
        limit = f"1..seq_len ({format_count(int(seq_len))})" if bounded else ">= 1"
        raise ValueError(f"{name} must lie in {limit} (1 is the first token); got "
                         f"{', '.join(map(str, bad[:5]))}{' ...' if len(bad) > 5 else ''}")
    return np.array(sorted(set(values)), dtype=np.int64)


__all__ = ["check_positions"]
