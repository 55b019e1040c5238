"""The progress line of a sweep: finished / running / queued / failed / invalid, and an ETA.

On a terminal the line is redrawn in place (at most a few times a second); elsewhere (a
log file, CI) a line is printed at most every ``every`` seconds and at the end. The ETA
is the points left times the mean time between points finished in this run.
"""

from __future__ import annotations

import sys
import time


def _clock(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """Counts of a sweep's points and a progress line on ``stream`` (stderr by default)."""

    def __init__(self, total: int, *, finished: int = 0, invalid: int = 0, slots: int = 1, stream=None,
                 enabled: bool = True, every: float = 10.0):
        self.total = total
        self.finished = finished  # done before this run started count too
        self.invalid = invalid
        self.failed = 0
        self.in_flight = 0
        self.slots = max(1, slots)
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.every = every
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.done_here = 0
        self._last = -1e9

    @property
    def running(self) -> int:
        return min(self.in_flight, self.slots)

    @property
    def queued(self) -> int:
        return self.in_flight - self.running

    def eta(self) -> float:
        """Seconds left at this run's rate so far (NaN before the first point)."""
        if self.done_here == 0:
            return float("nan")
        rate = (time.perf_counter() - self.t0) / self.done_here
        return rate * self.in_flight

    def line(self) -> str:
        bar_width = 24
        settled = self.finished + self.failed + self.invalid
        filled = int(bar_width * settled / self.total) if self.total else bar_width
        return (f"sweep [{'#' * filled}{'.' * (bar_width - filled)}] {settled}/{self.total} points: "
                f"{self.finished} finished, {self.running} running, {self.queued} queued, {self.failed} failed, "
                f"{self.invalid} invalid; elapsed {_clock(time.perf_counter() - self.t0)}, ETA {_clock(self.eta())}")

    def show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < (0.25 if self.tty else self.every):
            return
        self._last = now
        if self.tty:
            self.stream.write("\r" + self.line() + "\x1b[K")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.show(force=True)
            if self.tty:
                self.stream.write("\n")
                self.stream.flush()


__all__ = ["Progress"]
