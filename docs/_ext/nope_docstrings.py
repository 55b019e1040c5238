"""Sphinx extension: read our numpy-like docstring sections as reStructuredText.

Our docstrings write parameters as they read in a terminal (``help()``)::

    Parameters
    ----------
    seed : sample ``i`` draws from a generator seeded by ``(seed, i)``: the same seed gives
        the same numbers for any ``chunk_size``.

that is ``name : description`` (not numpy's ``name : type``), continued by indented lines.
docutils reads such a block as a paragraph followed by an unexpected indentation. This hook
turns each section into a rubric and a definition list (``name`` as the term, the description
indented below), leaving every other line as written.
"""

from __future__ import annotations

import re

SECTIONS = {"Parameters", "Other Parameters", "Fields", "Attributes", "Returns", "Yields", "Raises", "Keys"}
_ENTRY = re.compile(r"^(?P<name>[^\s].*?)\s+:\s+(?P<text>.*)$|^(?P<bare>[A-Za-z_][\w, ]*)\s*:?\s*$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_header(lines: list[str], i: int) -> bool:
    nxt = lines[i + 1].strip() if i + 1 < len(lines) else ""
    return lines[i].strip() in SECTIONS and bool(nxt) and set(nxt) == {"-"}


def convert(lines: list[str]) -> list[str]:
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if _is_header(lines, i):
            base = _indent(line)
            out += [" " * base + f".. rubric:: {line.strip()}", ""]
            i += 2
            while i < len(lines):
                entry = lines[i]
                if not entry.strip():
                    out.append(entry)
                    i += 1
                    continue
                if _indent(entry) != base or _is_header(lines, i):
                    break
                m = _ENTRY.match(entry.strip())
                if m is None or (m.group("bare") is None and m.group("name") is None):
                    break
                name = m.group("name") or m.group("bare")
                text = m.group("text") or ""
                out.append(" " * base + f"**{name.strip()}**")
                if text:
                    out.append(" " * (base + 4) + text)
                i += 1
                while i < len(lines) and lines[i].strip() and _indent(lines[i]) > base:
                    out.append(" " * (base + 4) + lines[i].strip())
                    i += 1
            continue
        out.append(line)
        i += 1
    return out


def process(app, what, name, obj, options, lines):
    lines[:] = convert(lines)


def setup(app):
    app.connect("autodoc-process-docstring", process)
    return {"version": "1", "parallel_read_safe": True, "parallel_write_safe": True}
