"""Host budgets shared by theory and simulate: the memory available now, and how to say sizes.

`available_memory` is what a size guard compares an estimate with: psutil's
``virtual_memory().available`` when psutil is installed, else ``MemAvailable`` of
``/proc/meminfo``, else ``sysconf``, capped by a cgroup limit when one is set.
`MEMORY_FRACTION` of it is the default limit, `TIME_LIMIT_S` the default limit on
estimated work; both are defaults (a request may pass ``force`` or its own limits),
not measurements.
"""

from __future__ import annotations

import math
import os

MEMORY_FRACTION = 0.8
TIME_LIMIT_S = 86400.0  # one day of estimated work


def resolve_memory_limit(memory_limit: float | None) -> tuple[float | None, str]:
    """A caller's ``memory_limit`` (bytes), else `memory_limit_default`; with a phrase naming its source."""
    if memory_limit is not None:
        return float(memory_limit), "the memory_limit given"
    return memory_limit_default()


def memory_limit_default() -> tuple[float | None, str]:
    """`MEMORY_FRACTION` of the available memory, and a phrase saying where it comes from."""
    available, source = available_memory()
    if available is None:
        return None, source
    return MEMORY_FRACTION * available, (
        f"{MEMORY_FRACTION:.0%} of the {format_bytes(available)} of RAM available, {source}")


# ====================================================================== available memory
def _cgroup_limit() -> float | None:
    """Bytes a cgroup (v2 or v1) still lets this process take, or None when unlimited/unknown."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as fh:
                text = fh.read().strip()
            if text == "max":
                return None
            limit = float(text)
            if limit >= 2.0**60:  # v1's "unlimited"
                return None
            try:
                with open(usage_file) as fh:
                    limit -= float(fh.read().strip())
            except (OSError, ValueError):
                pass
            return max(limit, 0.0)
        except (OSError, ValueError):
            continue
    return None


def available_memory() -> tuple[float | None, str]:
    """Host memory available now (bytes) and where the figure comes from; (None, why) if unknown."""
    value, source = None, ""
    try:
        import psutil  # optional

        value, source = float(psutil.virtual_memory().available), "psutil"
    except Exception:  # noqa: BLE001 - not installed, or no answer: try the next source
        pass
    if value is None:
        try:
            with open("/proc/meminfo") as fh:
                for line in fh:
                    if line.startswith("MemAvailable:"):
                        value, source = float(line.split()[1]) * 1024, "/proc/meminfo"
                        break
        except (OSError, ValueError, IndexError):
            pass
    if value is None:
        try:
            value = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
            source = "sysconf"
        except (ValueError, OSError, AttributeError):
            return None, "unknown (no psutil, /proc/meminfo or sysconf)"
    cgroup = _cgroup_limit()
    if cgroup is not None and cgroup < value:
        value, source = cgroup, "the cgroup limit"
    return value, source


def format_bytes(n: float) -> str:
    if not math.isfinite(n):
        return "an unbounded amount of memory"
    if n >= 1e18:
        return f"{n:.1e} bytes"
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} bytes"


def format_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "forever"
    for unit, size in (("years", 3.15e7), ("days", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if s >= size:
            return f"{s / size:.3g} {unit[:-1] if unit.endswith('s') and round(s / size, 2) == 1 else unit}"
    return f"{s:.2g} s"


def format_count(n) -> str:
    """An integer as written, or in e-notation past 10^15 (a 300-digit n_layers stays one short line)."""
    if abs(n) < 10**15:
        return str(n)
    digits = len(str(abs(int(n)))) - 1
    return f"{str(abs(int(n)))[0]}e+{digits}" if n > 0 else f"-{str(abs(int(n)))[0]}e+{digits}"
