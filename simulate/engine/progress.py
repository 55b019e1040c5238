"""`Progress`: the one progress bar of simulate (run, record, probe, train), on stderr.

One line, rewritten in place: ``[label] |#####.....| done/total unit  rate/s  eta Ns  note``.
``enabled="auto"`` shows it only once a job has run for two seconds (short jobs stay
quiet); ``True`` from the start; ``False`` never. `log` writes a message on its own line
without breaking the bar.
"""

from __future__ import annotations

import sys
import time

WIDTH = 30
AUTO_AFTER_S = 2.0  # "auto": quiet for short jobs
REFRESH_S = 0.5


class Progress:
    """A one-line progress bar for ``total`` units of work, ``done`` of them already done."""

    def __init__(self, total: int, done: int = 0, enabled: str | bool = "auto", unit: str = "samples",
                 label: str = "simulate"):
        self.total, self.start_done, self.unit, self.label = total, done, unit, label
        self.t0 = time.perf_counter()
        self.last = -REFRESH_S
        self.enabled = enabled
        self.shown = False

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        """Show ``done`` of the total (at most every `REFRESH_S`, except at the end or with ``force``)."""
        now = time.perf_counter() - self.t0
        if self.enabled is False or (self.enabled == "auto" and now < AUTO_AFTER_S):
            return
        if not force and now - self.last < REFRESH_S and done < self.total:
            return
        self.last = now
        rate = (done - self.start_done) / max(now, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        fill = int(WIDTH * min(done, self.total) / max(self.total, 1))
        sys.stderr.write(
            f"\r[{self.label}] |{'#' * fill}{'.' * (WIDTH - fill)}| {done}/{self.total} {self.unit}"
            f"  {rate:.3g}/s  eta {eta:.0f}s {note}"
        )
        sys.stderr.flush()
        self.shown = True

    def log(self, message: str) -> None:
        """``message`` on a line of its own (shown whenever the bar is not disabled)."""
        if self.enabled is False:
            return
        if self.shown:
            sys.stderr.write("\n")
            self.shown = False
        sys.stderr.write(f"[{self.label}] {message}\n")
        sys.stderr.flush()

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.shown = False
