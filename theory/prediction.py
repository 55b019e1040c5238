"""The one prediction model: theory's numbers for taps at query positions.

`theory.predict` and `theory.depth.predict` both return a `Prediction`: an ordered
mapping from full tap name to a `TapPrediction`, one record per tap result with

* ``values``: quantity (``mean``, ``var``, ``sum_sq``, ``excess_kurtosis``, ...) -> array
  over ``positions`` (1-based query positions m);
* ``level`` (`theory.Level`), ``error`` (the stated error order, text), ``assumptions``,
  ``regime`` (where the result holds);
* ``tolerance``: the relative error theory declares for the result, as a number: 0 for
  exact results, the error order evaluated for the spec where one is derived
  (``tolerance_source`` says how it was obtained). verify holds simulation to it.

`theory.depth.predict` adds the T x T position kernels of the residual taps
(``Prediction.kernels``), at every position 1..T.

>>> from theory import ModelSpec, predict
>>> p = predict(ModelSpec(d_model=64, n_heads=4, n_layers=1, seq_len=16), [1, 16], taps=["attn.hook_pattern"])
>>> p["blocks.0.attn.hook_pattern"].at(1)["sum_sq"]
1.0
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Iterator, Mapping

import numpy as np

from ._result import Level
from ._tables import ELLIPSIS, elide, html_table, pandas_module, spec_summary, text_table
from .spec import ModelSpec
from .taps import parse_tap, tap_name


@dataclass(frozen=True)
class TapPrediction:
    """Theory's result for one tap at one level, at ``positions``."""

    tap: str
    level: Level
    positions: np.ndarray
    values: Mapping[str, np.ndarray]
    error: str | None = None
    assumptions: tuple[str, ...] = ()
    regime: str = ""
    tolerance: float | None = None
    tolerance_source: str = ""
    source: str = ""  # "derive" (first-layer steps) or "depth" (the kernel recursion)

    def __post_init__(self) -> None:
        object.__setattr__(self, "level", Level(self.level))
        object.__setattr__(self, "positions", np.asarray(self.positions, dtype=np.int64))
        values = {q: np.asarray(v, dtype=float) for q, v in self.values.items()}
        for q, v in values.items():
            if v.shape != self.positions.shape:
                raise ValueError(f"{self.tap}: {q} has shape {v.shape}, positions {self.positions.shape}")
        object.__setattr__(self, "values", values)  # a plain dict: records cross process boundaries (pickle)
        object.__setattr__(self, "assumptions", tuple(self.assumptions))

    def _table(self) -> tuple[list[str], list[list]]:
        """(columns, rows): one row per quantity, its values at the (elided) positions."""
        index = elide(range(len(self.positions)))
        columns = ["quantity"] + [ELLIPSIS if i is ELLIPSIS else f"m={int(self.positions[i])}" for i in index]
        rows = [[q] + [ELLIPSIS if i is ELLIPSIS else v[i] for i in index] for q, v in self.values.items()]
        return columns, rows

    def _caption(self) -> str:
        tol = "" if self.tolerance is None else f", tolerance {self.tolerance:.3g}"
        return f"{self.tap}: {self.level.value}{tol}, {len(self.positions)} positions"

    def __repr__(self) -> str:
        return f"TapPrediction({self._caption()})\n" + text_table(*self._table())

    def _repr_html_(self) -> str:
        return html_table(*self._table(), caption=self._caption())

    def to_dataframe(self):
        """A pandas DataFrame: one row per position, one column per quantity."""
        pandas = pandas_module()
        return pandas.DataFrame({q: np.asarray(v) for q, v in self.values.items()},
                                index=pandas.Index(np.asarray(self.positions), name="position"))

    def at(self, position: int) -> dict[str, float]:
        """Every quantity at one 1-based position."""
        hits = np.flatnonzero(self.positions == int(position))
        if hits.size == 0:
            raise KeyError(f"{self.tap}: no prediction at m = {position}; positions are {self.positions.tolist()[:8]}")
        return {q: float(v[hits[0]]) for q, v in self.values.items()}

    def restrict(self, positions) -> "TapPrediction":
        """The same result at a subset of its positions."""
        idx = np.searchsorted(self.positions, np.asarray(positions, dtype=np.int64))
        if np.any(idx >= self.positions.size) or np.any(self.positions[np.minimum(idx, self.positions.size - 1)] != positions):
            raise ValueError(f"{self.tap}: positions {list(positions)[:8]} are not all among {self.positions.tolist()[:8]}")
        return TapPrediction(self.tap, self.level, self.positions[idx], {q: v[idx] for q, v in self.values.items()},
                             self.error, self.assumptions, self.regime, self.tolerance, self.tolerance_source, self.source)

    def with_values(self, values: Mapping[str, np.ndarray]) -> "TapPrediction":
        """A copy with other numbers (same level, error, tolerance): a formula mutant."""
        return TapPrediction(self.tap, self.level, self.positions, values, self.error, self.assumptions, self.regime,
                             self.tolerance, self.tolerance_source, self.source)

    def meta(self) -> dict:
        """The JSON description of the result (without the numbers)."""
        out = {"level": self.level.value, "error": self.error}
        if self.tolerance is not None:
            out["tolerance"] = float(self.tolerance)
        return out


