"""Checkpoints of `run`: the streaming state, written atomically, resumed only by the same run.

A checkpoint is an ``.npz`` (no pickle: ``np.load`` keeps ``allow_pickle=False``) holding
the run's *fingerprint* (spec, seed, measure, taps, positions, dtype, device type, method,
batch, reservoir), the number of samples done, the non-finite sample indices, the elapsed
time and the `Accumulator`'s state. A resume compares the fingerprint before it uses
anything else in the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .stats import Accumulator

CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, fingerprint: dict, acc: Accumulator, done: int, nonfinite: list, elapsed: float) -> None:
    """Write atomically: a killed run leaves the previous checkpoint intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(
            fh,
            fingerprint=np.asarray(json.dumps(fingerprint, sort_keys=True)),
            done=np.asarray(done),
            nonfinite=np.asarray(nonfinite, dtype=np.int64),
            elapsed=np.asarray(elapsed),
            **{f"acc_{k}": v for k, v in acc.state_dict().items()},
        )
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path, fingerprint: dict, acc: Accumulator, samples: int) -> tuple[int, list, float]:
    """Restore ``acc`` from the checkpoint of this run; returns (done, nonfinite, elapsed).

    One ValueError naming the file for anything unusable: unreadable, damaged, of a
    different run, or holding more samples than asked for.
    """
    # np.load keeps its default allow_pickle=False: a file that holds a pickle (or an object
    # array) fails here unread, like a truncated or foreign file
    try:
        with np.load(path) as npz:
            data = dict(npz)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same error to a user
        raise ValueError(f"checkpoint {str(path)!r} is not readable ({err}); delete it to start afresh") from None

    def damaged(why: str) -> ValueError:
        return ValueError(f"checkpoint {str(path)!r} is damaged ({why}); delete it to start afresh")

    # the fingerprint first: nothing else in a checkpoint of another run is used
    try:
        theirs = json.loads(str(data["fingerprint"]))
    except KeyError:
        raise damaged("no fingerprint") from None
    except json.JSONDecodeError:
        raise damaged("its fingerprint is not JSON") from None
    if not isinstance(theirs, dict):
        raise damaged("its fingerprint is not a JSON object")
    if theirs != json.loads(json.dumps(fingerprint, sort_keys=True)):
        diff = sorted(k for k in set(theirs) | set(fingerprint) if theirs.get(k) != fingerprint.get(k))
        raise ValueError(
            f"checkpoint {str(path)!r} belongs to a different run (differs in: {', '.join(diff)}); "
            "use another checkpoint path or delete it"
        )
    try:
        done, nonfinite, elapsed = int(data["done"]), [int(i) for i in data["nonfinite"]], float(data["elapsed"])
    except KeyError as err:
        raise damaged(f"no {err.args[0]!r}") from None
    except (TypeError, ValueError):
        raise damaged("done, nonfinite or elapsed is not a number") from None
    if done > samples:
        raise ValueError(
            f"checkpoint {str(path)!r} already holds {done} samples, more than the {samples} asked for"
        )
    try:
        acc.load_state_dict({k[4:]: v for k, v in data.items() if k.startswith("acc_")})
    except ValueError as err:
        raise damaged(str(err)) from None
    return done, nonfinite, elapsed
