"""Compact text and HTML tables for results in a terminal and in Jupyter (``_repr_html_``).

A renderer: it formats numbers it is given and computes nothing. Long position axes are
elided to their first and last few entries (`elide`), so a result over 1024 positions
prints as a screenful, not a wall of numbers; the full arrays stay on the objects.
"""

from __future__ import annotations

import html
from typing import Sequence

HEAD, TAIL = 3, 2     # positions shown at each end of an elided axis
MAX_ROWS = 24         # rows shown before "... N more"
ELLIPSIS = "…"


def elide(items: Sequence, head: int = HEAD, tail: int = TAIL) -> list:
    """``items`` itself when short, else its first ``head``, `ELLIPSIS`, its last ``tail``."""
    items = list(items)
    return items if len(items) <= head + tail + 1 else items[:head] + [ELLIPSIS] + items[-tail:]


def number(value) -> str:
    """Four significant digits (a table to read; the arrays keep every digit); None/NaN as a dash,
    text as it is."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    value = float(value)
    return "–" if value != value else f"{value:.4g}"


def _rows(rows: Sequence[Sequence]) -> tuple[list[list[str]], int]:
    rows = [[number(c) for c in row] for row in rows]
    hidden = max(0, len(rows) - MAX_ROWS)
    return (rows[:MAX_ROWS - 1] + [rows[-1]] if hidden else rows), hidden


def text_table(columns: Sequence[str], rows: Sequence[Sequence]) -> str:
    """Columns aligned with spaces; at most `MAX_ROWS` rows (the rest counted)."""
    body, hidden = _rows(rows)
    widths = [max(len(str(c)), *(len(r[i]) for r in body)) if body else len(str(c)) for i, c in enumerate(columns)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(columns, widths)).rstrip()]
    for k, row in enumerate(body):
        if hidden and k == len(body) - 1:
            lines.append(f"{ELLIPSIS} {hidden} more rows")
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    return "\n".join(lines)


def html_table(columns: Sequence[str], rows: Sequence[Sequence], caption: str = "") -> str:
    """The same table as HTML (escaped), for Jupyter."""
    body, hidden = _rows(rows)
    out = ["<table>"]
    if caption:
        out.append(f"<caption style='text-align:left'>{html.escape(caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{html.escape(str(c))}</th>" for c in columns) + "</tr></thead><tbody>")
    for k, row in enumerate(body):
        if hidden and k == len(body) - 1:
            out.append(f"<tr><td colspan='{len(columns)}'>{ELLIPSIS} {hidden} more rows</td></tr>")
        out.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def pandas_module():
    """pandas, for the results' ``to_dataframe`` (optional: it comes with the sweep extra, via xarray)."""
    try:  # optional dependency: only to_dataframe needs it
        import pandas
    except ImportError:
        raise ImportError('to_dataframe needs pandas: pip install pandas (or pip install -e ".[sweep]")') from None
    return pandas


def spec_summary(spec) -> str:
    """The fields of a spec that differ from GPT-2 small's defaults, as ``name=value``."""
    fields = spec.to_dict()
    defaults = type(spec)().to_dict()
    changed = [f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in fields.items() if defaults.get(k) != v]
    return ", ".join(changed) if changed else "GPT-2 small defaults"


__all__ = ["elide", "number", "text_table", "html_table", "spec_summary", "pandas_module", "ELLIPSIS"]
