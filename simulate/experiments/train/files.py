"""The files of a training run: ``init.pt``, ``checkpoint.pt`` and ``run.json``, read safely.

``init.pt`` and ``checkpoint.pt`` hold only tensors and plain containers (dicts, lists,
strings, numbers) and are read with ``torch.load(weights_only=True)`` (`read_checkpoint`),
which rebuilds nothing else: a crafted file that would run code is refused unread, and a
resume compares the run's fingerprint (`run_difference`) before it uses anything else in
the checkpoint (`restore`). Every way a file can be unusable is one ValueError naming the
file and its remedy.
"""

from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

import torch

from theory import ModelSpec

from .model import NoPETransformer


def atomic_save(obj, path: Path) -> None:
    """``torch.save`` to a temporary file, then renamed: a killed run keeps the previous file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# What to do about a file in a run folder that cannot be used, by its name: a deleted
# init.pt is rebuilt from the seed (the initialisation is deterministic), a deleted
# checkpoint.pt restarts that model from step 0.
_REMEDY = {
    "init.pt": "delete it and rerun the train command to rebuild it from the seed",
    "checkpoint.pt": "delete it to train that model from step 0, or use another --out",
}


def read_checkpoint(path: str | Path) -> dict:
    """The dict in an ``init.pt`` or ``checkpoint.pt``, read without running any code from it.

    ``torch.load(weights_only=True)`` rebuilds tensors and plain containers only; a pickle
    that asks for any other object (``os.system``, a class with ``__reduce__``) is refused
    before anything in it runs. Our files need nothing more: the AdamW state and the
    generator states are tensors, ints, floats and tuples. Every way a file can be unusable
    (absent, foreign, truncated, garbage) is one ValueError naming the file and the remedy.
    """
    path = Path(path)
    remedy = _REMEDY.get(path.name, "delete it")
    if not path.is_file():
        raise ValueError(f"no checkpoint at {str(path)!r}")
    # torch.save writes a zip archive. A raw pickle, a truncated file or garbage has no zip
    # directory and is refused here, before any unpickler sees it.
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{str(path)!r} is not a checkpoint (not a torch zip archive: truncated or foreign); {remedy}")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message is a page of advice ending in "weights_only=False": wrong here
        raise ValueError(
            f"{str(path)!r} holds more than tensors and plain data, or is damaged; it was refused "
            f"without running anything in it; {remedy}"
        ) from None
    except Exception as err:  # noqa: BLE001 - a damaged archive fails in many ways; one message for all
        raise ValueError(f"{str(path)!r} is damaged ({type(err).__name__}); {remedy}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{str(path)!r} is not a checkpoint of simulate train (it holds a {type(data).__name__}); {remedy}")
    return data


def load_model(path: str | Path) -> NoPETransformer:
    """The model an ``init.pt`` (the initialisation) or a ``checkpoint.pt`` holds, in eval mode."""
    path = Path(path)
    state = read_checkpoint(path)
    remedy = _REMEDY.get(path.name, "delete it")
    try:
        spec = ModelSpec.from_dict(state["spec"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{str(path)!r} holds no valid model spec ({err}); {remedy}") from None
    model = NoPETransformer(spec, seed=0)
    try:
        model.load_state_dict(state["model"])
    except KeyError:
        raise ValueError(f"{str(path)!r} holds no model weights; {remedy}") from None
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{str(path)!r} does not fit this version of NoPETransformer ({_last_line(err)})") from None
    model.eval()
    return model


def _last_line(err: Exception) -> str:
    """The gist of torch's multi-line error messages (their last line), for a one-line error."""
    lines = str(err).strip().splitlines()
    return lines[-1].strip() if lines else type(err).__name__


def read_run_json(path: str | Path) -> dict:
    """A run folder's ``run.json`` (the record `simulate.experiments.train.cli` keeps: config, corpus,
    models, every command), or one ValueError naming it. JSON runs no code; this checks the
    parts that are appended to or listed (``commands``, ``models``)."""
    path = Path(path)
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"cannot read {str(path)!r}: {err.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{str(path)!r} is not valid JSON ({err}); it is the run's record: repair it or move it "
                         "aside (a new one is started)") from None
    commands = run.get("commands") if isinstance(run, dict) else None
    if not (isinstance(commands, list) and all(isinstance(c, dict) and isinstance(c.get("command"), str) for c in commands)
            and isinstance(run.get("models", {}), dict)
            and all(isinstance(m, dict) for m in run.get("models", {}).values())):
        raise ValueError(f"{str(path)!r} is not the record of a simulate train run (no list of commands); "
                         "use another --out or move it aside")
    return run


def run_difference(theirs, ours: dict) -> str:
    """Which parts of two run fingerprints differ, e.g. ``config.lr, corpus``."""
    if not isinstance(theirs, dict):
        return "it has no run fingerprint"
    out = []
    for key in sorted(set(theirs) | set(ours)):
        a, b = theirs.get(key), ours.get(key)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        else:
            out.append(key)
    return ", ".join(out)


def check_init(path: Path, spec: ModelSpec, seed: int) -> None:
    """An existing ``init.pt`` must be the initialisation of this model and seed."""
    saved = read_checkpoint(path)
    if saved.get("spec") != spec.to_dict() or saved.get("seed") != seed:
        raise ValueError(
            f"{str(path)!r} is the initialisation of a different model or seed; use another --out or delete it"
        )


def _is_progress(state) -> bool:
    """``state`` has the shape `train_model` keeps: ``step`` losses so far, the held-out
    points, the wall time (the loop appends to and formats these, so they are checked)."""
    if not isinstance(state, dict) or set(state) != {"step", "train_loss", "eval", "wall_s"}:
        return False
    step, losses, evals = state["step"], state["train_loss"], state["eval"]
    return (type(step) is int and step >= 0 and isinstance(losses, list) and len(losses) == step
            and all(type(x) is float for x in losses) and isinstance(state["wall_s"], float)
            and isinstance(evals, list)
            and all(isinstance(e, dict) and type(e.get("step")) is int and type(e.get("loss")) is float for e in evals))


def restore(saved: dict, path: Path, model: NoPETransformer, opt: torch.optim.Optimizer,
             gen: torch.Generator) -> dict:
    """Load a checkpoint whose fingerprint matched into model, optimiser and generators and
    return its progress record (checked first: the training loop appends to it)."""
    def damaged(why: str) -> ValueError:
        return ValueError(f"{str(path)!r} is damaged ({why}); {_REMEDY['checkpoint.pt']}")

    state = saved.get("state")
    if not _is_progress(state):
        raise damaged("its progress record is not step, train_loss, eval and wall_s")
    kinds = {"model": dict, "optimizer": dict, "data_generator": torch.Tensor, "torch_rng": torch.Tensor}
    wrong = [key for key, kind in kinds.items() if not isinstance(saved.get(key), kind)]
    if wrong:
        raise damaged(f"no valid {', '.join(wrong)}")
    try:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        gen.set_state(saved["data_generator"])
        torch.set_rng_state(saved["torch_rng"])
    # what torch raises for contents of the right type but the wrong make-up
    except (KeyError, IndexError, AttributeError, RuntimeError, TypeError, ValueError) as err:
        raise damaged(_last_line(err)) from None
    return state
