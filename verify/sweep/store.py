"""The result store of a sweep: one labelled N-dimensional zarr store, written point by point.

``OUT/sweep.zarr`` is a zarr (format 2) group that xarray opens as one `xarray.Dataset`
(`open_dataset`). Its dimensions are the grid's axes (one per swept `ModelSpec` field,
labelled by the axis values) and the labels of a point's numbers: ``tap`` (the tap name
without its layer, ``attn.hook_z``), ``layer`` (0-based), ``quantity`` (``mean``, ``var``,
``sum_sq``), ``position`` (1-based query position m) and ``level`` (``best``, ``leading``).

| variable | dimensions (after the axes) | meaning |
|---|---|---|
| ``theory`` | tap, layer, quantity, position, level | theory's number |
| ``sim``, ``se`` | tap, layer, quantity, position | simulated statistic, its standard error across networks |
| ``rel_error`` | tap, layer, quantity, position, level | ``theory / sim - 1`` |
| ``z`` | tap, layer, quantity, position, level | ``(theory - sim) / se`` |
| ``within_tolerance`` | tap, layer, quantity, position | 1 when the best level's check passed (`verify.compare`), 0 when not |
| ``tolerance`` | tap, layer, level | the declared relative tolerance (0: exact) |
| ``theory_level`` | tap, layer, level | 0 exact, 1 asymptotic, 2 approximate |
| ``status`` | | 0 pending, 1 done, 2 failed, 3 invalid |
| ``error`` | | why a point failed or is invalid |
| ``seed``, ``passed``, ``logit_variance``, ``theory_s``, ``simulation_s``, ``wall_s``, ``cpu_s``, ``worker`` | | per point |

Absent numbers are NaN (a tap a point's spec does not have, a position beyond its T).

**Survival.** Every chunk file is written atomically (zarr's local store writes a
temporary file and renames it); each point's numbers live in their own chunks (chunk
length 1 along every axis), and its ``status`` is written last: a point killed while being
written reads as pending and is run again. The labels of every dimension live in the
group's attributes (``labels``), written after the arrays are resized when a grid extends
the store: that single write commits an extension, and `open_store` brings the arrays back
to the committed labels if a process died in between. Nothing is unpickled: the store is
numbers, fixed-width strings and JSON attributes.
"""

from __future__ import annotations

import json
import math
import numbers
from pathlib import Path
from typing import Any

import numpy as np

from theory._outputs import shown

STORE_NAME = "sweep.zarr"
FORMAT = "nope-theory sweep store 1"
STATUS = {"pending": 0, "done": 1, "failed": 2, "invalid": 3}
LEVELS = ("best", "leading")
QUANTITIES = ("mean", "var", "sum_sq")
LABEL_DIMS = ("tap", "layer", "quantity", "position", "level")
TEXT = 64  # characters of a tap name or a string axis value
ERROR_TEXT = 400

_FULL = ("tap", "layer", "quantity", "position", "level")
_SIM = ("tap", "layer", "quantity", "position")
_TAP = ("tap", "layer", "level")
# name -> (label dimensions after the axes, dtype, fill value)
VARIABLES: dict[str, tuple[tuple[str, ...], str, Any]] = {
    "theory": (_FULL, "f8", math.nan), "rel_error": (_FULL, "f8", math.nan), "z": (_FULL, "f8", math.nan),
    "sim": (_SIM, "f8", math.nan), "se": (_SIM, "f8", math.nan), "within_tolerance": (_SIM, "f8", math.nan),
    "tolerance": (_TAP, "f8", math.nan), "theory_level": (_TAP, "i1", -1),
    "seed": ((), "i8", -1), "passed": ((), "i1", -1), "logit_variance": ((), "f8", math.nan),
    "theory_s": ((), "f8", math.nan), "simulation_s": ((), "f8", math.nan), "wall_s": ((), "f8", math.nan),
    "cpu_s": ((), "f8", math.nan),
    "worker": ((), f"<U{TEXT}", ""), "error": ((), f"<U{ERROR_TEXT}", ""),
    "status": ((), "i1", 0),  # last: written after a point's numbers
}
POINT_NUMBERS = ("logit_variance", "theory_s", "simulation_s", "wall_s", "cpu_s")


