"""The one argument parser and the one error style of every command line (theory, simulate, verify).

Every CLI of the toolkit reports a user error the same way: one line on stderr,
``<command>: error: <message>`` (the message folded onto one line), exit status 2, no usage
dump and no traceback; an interrupt is ``<command>: interrupted[; hint]``, exit status 130.

* :class:`OneLineParser` -- argparse with that error line; its sub-command parsers report
  under the same name (``python -m simulate run --bad`` -> ``simulate: error: ...``, as the
  errors ``simulate run`` finds after parsing).
* :class:`UsageError` -- a user error found after parsing (a bad file, a bad combination);
  a ``ValueError``, so the CLIs' ``except ValueError`` reports it too.
* :func:`usage_error`, :func:`interrupted` -- print the line, return the exit status.

Lives in theory (the lowest package) so that simulate and verify share it; it imports
nothing but the standard library (no torch).
"""

from __future__ import annotations

import argparse
import functools
import sys

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(ValueError):
    """A user error found after parsing: printed as one line, exit status 2."""


def command_name(prog: str) -> str:
    """``"python -m simulate run"`` -> ``"simulate run"``: the name an error line starts with."""
    words = prog.split()
    if words[:2] == ["python", "-m"] or (words[:1] and words[0].startswith("python") and words[1:2] == ["-m"]):
        words = words[2:]
    return " ".join(words) or prog


def error_line(command: str, message: object) -> str:
    """``<command>: error: <message>`` with the message on one line."""
    return f"{command}: error: {' '.join(str(message).split())}"


def usage_error(command: str, message: object) -> int:
    """Print the error line on stderr; return the exit status of bad input (2)."""
    print(error_line(command, message), file=sys.stderr)
    return EXIT_USAGE


def interrupted(command: str, hint: str = "") -> int:
    """Print ``<command>: interrupted[; hint]`` on stderr; return 130."""
    print(f"{command}: interrupted" + (f"; {hint}" if hint else ""), file=sys.stderr)
    return EXIT_INTERRUPTED


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a usage error as ``<command>: error: <message>`` and exits 2.

    ``error_prefix``: the command's name in the line; by default from ``prog``
    (``python -m simulate probe`` -> ``simulate probe``).

    >>> p = OneLineParser(prog="python -m simulate probe")
    >>> p.error_prefix
    'simulate probe'
    """

    def __init__(self, *args, error_prefix: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.error_prefix = error_prefix or command_name(self.prog)

    def add_subparsers(self, **kwargs):
        """Sub-command parsers are OneLineParsers that report under this command's name
        (``simulate: error: ...`` for ``simulate run``, as its other errors)."""
        parser_class = kwargs.get("parser_class", OneLineParser)
        if isinstance(parser_class, type) and issubclass(parser_class, OneLineParser):
            kwargs["parser_class"] = functools.partial(parser_class, error_prefix=self.error_prefix)
        return super().add_subparsers(**kwargs)

    def error(self, message: str) -> None:
        sys.stderr.write(error_line(self.error_prefix, message) + "\n")
        sys.exit(EXIT_USAGE)
