"""`record`: per-position statistics of any torch model's activations, by our tap names.

Forward hooks capture the tensors a name map (`simulate.record.names`) points at, convert
them to our layout and stream them through the same statistics as `simulate.run`
(`simulate.engine`'s `Accumulator`):

* **the unit is one input sequence**. A trained model is one frozen network, so this is
  the quenched measure: ``mean_se``/``var_se`` are standard errors across sequences (the
  per-sequence summaries are treated as independent draws; windows cut from one corpus
  share documents and style, so read them as lower bounds when windows are adjacent);
* ``mean``/``var`` at position ``m`` pool the coordinates of the tap at ``m`` (all heads
  for q/k/v/z) over the sequences: ``var = E_seq[within-sequence variance over coordinates]
  + Var(coordinate values' mean across sequences)`` -- for a trained model the coordinates
  are not exchangeable, so this is the variance of *one coordinate drawn at random*, the
  quantity the paper plots (Chi et al. 2023, sec. 5: variance of the attention output
  across the hidden dimension, averaged over sequences) up to the small second term;
* ``hook_pattern`` adds ``sum_sq = E[sum_n a_mn^2]`` and ``entropy = E[-sum_n a_mn ln a_mn]``
  (nats, per head; uniform attention over m keys gives ``ln m``), each with its standard
  error across sequences.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch
from torch import nn

from theory import ModelSpec
from theory.positions import check_positions
from theory.taps import parse_tap

from ..engine import MASKED_TAPS, Accumulator, Progress, RowValues, SimulationResult, add_chunk, build_result, chunk_rows, tap_rows, versions
from .names import Site, module_names, resolve_sites, select_taps


def record(
    model: nn.Module,
    inputs: Any,
    taps: Any = None,
    names: Any = "auto",
    *,
    positions: Any = None,
    batch_size: int = 16,
    call: Callable[[nn.Module, Any], Any] | None = None,
    progress: bool | str = "auto",
    across_inputs: bool = False,
) -> SimulationResult:
    """Per-position statistics of ``model``'s activations on ``inputs``, by our tap names.

    Parameters
    ----------
    model : any ``torch.nn.Module``; run in ``eval()`` mode under ``torch.no_grad()``
        (its mode is restored afterwards).
    inputs : a tensor (sequences, positions) of token ids, cut into ``batch_size`` batches,
        or an iterable of batches (tensors or dicts of keyword arguments). Every sequence is
        one unit; all must have the same length T.
    taps : a full name, ``(name, layer)``, a list of those, a callable filter, or None (every
        tap the name map provides).
    names : ``"auto"``, ``"hooked"``/``"nope"``/``"transformer_lens"``, ``"gpt2"``, ``"llama"``
        or a dict ``{tap: module path | "path:input" | Site}`` (see `simulate.record.names`).
    positions : 1-based positions to record (default all 1..T).
    call : how to run a batch (default ``model(batch)``, or ``model(**batch)`` for a dict).
    across_inputs : also compute ``var_across_inputs`` for every tap but scores and pattern:
        ``mean_c Var_seq(x_{m,c})``, the variance across sequences with the coordinate ``c``
        held fixed (unbiased, merged per batch with Chan's formula in float64). ``var``
        equals it plus the variance over ``c`` of the per-coordinate means -- a fixed,
        input-independent vector per position, which a trained model can have.

    Returns
    -------
    SimulationResult
        ``result[tap]`` is a `TapStats` over ``result.positions`` with ``n`` = sequences and
        standard errors across sequences (``meta["unit"] = "sequence"``); ``hook_pattern``
        has ``sum_sq`` and ``entropy`` (nats). ``result.spec`` is the model's ``spec`` when it
        has one (our `NoPETransformer`), else None.

    >>> import torch
    >>> from theory import ModelSpec
    >>> from simulate import NoPETransformer
    >>> model = NoPETransformer(ModelSpec(d_model=16, n_heads=2, n_layers=1, seq_len=8, vocab_size=11))
    >>> ids = torch.randint(11, (6, 8), generator=torch.Generator().manual_seed(0))
    >>> result = record(model, ids, taps=[("hook_z", 0), ("pattern", 0)], progress=False)
    >>> result["hook_z", 0].n, result["pattern", 0].entropy.shape
    (6, (8,))
    """
    map_name, sites, tap_list = _resolve(model, names, taps, batch_size)
    stream = _Stream(tap_list, positions, across_inputs)
    total = inputs.shape[0] if isinstance(inputs, torch.Tensor) else None
    bar = Progress(total or 0, 0, progress if total else False, unit="sequences", label="record")
    t0 = time.perf_counter()
    try:
        with _hooked(model, {t: sites[t] for t in tap_list}) as captured:
            for batch in _batches(inputs, batch_size):
                stream.begin(batch)
                captured.clear()
                _call(model, batch, call)
                stream.add(captured)
                bar.update(stream.done)
    finally:
        bar.close()
    meta = {"model": type(model).__name__, "names": map_name, "sites": {t: sites[t].describe() for t in tap_list}}
    return stream.result(getattr(model, "spec", None), meta, time.perf_counter() - t0)


# ---------------------------------------------------------------------- running the model
def _resolve(model: nn.Module, names: Any, taps: Any, batch_size: int) -> tuple[str, dict[str, Site], list[str]]:
    """The checked arguments of `record` and `record_sequences`: the name map, its sites, the taps."""
    if not isinstance(model, nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    map_name, sites = resolve_sites(model, names)
    return map_name, sites, select_taps(taps, list(sites))


@contextmanager
def _hooked(model: nn.Module, sites: dict[str, Site]) -> Iterator[dict[str, torch.Tensor]]:
    """Hooks that capture each tap's tensor into the yielded dict; the model in eval mode
    under no_grad. On exit the hooks go and the model's mode is restored."""
    modules = module_names(model)
    captured: dict[str, torch.Tensor] = {}
    handles = []
    was_training = model.training
    try:
        for tap, site in sites.items():
            handles.append(_hook(modules[site.module], tap, site, captured))
        model.eval()
        with torch.no_grad():
            yield captured
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)


