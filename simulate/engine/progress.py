"""`Progress`: the one progress bar of simulate (run, record, probe, train), on stderr.

On a terminal it is a tqdm bar (``[label] 40%|####  | 400/1000 samples [00:10<00:15, 40/s] note``),
redrawn in place. Where stderr is not a terminal (a log file, a CI job, a notebook's captured
stream) it degrades to a plain line every `LINE_EVERY_S` seconds and one at the end, so a
long run leaves a few readable lines instead of one line of carriage returns.

``enabled="auto"`` shows it only once a job has run for `AUTO_AFTER_S` seconds (short jobs
stay quiet); ``True`` from the start; ``False`` never. `log` writes a message on its own
line without breaking the bar.
"""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

AUTO_AFTER_S = 2.0    # "auto": quiet for short jobs
REFRESH_S = 0.5       # a terminal bar is redrawn at most this often
LINE_EVERY_S = 30.0   # not a terminal: one line this often


def _is_terminal(stream) -> bool:
    return bool(getattr(stream, "isatty", lambda: False)())


class Progress:
    """A progress bar for ``total`` units of work, ``done`` of them already done (a resume)."""

    def __init__(self, total: int, done: int = 0, enabled: str | bool = "auto", unit: str = "samples",
                 label: str = "simulate"):
        self.total, self.start_done, self.unit, self.label = total, done, unit, label
        self.t0 = time.perf_counter()
        self.last = -REFRESH_S
        self.last_line = None
        self.enabled = enabled
        self.bar: tqdm | None = None
        self.stream = sys.stderr

    def _rate_eta(self, done: int, now: float) -> tuple[float, float]:
        rate = (done - self.start_done) / max(now, 1e-9)
        return rate, ((self.total - done) / rate if rate > 0 else float("inf"))

    def update(self, done: int, note: str = "", force: bool = False) -> None:
        """Show ``done`` of the total (at most every `REFRESH_S`, except at the end or with ``force``)."""
        now = time.perf_counter() - self.t0
        if self.enabled is False or (self.enabled == "auto" and now < AUTO_AFTER_S):
            return
        finished = done >= self.total
        if not force and now - self.last < REFRESH_S and not finished:
            return
        self.last = now
        if _is_terminal(self.stream):
            if self.bar is None:
                self.bar = tqdm(total=self.total, initial=self.start_done, unit=f" {self.unit}", desc=f"[{self.label}]",
                                file=self.stream, dynamic_ncols=True, mininterval=REFRESH_S, leave=True)
            self.bar.n = min(done, self.total)
            self.bar.set_postfix_str(note, refresh=False)
            self.bar.refresh()
        elif force or finished or self.last_line is None or now - self.last_line >= LINE_EVERY_S:
            self.last_line = now
            rate, eta = self._rate_eta(done, now)
            percent = 100.0 * min(done, self.total) / max(self.total, 1)
            self.stream.write(f"[{self.label}] {done}/{self.total} {self.unit} ({percent:.0f}%)  {rate:.3g}/s  "
                              f"elapsed {now:.0f}s  eta {eta:.0f}s" + (f"  {note}" if note else "") + "\n")
            self.stream.flush()

    def log(self, message: str) -> None:
        """``message`` on a line of its own (shown whenever the bar is not disabled)."""
        if self.enabled is False:
            return
        if self.bar is not None:
            self.bar.write(f"[{self.label}] {message}", file=self.stream)
            return
        self.stream.write(f"[{self.label}] {message}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