class StoreError(ValueError):
    """A store that cannot hold this grid (named with the reason): a user error."""


def _zarr():
    import zarr  # deferred: the optional [sweep] extra (zarr, xarray, dask)

    return zarr


def _coord_dtype(values: list) -> str:
    if values and all(isinstance(v, bool) for v in values):
        return "bool"
    if values and all(isinstance(v, str) for v in values):
        return f"<U{TEXT}"
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return "i8"
    return "f8"


class Store:
    """An open sweep store (`open_store`): labels, status, and writes of whole points."""

    def __init__(self, path: Path, group, labels: dict[str, list], axes: list[str]):
        self.path = path
        self.group = group
        self.labels = labels
        self.axes = axes
        self._index = {dim: {_key(v): i for i, v in enumerate(vals)} for dim, vals in labels.items()}

    # ------------------------------------------------------------ reading
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(self.labels[a]) for a in self.axes)

    def index_of(self, coords: dict) -> tuple[int, ...]:
        """The store's indices of a point given by its coordinates (axis -> value)."""
        return tuple(self._index[a][_key(coords[a])] for a in self.axes)

    def status(self) -> np.ndarray:
        """The status code of every point (see `STATUS`), shaped like the axes."""
        return np.asarray(self.group["status"][...])

    def status_at(self, index: tuple[int, ...]) -> int:
        return int(self.group["status"][index])

    # ------------------------------------------------------------ writing
    def write_invalid(self, index: tuple[int, ...], reason: str, seed: int = -1) -> None:
        self.group["error"][index] = reason[:ERROR_TEXT]
        self.group["seed"][index] = seed
        self.group["status"][index] = STATUS["invalid"]

    def write_failure(self, index: tuple[int, ...], message: str, seed: int = -1) -> None:
        self.group["error"][index] = message[:ERROR_TEXT]
        self.group["seed"][index] = seed
        self.group["status"][index] = STATUS["failed"]

    def write_result(self, index: tuple[int, ...], result: dict, seed: int) -> None:
        """Every number of one finished point, then its status (the commit of the point)."""
        rows, taps = result["rows"], result["taps"]
        self._ensure_labels({"tap": list(rows["tap"]) + list(taps["tap"]),
                             "layer": [int(v) for v in rows["layer"]] + [int(v) for v in taps["layer"]],
                             "quantity": list(rows["quantity"]), "position": [int(v) for v in rows["position"]]})
        n = {d: len(self.labels[d]) for d in LABEL_DIMS}
        it, il = self._lookup("tap", rows["tap"]), self._lookup("layer", rows["layer"])
        iq, ip = self._lookup("quantity", rows["quantity"]), self._lookup("position", rows["position"])
        sim, se = np.asarray(rows["sim"], float), np.asarray(rows["se"], float)
        blocks = {}
        for name in ("sim", "se", "within_tolerance"):
            b = np.full((n["tap"], n["layer"], n["quantity"], n["position"]), np.nan)
            b[it, il, iq, ip] = {"sim": sim, "se": se, "within_tolerance": rows["within_tolerance"]}[name]
            blocks[name] = b
        for name in ("theory", "rel_error", "z"):
            blocks[name] = np.full((n["tap"], n["layer"], n["quantity"], n["position"], n["level"]), np.nan)
        with np.errstate(divide="ignore", invalid="ignore"):
            for level in LEVELS:
                k = self._index["level"][_key(level)]
                theory = np.asarray(rows[f"theory_{level}"], float)
                blocks["theory"][it, il, iq, ip, k] = theory
                blocks["rel_error"][it, il, iq, ip, k] = np.where(sim != 0, theory / sim - 1.0, np.nan)
                blocks["z"][it, il, iq, ip, k] = np.where(se > 0, (theory - sim) / se, np.nan)
        jt, jl = self._lookup("tap", taps["tap"]), self._lookup("layer", taps["layer"])
        blocks["tolerance"] = np.full((n["tap"], n["layer"], n["level"]), np.nan)
        blocks["theory_level"] = np.full((n["tap"], n["layer"], n["level"]), -1, dtype=np.int8)
        for level in LEVELS:
            k = self._index["level"][_key(level)]
            blocks["tolerance"][jt, jl, k] = taps[f"tolerance_{level}"]
            blocks["theory_level"][jt, jl, k] = taps[f"level_{level}"]
        for name, block in blocks.items():
            self.group[name][index] = block
        for name in POINT_NUMBERS:
            self.group[name][index] = float(result[name])
        self.group["seed"][index] = seed
        self.group["passed"][index] = int(bool(result["passed"]))
        self.group["worker"][index] = str(result.get("worker", ""))[:TEXT]
        self.group["error"][index] = ""
        self.group["status"][index] = STATUS["done"]

    def _lookup(self, dim: str, values) -> np.ndarray:
        table = self._index[dim]
        return np.array([table[_key(_plain(v))] for v in values], dtype=np.int64)

    def _ensure_labels(self, wanted: dict[str, list]) -> None:
        """Extend label dimensions with values a point has and the store lacks (rare: the
        labels are taken from the grid when the store is made)."""
        new = {d: [v for v in dict.fromkeys(_plain(x) for x in vals) if _key(v) not in self._index[d]]
               for d, vals in wanted.items()}
        if any(new.values()):
            extend(self, {d: v for d, v in new.items() if v})