def _hook(module: nn.Module, tap: str, site: Site, captured: dict):
    def grab(value: Any) -> None:
        t = _first_tensor(value).detach()
        captured[tap] = site.transform(t, module) if site.transform else t

    if site.where == "output":
        return module.register_forward_hook(lambda mod, args, out: grab(out))

    def pre(mod, args, kwargs):
        if args:
            grab(args[0])
        else:
            grab(kwargs.get("hidden_states", next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)))

    return module.register_forward_pre_hook(pre, with_kwargs=True)


def _first_tensor(value: Any) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        return value[0]
    if hasattr(value, "last_hidden_state"):
        return value.last_hidden_state
    raise ValueError(f"a hooked module returned {type(value).__name__}, not a tensor; give a Site with a transform")


def _batches(inputs: Any, batch_size: int) -> Iterable[Any]:
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() < 2:
            raise ValueError(f"inputs must be (sequences, positions[, ...]), got shape {tuple(inputs.shape)}")
        for i in range(0, inputs.shape[0], batch_size):
            yield inputs[i:i + batch_size]
    else:
        yield from inputs


def _batch_len(batch: Any) -> tuple[int, int]:
    t = batch if isinstance(batch, torch.Tensor) else next(v for v in batch.values() if isinstance(v, torch.Tensor))
    return int(t.shape[0]), int(t.shape[1])


def _call(model: nn.Module, batch: Any, call: Callable | None) -> None:
    if call is not None:
        call(model, batch)
    elif isinstance(batch, Mapping):
        model(**batch)
    else:
        model(batch)


# ---------------------------------------------------------------------- the statistics
def _is_pattern(tap: str) -> bool:
    return parse_tap(tap)[0] == "attn.hook_pattern"


