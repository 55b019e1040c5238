"""`record_sequences`: per-sequence summaries of any torch model's activations, by our tap names.

`record` streams statistics over sequences and keeps none of them apart; an error bar
clustered by document (`simulate.experiments.train.clustered`) needs each sequence's own
numbers, to recompute a statistic without one document. For each tap this returns, per
sequence ``i`` and position ``m`` (1-based, all positions):

* ``m1[i, m]`` = mean over the tap's coordinates of ``x_{i,m,c}`` and ``m2[i, m]`` = mean
  of ``x_{i,m,c}^2`` (all heads for q/k/v/z), so the pooled variance of one coordinate
  drawn at random is ``mean_i m2 - (mean_i m1)^2``, `record`'s ``var`` (up to ``n - 1``);
* ``values[i, k, c]`` at the positions ``values_at`` only (float32; they cost
  sequences x positions x coordinates), for statistics with the coordinate held fixed;
* for ``hook_pattern``: ``entropy[i, m]`` = mean over heads of ``-sum_n a_mn ln a_mn``
  (nats) and ``sum_sq[i, m]`` = mean over heads of ``sum_n a_mn^2``.

Same name maps, hooks and batching as `record` (the model in ``eval()`` under
``torch.no_grad()``, its mode restored).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from theory.positions import check_positions

from .recorder import _batch_len, _batches, _call, _hooked, _is_pattern, _resolve, _to_units


def record_sequences(
    model: nn.Module,
    inputs: Any,
    taps: Any = None,
    names: Any = "auto",
    *,
    values_at: Any = None,
    batch_size: int = 16,
    call: Callable[[nn.Module, Any], Any] | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """Per-sequence, per-position summaries of ``taps`` (see the module docstring):
    ``{tap: {"m1", "m2"[, "values"]}}`` or ``{tap: {"entropy", "sum_sq"}}`` for patterns,
    arrays with the sequences on axis 0 in input order. ``values_at``: 1-based positions
    whose coordinate values are kept (default none)."""
    _, sites, tap_list = _resolve(model, names, taps, batch_size)
    parts: dict[str, dict[str, list[np.ndarray]]] = {t: {} for t in tap_list}
    seq_len, keep = None, None
    with _hooked(model, {t: sites[t] for t in tap_list}) as captured:
        for batch in _batches(inputs, batch_size):
            count, T = _batch_len(batch)
            if seq_len is None:
                seq_len = T
                keep = None if values_at is None else check_positions(values_at, T) - 1
            elif T != seq_len:
                raise ValueError(f"every sequence must have the same length; got {T} after {seq_len}")
            captured.clear()
            _call(model, batch, call)
            for tap in tap_list:
                if tap not in captured:
                    raise ValueError(f"the forward pass never reached {tap} (its module was not called)")
                t = _to_units(tap, captured[tap], count, T)[0].double()  # shape checked; (B, ...)
                out = parts[tap]
                if _is_pattern(tap):  # (B, H, T, T), query on axis -2, masked keys weight 0
                    out.setdefault("entropy", []).append(torch.special.entr(t).sum(-1).mean(1).numpy())
                    out.setdefault("sum_sq", []).append((t * t).sum(-1).mean(1).numpy())
                    continue
                y = t.reshape(count, T, -1)  # (B, T, C)
                out.setdefault("m1", []).append(y.mean(-1).numpy())
                out.setdefault("m2", []).append((y * y).mean(-1).numpy())
                if keep is not None:
                    out.setdefault("values", []).append(y[:, keep].float().numpy())
    if seq_len is None:
        raise ValueError("inputs held no sequences")
    return {tap: {k: np.concatenate(v) for k, v in d.items()} for tap, d in parts.items()}
