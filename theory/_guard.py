"""The last line of defence of every command line: one line on stderr, never a traceback.

Each CLI turns the errors it expects (bad input: `ValueError`) into ``<prog>: error: ...``
and exit status 2 itself. `guarded` wraps a CLI's ``main`` for everything else:

- ``MemoryError`` and ``RecursionError``: the request is too large for this machine, which
  is the user's to change (exit 2, with what to try);
- any other exception is a bug in the toolkit: one line naming the exception, exit status
  70 (``EX_SOFTWARE`` of BSD's sysexits), and ``NOPE_TRACEBACK=1`` in the environment
  re-raises it so that a developer sees the traceback.

The fuzz test (tests/test_fuzz_cli.py) fails on exit status 70: the guard keeps users from
tracebacks, it does not hide bugs from the suite.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Callable

EXIT_BAD_INPUT = 2
EXIT_INTERNAL_ERROR = 70
MESSAGE_LIMIT = 200  # characters of an unexpected exception's message shown


def guarded(prog: str) -> Callable[[Callable[..., int]], Callable[..., int]]:
    """Decorator for a CLI ``main(argv) -> int``; see the module docstring."""

    def wrap(main: Callable[..., int]) -> Callable[..., int]:
        @functools.wraps(main)
        def guarded_main(*args, **kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except (SystemExit, KeyboardInterrupt):
                raise
            except MemoryError:
                print(f"{prog}: error: out of memory; ask for less (smaller sizes, fewer samples, "
                      "a smaller --chunk-size where there is one)", file=sys.stderr)
                return EXIT_BAD_INPUT
            except RecursionError:
                print(f"{prog}: error: the input is nested too deeply or the request too large to process",
                      file=sys.stderr)
                return EXIT_BAD_INPUT
            except Exception as err:  # noqa: BLE001 - the point of a last line of defence
                if os.environ.get("NOPE_TRACEBACK"):
                    raise
                message = " ".join(str(err).split())  # one line, however the message was written
                if len(message) > MESSAGE_LIMIT:
                    message = message[:MESSAGE_LIMIT] + "..."
                print(f"{prog}: internal error: {type(err).__name__}: {message} "
                      "(a bug in nope-theory; NOPE_TRACEBACK=1 shows the traceback)", file=sys.stderr)
                return EXIT_INTERNAL_ERROR

        return guarded_main

    return wrap