class _Stream:
    """The statistics of the recorded taps, batch by batch; one unit per sequence."""

    def __init__(self, taps: list[str], positions: Any, across_inputs: bool):
        self.taps, self.positions_asked, self.across_inputs = taps, positions, across_inputs
        # per tap its rows (value, sum_sq), then the entropy rows of the patterns
        self.stat_rows = [(t, r) for t in taps for r in tap_rows(t)] + [(t, "entropy") for t in taps if _is_pattern(t)]
        self.acc: Accumulator | None = None
        self.positions: np.ndarray | None = None
        self.seq_len: int | None = None
        self.done, self.count = 0, 0
        self.nonfinite: list[int] = []
        self.coords: dict[str, dict[str, Any]] = {}

    def begin(self, batch: Any) -> None:
        """Before a batch runs: its size; the first batch fixes T, the positions and the accumulator."""
        self.count, T = _batch_len(batch)
        if self.seq_len is None:
            self.seq_len = T
            self.positions = check_positions(self.positions_asked, T)
            self.acc = Accumulator(self.stat_rows, len(self.positions))
        elif T != self.seq_len:
            raise ValueError(f"every sequence must have the same length; got {T} after {self.seq_len}")

    def add(self, captured: dict[str, torch.Tensor]) -> None:
        """After a batch ran: its captured tensors into the statistics."""
        missing = [t for t in self.taps if t not in captured]
        if missing:
            raise ValueError(f"the forward pass never reached {', '.join(missing)} (its module was not called)")
        positions_t = torch.as_tensor(self.positions - 1, device=captured[self.taps[0]].device)
        units = {t: _to_units(t, captured[t], self.count, self.seq_len) for t in self.taps}
        rows = chunk_rows(self.taps, units, positions_t, quenched=True) + _entropy_rows(self.taps, captured, positions_t)
        add_chunk(self.acc, rows, self.done, self.count, self.nonfinite)
        if self.across_inputs:
            _add_coordinates(self.coords, captured, self.taps, positions_t)
        self.done += self.count

    def result(self, spec: Any, meta: dict, wall: float) -> SimulationResult:
        if self.acc is None:
            raise ValueError("inputs held no sequences")
        spec = spec if isinstance(spec, ModelSpec) else None
        pos = self.positions
        meta = {
            "spec": spec.to_dict() if spec else None,
            **meta,
            "measure": "quenched",
            "unit": "sequence",
            "samples": self.done,
            "seq_len": self.seq_len,
            "taps": self.taps,
            "positions": "all" if len(pos) == self.seq_len else pos.tolist(),
            "nonfinite_samples": len(self.nonfinite),
            "nonfinite_indices": self.nonfinite[:100],
            "wall_time_s": round(wall, 3),
            "versions": versions(),
        }
        if self.across_inputs:
            meta["across_inputs"] = True
        result = build_result(spec, pos, self.acc, self.stat_rows, self.taps, meta)
        for tap, c in self.coords.items():
            with np.errstate(invalid="ignore", divide="ignore"):
                var_c = c["m2"] / (c["n"] - 1) if c["n"] > 1 else np.full_like(c["m2"], np.nan)
            result.stats[tap] = dataclasses.replace(result.stats[tap], var_across_inputs=var_c.mean(axis=-1))
        return result


def _to_units(tap: str, tensor: torch.Tensor, count: int, seq_len: int) -> torch.Tensor:
    """A captured tensor in our layout with a leading network axis of 1: (1, B, ...)."""
    suffix = parse_tap(tap)[0]
    if tensor.shape[0] != count:
        raise ValueError(f"{tap}: captured shape {tuple(tensor.shape)} does not start with the batch ({count})")
    if suffix in MASKED_TAPS:
        if tensor.dim() != 4 or tensor.shape[-1] != seq_len or tensor.shape[-2] != seq_len:
            raise ValueError(f"{tap}: expected (batch, heads, {seq_len}, {seq_len}), got {tuple(tensor.shape)}")
    elif tensor.dim() < 3 or tensor.shape[1] != seq_len:
        raise ValueError(f"{tap}: expected (batch, {seq_len}, ...), got {tuple(tensor.shape)}")
    return tensor.unsqueeze(0)


def _entropy_rows(taps: list[str], captured: dict[str, torch.Tensor], positions_t: torch.Tensor) -> list[RowValues]:
    """``-sum_n a_mn ln a_mn`` per sequence, position and head of each pattern tap: (B, P, H)."""
    rows = []
    for tap in taps:
        if _is_pattern(tap):
            p = captured[tap][:, :, positions_t]  # (B, H, P, T); masked keys hold weight 0
            ent = torch.special.entr(p).sum(dim=-1)  # (B, H, P), 0 ln 0 = 0
            rows.append(RowValues(ent.transpose(1, 2).contiguous(), None, 0))  # (B, P, H)
    return rows


def _add_coordinates(coords: dict, captured: dict, taps: list[str], positions_t: torch.Tensor) -> None:
    """Per (position, coordinate): count, mean and M2 across sequences (Chan merge, float64)."""
    for tap in taps:
        if parse_tap(tap)[0] in MASKED_TAPS:
            continue
        t = captured[tap]
        y = t.reshape(t.shape[0], t.shape[1], -1)[:, positions_t].double()  # (B, P, C)
        nb = y.shape[0]
        mean_b = y.mean(dim=0)
        m2_b = ((y - mean_b) ** 2).sum(dim=0)
        mean_b, m2_b = mean_b.cpu().numpy(), m2_b.cpu().numpy()
        c = coords.get(tap)
        if c is None:
            coords[tap] = {"n": nb, "mean": mean_b, "m2": m2_b}
            continue
        n = c["n"] + nb
        delta = mean_b - c["mean"]
        c["mean"] = c["mean"] + delta * nb / n
        c["m2"] = c["m2"] + m2_b + delta**2 * c["n"] * nb / n
        c["n"] = n