_DICT_KEYS = ("spec", "measure", "level", "predictions", "meta")


@dataclass(frozen=True)
class Prediction(Mapping[str, TapPrediction]):
    """Predictions for taps of a numeric spec at one level: tap name -> `TapPrediction`.

    Index by full name or ``(short name, layer)``. ``kernels`` holds the T x T position
    kernels ``E[x_m . x_n]/d`` of residual taps where the depth recursion kept them.
    """

    spec: ModelSpec
    level: str
    records: tuple[TapPrediction, ...]
    kernels: Mapping[str, np.ndarray] = field(default_factory=dict)
    measure: str = "annealed"

    def __post_init__(self) -> None:
        object.__setattr__(self, "records", tuple(self.records))
        object.__setattr__(self, "_index", {r.tap: r for r in self.records})
        object.__setattr__(self, "kernels", dict(self.kernels))

    # ------------------------------------------------------------ mapping
    def __getitem__(self, key) -> TapPrediction:
        if key in _DICT_KEYS:  # the dict `theory.predict` returned before this type existed
            warnings.warn(f"prediction[{key!r}] is the old dict form; use the Prediction's records "
                          f"(prediction[tap].at(m)) or prediction.to_dict()[{key!r}]", DeprecationWarning, stacklevel=2)
            return self.to_dict()[key]
        name = tap_name(key) if isinstance(key, tuple) else key
        try:
            return self._index[name]
        except KeyError:
            shown = ", ".join(list(self._index)[:6]) + (" ..." if len(self._index) > 6 else "")
            raise KeyError(f"no prediction for {name!r}; predicted taps: {shown}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._index)

    def __len__(self) -> int:
        return len(self.records)

    # ------------------------------------------------------------ reading
    @property
    def levels(self) -> dict[str, Level]:
        """``tap -> level`` (a view of the records)."""
        return {r.tap: r.level for r in self.records}

    @property
    def tolerances(self) -> dict[str, float]:
        """``tap -> declared relative tolerance`` where one is declared (a view of the records)."""
        return {r.tap: r.tolerance for r in self.records if r.tolerance is not None}

    @property
    def errors(self) -> dict[str, str | None]:
        return {r.tap: r.error for r in self.records}

    @property
    def assumptions(self) -> dict[str, tuple[str, ...]]:
        return {r.tap: r.assumptions for r in self.records}

    @property
    def values(self) -> dict[str, Mapping[str, np.ndarray]]:
        """``tap -> {quantity: array over positions}`` (a view of the records)."""
        return {r.tap: r.values for r in self.records}

    @property
    def taps(self) -> list[str]:
        return list(self._index)

    @property
    def positions(self) -> np.ndarray:
        """The positions of the first record (every record of a depth prediction: 1..T)."""
        return self.records[0].positions if self.records else np.zeros(0, dtype=np.int64)

    def _record(self, tap: str, layer: int | None) -> TapPrediction:
        return self[tap if layer is None else tap_name(tap, layer)]

    def var(self, tap: str, layer: int | None = None) -> np.ndarray:
        """Variance of one coordinate of ``tap`` at the positions (``layer`` 0-based)."""
        return self._record(tap, layer).values["var"]

    def mean(self, tap: str, layer: int | None = None) -> np.ndarray:
        return self._record(tap, layer).values["mean"]

    def kernel(self, tap: str, layer: int | None = None) -> np.ndarray:
        """``E[x_m . x_n]/d`` between positions (T x T) of a residual tap."""
        name = self._record(tap, layer).tap
        if not self.kernels:
            raise KeyError("this prediction kept no kernels (predict(..., keep_kernels=False))")
        if name not in self.kernels:
            raise KeyError(f"{name!r} has no position kernel; residual taps do: {', '.join(self.kernels)}")
        return self.kernels[name]

    def at(self, positions) -> "Prediction":
        """The same prediction restricted to 1-based ``positions``."""
        pos = np.asarray(sorted({int(p) for p in np.atleast_1d(positions)}), dtype=np.int64)
        return Prediction(self.spec, self.level, tuple(r.restrict(pos) for r in self.records), {}, self.measure)

    def _table(self) -> tuple[list[str], list[list]]:
        """(columns, rows): one row per tap and quantity (var or sum_sq), at the elided positions."""
        positions = self.positions
        index = elide(range(len(positions)))
        columns = ["tap", "level", "tolerance", "quantity"] + [
            ELLIPSIS if i is ELLIPSIS else f"m={int(positions[i])}" for i in index]
        rows = []
        for r in self.records:
            q = next((k for k in ("sum_sq", "var") if k in r.values), next(iter(r.values), None))
            if q is None:
                continue
            v = r.values[q]
            rows.append([r.tap, r.level.value, r.tolerance, q] + [
                ELLIPSIS if i is ELLIPSIS else (v[i] if i < len(v) else None) for i in index])
        return columns, rows

    def _caption(self) -> str:
        return (f"{self.level} level, {self.measure}, {len(self.records)} taps x {len(self.positions)} positions; "
                f"spec: {spec_summary(self.spec)}")

    def __repr__(self) -> str:
        return f"Prediction({self._caption()})\n" + text_table(*self._table())

    def _repr_html_(self) -> str:
        return html_table(*self._table(), caption="Prediction: " + self._caption())

    def to_dataframe(self):
        """A long pandas DataFrame: columns tap, layer, position, quantity, value, level, tolerance."""
        rows = [(r.tap, parse_tap(r.tap)[1], int(m), q, float(v[i]), r.level.value, r.tolerance)
                for r in self.records for q, v in r.values.items() for i, m in enumerate(r.positions)]
        return pandas_module().DataFrame(rows, columns=["tap", "layer", "position", "quantity", "value", "level", "tolerance"])

    def to_dict(self) -> dict:
        """``{"spec", "measure", "level", "predictions": {TAP: {"<m>": {q: v}}}, "meta": {TAP: {...}}}``
        (the JSON of ``python -m theory predict --json``)."""
        return {
            "spec": self.spec.to_dict(),
            "measure": self.measure,
            "level": self.level,
            "predictions": {r.tap: {str(int(m)): {q: float(v[i]) for q, v in r.values.items()}
                                    for i, m in enumerate(r.positions)} for r in self.records},
            "meta": {r.tap: r.meta() for r in self.records},
        }


__all__ = ["TapPrediction", "Prediction"]
