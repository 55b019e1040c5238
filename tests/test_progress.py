"""simulate's progress bar (issue 21, item 5): a tqdm bar on a terminal, a few plain lines
elsewhere (a log file gets one line per `LINE_EVERY_S`, not one line of carriage returns)."""

from __future__ import annotations

import io

from simulate.engine import progress as progress_module
from simulate.engine.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run(stream, monkeypatch, steps: int = 1000, seconds_per_step: float = 0.1) -> str:
    clock = {"t": 0.0}
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock["t"])
    bar = Progress(steps, enabled=True, unit="samples", label="test")
    bar.stream = stream
    for done in range(1, steps + 1):
        clock["t"] += seconds_per_step
        bar.update(done, note="chunk")
    bar.log("a message")
    bar.close()
    return stream.getvalue()


def test_not_a_terminal_gives_periodic_lines(monkeypatch):
    text = _run(io.StringIO(), monkeypatch)   # 100 s of work
    lines = text.splitlines()
    assert "\r" not in text
    # one line at the start, one per LINE_EVERY_S (30 s) of the 100 s, one at the end, the message
    assert 4 <= len(lines) <= 2 + 100 / progress_module.LINE_EVERY_S + 2
    assert lines[-2].startswith("[test] 1000/1000 samples (100%)") and lines[-1] == "[test] a message"


def test_terminal_gets_a_tqdm_bar(monkeypatch):
    text = _run(Terminal(), monkeypatch)
    assert "\r" in text and "1000/1000" in text and "[test]" in text and "|" in text
    assert "[test] a message" in text


def test_disabled_and_auto_stay_quiet(monkeypatch):
    stream = io.StringIO()
    bar = Progress(10, enabled=False)
    bar.stream = stream
    bar.update(10)
    bar.log("x")
    assert stream.getvalue() == ""
    clock = {"t": 0.0}
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: clock["t"])
    quick = Progress(10, enabled="auto")
    quick.stream = stream
    quick.update(10)                 # finished before AUTO_AFTER_S: nothing shown
    assert stream.getvalue() == ""
