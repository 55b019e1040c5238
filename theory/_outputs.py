"""Output paths of the command lines: checked before the work starts, written atomically.

Every CLI that writes (``theory latex``, ``python -m verify``, ``simulate run|probe|train``)
follows the same four rules, so that no result is lost to a bad path and no input is
clobbered:

1. **Check before working.** `check_output_file` / `check_output_dir` run before any
   computation: an output folder is created if missing (a file's folder must exist), and
   writability is *tried* (a probe file is created and removed; ``os.access`` alone says
   yes for root on ``/sys``).
2. **Never overwrite an input.** An output that is (or resolves to) one of the inputs the
   command read (the spec, the notation file) is refused.
3. **No writing through links.** An output path that is a symbolic link is refused: the
   user may not know where it points, and an atomic rename would silently replace the
   link itself.
4. **Atomic writes.** `atomic_write_text` / `atomic_path` write to a temporary file in the
   same folder, flush and fsync it, then ``os.replace`` it over the target, so a killed run
   leaves the old file or the new one, never half of one.

An existing output is replaced, and the check says so (the CLIs print that line on stderr).
Everything here raises `ValueError` with one line naming the option, which the CLIs turn
into ``<prog>: error: ...`` and exit status 2. Pure Python, no third-party imports.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

# Longest piece of user input echoed back in an error message (the rest is cut with "...").
ECHO_LIMIT = 80


def shown(value: object, limit: int = ECHO_LIMIT) -> str:
    """``repr(value)`` cut to ``limit`` characters, so an error never echoes megabytes.

    >>> shown("x" * 1000)[-18:]
    'xx... (1002 chars)'
    """
    try:
        text = repr(value)
    except Exception:  # a repr that fails (recursion, huge ints) is still reported
        text = f"<{type(value).__name__}>"
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"


def read_json_file(path: str | os.PathLike, what: str, max_bytes: int = 1 << 20):
    """The JSON value in a small file, or a ValueError naming ``what`` ("grid file", ...).

    Reads at most ``max_bytes`` (a larger file is refused before it is parsed), as UTF-8;
    JSON only, so nothing read runs code.
    """
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except (OSError, TypeError) as err:
        raise ValueError(f"cannot read {what} {shown(str(path))}: {getattr(err, 'strerror', None) or err}") from None
    if len(raw) > max_bytes:
        raise ValueError(f"{what} {shown(str(path))} is larger than {max_bytes} bytes; it should be a small JSON object")
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{what} {shown(str(path))} is not valid JSON: {shown(str(err), 120)}") from None


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return os.path.realpath(a) == os.path.realpath(b)


def _refuse_inputs(path: Path, option: str, inputs: Iterable[str | os.PathLike | None]) -> None:
    for inp in inputs:
        if inp is not None and _same_file(path, Path(inp)):
            raise ValueError(f"{option} {shown(str(path))} is an input of this command ({shown(str(inp))}); "
                             "give another path so the input is not overwritten")


def _probe_writable(folder: Path, option: str) -> None:
    """Create and remove a file in ``folder``: the only reliable writability test."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
    except OSError as err:
        raise ValueError(f"{option}: cannot write into {shown(str(folder))}: {err.strerror or err}") from None
    os.close(fd)
    os.unlink(probe)


def _make_folder(folder: Path, option: str) -> None:
    if folder.is_symlink() and not folder.is_dir():
        raise ValueError(f"{option}: {shown(str(folder))} is a broken symbolic link")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{option}: {shown(str(folder))} exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValueError(f"{option}: cannot create the folder {shown(str(folder))}: {err.strerror or err}") from None


def check_output_file(path: str | os.PathLike, option: str = "--out", inputs: Iterable = (),
                      suffix: str | None = None) -> tuple[Path, str | None]:
    """Check that ``path`` can take a new file in an existing folder.

    The folder is not created: a typo in a file path should not leave new folders behind
    (`check_output_dir`, for commands that write a folder, does create it).

    Returns ``(path, note)``: ``note`` says what an existing file will become (None when
    there is none). ``suffix``: the ending the path must have (e.g. ".json").
    """
    path = Path(path)
    if str(path) in ("", "."):
        raise ValueError(f"{option} must be a file path")
    if path.is_symlink():
        raise ValueError(f"{option} {shown(str(path))} is a symbolic link; give the real path")
    if path.exists() and path.is_dir():
        raise ValueError(f"{option} {shown(str(path))} is a folder; give a file path")
    if suffix is not None and path.suffix.lower() != suffix:
        raise ValueError(f"{option} must end in {suffix}, got {shown(str(path))}")
    _refuse_inputs(path, option, inputs)
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"{option}: the folder {shown(str(folder))} does not exist; create it first")
    _probe_writable(folder, option)
    note = f"{path} exists and will be replaced" if path.exists() else None
    return path, note


def check_output_dir(path: str | os.PathLike, option: str = "--out", inputs: Iterable = (),
                     will_write: Iterable[str] = ()) -> tuple[Path, str | None]:
    """Check that ``path`` is (or can become) a writable folder; create it if missing.

    ``will_write``: names inside the folder the command writes; those that exist are
    named in the returned note (they will be replaced). An input inside the folder under
    one of those names is refused.
    """
    path = Path(path)
    if str(path) == "":
        raise ValueError(f"{option} must be a folder path")
    if path.is_symlink():
        raise ValueError(f"{option} {shown(str(path))} is a symbolic link; give the real path")
    _refuse_inputs(path, option, inputs)
    inputs = [i for i in inputs if i is not None]
    existing = []
    for name in will_write:
        target = path / name
        if target.is_symlink():
            raise ValueError(f"{option}: {shown(str(target))} is a symbolic link; remove it or give another folder")
        _refuse_inputs(target, option, inputs)
        if target.exists():
            existing.append(name)
    _make_folder(path, option)
    _probe_writable(path, option)
    note = None
    if existing:
        listed = ", ".join(existing[:5]) + (f" and {len(existing) - 5} more" if len(existing) > 5 else "")
        note = f"{path}: {listed} exist and will be replaced"
    return path, note


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    For writers that take a file name (``np.savez``, ``fig.savefig``). On an exception the
    temporary file is removed and ``path`` is left as it was.

    The temporary name keeps ``path``'s suffix: some writers add one when it is missing
    (``np.savez`` appends ``.npz``).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix + ".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file, fsync, rename)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_savefig(fig, path: str | os.PathLike, **kwargs) -> None:
    """``fig.savefig(path, **kwargs)`` atomically; the format comes from ``path``'s suffix.

    Takes any object with matplotlib's ``savefig`` (theory itself never imports matplotlib).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or None, **kwargs)
