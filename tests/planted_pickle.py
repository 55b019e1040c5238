"""A pickle that runs code when it is unpickled, for the tests that the files of a run folder
(checkpoints, caches) are read without running anything in them."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


class Exploit:
    """Unpickling an instance calls ``exec`` on a line of Python that creates ``marker``; a
    real attack would run whatever it likes there."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({self.marker!r}).touch()",)


def plant(path: Path, marker: Path, fmt: str = "torch") -> Path:
    """Write a checkpoint-looking file at ``path`` whose unpickling creates ``marker``.

    ``fmt="torch"``: a torch.save zip archive, what our checkpoints are, so the load gets as
    far as torch's unpickler; ``"pickle"``: a bare pickle, what old torch versions wrote."""
    payload = {"fingerprint": Exploit(marker), "spec": Exploit(marker), "model": {}}
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torch":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    return path


def is_live(path: Path, marker: Path) -> bool:
    """Whether loading ``path`` the unsafe way really runs the planted code (then undone), so
    a test that the safe way does not is not vacuous."""
    scratch = path.with_name(path.name + ".probe")
    scratch.write_bytes(path.read_bytes())
    try:
        torch.load(scratch, weights_only=False)
    except Exception:  # noqa: BLE001 - the payload's exec returns None where a dict was expected
        pass
    finally:
        scratch.unlink()
    live = marker.exists()
    marker.unlink(missing_ok=True)
    return live
