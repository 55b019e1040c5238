"""The one argument parser of every command line (theory, simulate, verify): usage errors in one line."""

from __future__ import annotations

import argparse
import sys


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as ``<error_prefix>: error: <message>`` and exits 2.

    No usage dump and no traceback: one line a user can read (the project's CLI rule).
    """

    def __init__(self, *args, error_prefix: str = "nope-theory", **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.error_prefix = error_prefix

    def error(self, message: str) -> None:
        sys.stderr.write(f"{self.error_prefix}: error: {message}\n")
        sys.exit(2)