def _plain(v):
    return v.item() if isinstance(v, np.generic) else v


def _key(v) -> tuple:
    """A dictionary key for a label that keeps 1 (int), 1.0 (float) and True apart only by kind."""
    v = _plain(v)
    if isinstance(v, bool):
        return ("b", v)
    if isinstance(v, str):
        return ("s", v)
    return ("n", float(v))


def _canonical(value):
    """A form of a JSON setting in which equal numbers are equal: a number (not a bool) of integral
    value as an int, any other as a float, so a base written ``16`` on one run and ``16.0`` on the
    next is the same grid (and large integers such as seeds still compare exactly)."""
    value = _plain(value)
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, bool):
        return ("bool", value)  # True == 1 in Python: keep a flag apart from the number
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return int(value) if value.is_integer() else value
    return value


def _arrays(labels: dict[str, list], axes: list[str]):
    """(name, dims, dtype, fill) of every array: the coordinates, then the variables."""
    for dim, values in labels.items():
        yield dim, (dim,), _coord_dtype(values), None
    for name, (dims, dtype, fill) in VARIABLES.items():
        yield name, tuple(axes) + dims, dtype, fill


def create_store(path: Path, settings: dict, labels: dict[str, list], axes: list[str]) -> Store:
    """A new store at ``path`` (which must not exist) for ``labels`` (every dimension)."""
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="w-", zarr_format=2)
    for name, dims, dtype, fill in _arrays(labels, axes):
        shape = tuple(len(labels[d]) for d in dims)
        chunks = tuple(1 if d in axes and name not in labels else max(1, len(labels[d])) for d in dims)
        arr = group.create_array(name, shape=shape, chunks=chunks, dtype=dtype,
                                 fill_value=fill if fill is not None else _coord_fill(dtype),
                                 attributes={"_ARRAY_DIMENSIONS": list(dims)})
        if name in labels:
            arr[...] = np.asarray(labels[name], dtype=dtype)
    group.attrs.update({"format": FORMAT, "settings": settings, "labels": labels, "axes": axes,
                        "status_codes": STATUS, "level_codes": {"exact": 0, "asymptotic": 1, "approximate": 2}})
    return Store(path, group, labels, axes)


def _coord_fill(dtype: str):
    return "" if dtype.startswith("<U") else (False if dtype == "bool" else 0)


def extend(store: Store, new: dict[str, list]) -> None:
    """Append labels to dimensions: resize every array, write the coordinates, then commit
    the labels in the group's attributes (one write)."""
    for dim, values in new.items():
        if dim in store.labels and values:
            kinds = {_coord_dtype([v]) for v in store.labels[dim] + values}
            if len(kinds) > 1 and not kinds <= {"i8", "f8"}:
                raise StoreError(f"axis {dim}: the store's values are {store.labels[dim][:4]}, "
                                 f"the grid adds {values[:4]} of another kind")
            for v in values:
                if isinstance(v, str) and len(v) > TEXT:
                    raise StoreError(f"{dim}: the value {shown(v)} is longer than {TEXT} characters")
    labels = {d: list(v) + list(new.get(d, [])) for d, v in store.labels.items()}
    _reconcile(store.group, labels, store.axes)
    store.group.attrs["labels"] = labels
    store.labels = labels
    store._index = {dim: {_key(v): i for i, v in enumerate(vals)} for dim, vals in labels.items()}


def _reconcile(group, labels: dict[str, list], axes: list[str]) -> None:
    """Bring every array to the shape ``labels`` give (and the coordinates to their values)."""
    for name, dims, dtype, _ in _arrays(labels, axes):
        arr = group[name]
        shape = tuple(len(labels[d]) for d in dims)
        if tuple(arr.shape) != shape:
            arr.resize(shape)
        if name in labels:
            want = np.asarray(labels[name], dtype=arr.dtype)
            if not np.array_equal(np.asarray(arr[...]), want):
                arr[...] = want


def open_store(path: Path, settings: dict, labels: dict[str, list], axes: list[str]) -> tuple[Store, str]:
    """Open the store at ``path`` for a grid (``settings``, ``labels`` of every dimension,
    ``axes``), creating it, or extending it when the grid adds values; `StoreError` when it
    cannot hold the grid. Returns the store and a note for the user ("" when unchanged)."""
    if not (path / ".zgroup").exists():
        if path.exists() and any(path.iterdir()):
            raise StoreError(f"{path} exists and is not a sweep store; give another --out")
        if path.exists():
            path.rmdir()
        return create_store(path, settings, labels, axes), f"new store {path}"
    zarr = _zarr()
    group = zarr.open_group(str(path), mode="r+", zarr_format=2)
    attrs = group.attrs.asdict()
    if attrs.get("format") != FORMAT:
        raise StoreError(f"{path} is not a sweep store of this version (format {shown(attrs.get('format'))})")
    old_settings, old_labels, old_axes = attrs["settings"], attrs["labels"], list(attrs["axes"])
    if sorted(old_axes) != sorted(axes):
        raise StoreError(f"the store {path} sweeps axes ({', '.join(old_axes)}), this grid ({', '.join(axes)}): "
                         "a store keeps its axes; give another --out for a new set of axes")
    for key, value in settings.items():
        old = old_settings.get(key)
        if key == "axes":
            continue
        if _canonical(old) != _canonical(value):
            raise StoreError(f"the store {path} was made with {key} = {shown(json.dumps(old, sort_keys=True), 80)}, "
                             f"this grid has {shown(json.dumps(value, sort_keys=True), 80)}: the points would not be "
                             "comparable; give another --out or the store's grid")
    _reconcile(group, old_labels, old_axes)  # undo an extension a killed process did not commit
    store = Store(path, group, old_labels, old_axes)
    new = {d: [v for v in vals if _key(v) not in store._index[d]] for d, vals in labels.items()}
    new = {d: v for d, v in new.items() if v}
    if not new:
        return store, ""
    extend(store, new)
    return store, "extended the store: " + "; ".join(f"{d} +{len(v)}" for d, v in new.items())


def open_dataset(path: Path):
    """The store as an `xarray.Dataset` (fill values as stored: NaN for numbers, -1 or 0
    codes, empty strings), sorted along every numeric dimension."""
    import xarray as xr  # deferred: the optional [sweep] extra

    path = Path(path)
    if path.name != STORE_NAME and (path / STORE_NAME).exists():
        path = path / STORE_NAME
    if not (path / ".zgroup").exists():
        raise StoreError(f"no sweep store at {path} (python -m verify sweep --grid GRID.json --out DIR makes one)")
    ds = xr.open_zarr(str(path), consolidated=False, mask_and_scale=False, zarr_format=2)
    labels = ds.attrs.get("labels", {})
    ds = ds.isel({d: slice(0, len(v)) for d, v in labels.items() if d in ds.dims})
    for dim in ds.dims:
        if ds[dim].dtype.kind in "if":
            ds = ds.sortby(dim)
    return ds


__all__ = ["Store", "StoreError", "open_store", "create_store", "open_dataset", "extend", "STATUS", "STORE_NAME",
           "VARIABLES", "LEVELS", "QUANTITIES", "LABEL_DIMS"]
