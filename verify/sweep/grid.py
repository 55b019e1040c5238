"""The grid of a sweep: a base spec, axes over any `ModelSpec` field, and the run settings.

A grid is JSON::

    {"base": {ModelSpec fields},
     "axes": {FIELD: [v1, v2, ...] | {"log": [lo, hi, n]} | {"linear": [lo, hi, n]}},
     "samples": N, "positions": [m, ...], "seed": S, "alpha": A, "device": "cpu"}

``positions`` (default: log-spaced, two per octave, with 1 and T: `verify.positions_for`),
``seed`` (default 0), ``alpha`` (Holm's family-wise rate of one point's checks, default
0.01) and ``device`` (default ``"cpu"``) are optional. The points are the Cartesian
product of the axes, in the order the axes are written. Any field of `ModelSpec`
(enumerated with `dataclasses.fields`, so new fields are axes as soon as they exist) can be
an axis; a point whose spec `ModelSpec` or verify's domain check refuses is *invalid*: it
is recorded with the reason and not run.

Seeds come from the point, never from its index: `point_seed` hashes the grid's seed and
the spec fields the grid gives the point (base and coordinates), so a point has the same
numbers in any grid, on any worker, in any order.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from theory import ModelSpec
from theory._domain import check_domain, check_structure
from theory._outputs import read_json_file, shown

from ..presets import positions_for

GRID_KEYS = ("base", "axes", "samples", "positions", "seed", "alpha", "device")
SPACINGS = ("log", "linear")
DEVICES = ("cpu", "cuda", "auto")
MAX_POINTS = 100_000  # a grid beyond this is almost certainly a typo in n
MAX_GRID_BYTES = 1 << 20
PER_OCTAVE = 2  # default positions: verify.positions_for(T, 2)

# The paper's configuration (GPT-2 small at initialisation: every sigma 0.02, d = 768,
# 12 heads, eps 1e-5, T = 1024, 12 layers): ModelSpec's defaults, marked on every map.
PAPER_SPEC = ModelSpec()


def spec_fields() -> dict[str, Any]:
    """Every `ModelSpec` field and its default, read from the dataclass (never a fixed list)."""
    return {f.name: getattr(PAPER_SPEC, f.name) for f in dataclasses.fields(ModelSpec)}


def _is_integer_field(name: str) -> bool:
    """An integer field: its default is an int, or it is declared ``int | None`` (d_mlp, n_kv_heads, vocab_size)."""
    default = spec_fields()[name]
    if isinstance(default, bool):
        return False
    if isinstance(default, numbers.Integral):
        return True
    declared = {f.name: str(f.type) for f in dataclasses.fields(ModelSpec)}[name]
    return declared.replace(" ", "") in ("int|None", "Optional[int]")


def _scalar(value: Any, where: str) -> Any:
    """A JSON scalar as a coordinate value (number, string, boolean)."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real) and math.isfinite(float(value)):
        return float(value)
    raise ValueError(f"{where}: axis values must be numbers, strings or true/false; got {shown(value)}")


def _spaced(name: str, spacing: str, args: Any) -> list:
    where = f"axes.{name}.{spacing}"
    if not isinstance(args, list) or len(args) != 3:
        raise ValueError(f"{where} must be [lo, hi, n] (n points from lo to hi); got {shown(args)}")
    lo, hi, n = args
    for label, v in (("lo", lo), ("hi", hi)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
            raise ValueError(f"{where}: {label} must be a finite number; got {shown(v)}")
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"{where}: n must be an integer >= 1; got {shown(n)}")
    if spacing == "log":
        if lo <= 0 or hi <= 0:
            raise ValueError(f"{where}: lo and hi must be > 0 for log spacing; got [{lo}, {hi}]")
        values = np.geomspace(float(lo), float(hi), int(n)) if n > 1 else np.array([float(lo)])
    else:
        values = np.linspace(float(lo), float(hi), int(n)) if n > 1 else np.array([float(lo)])
    if _is_integer_field(name):
        values = list(dict.fromkeys(int(round(v)) for v in values))  # rounding may repeat a value: keep it once
    else:
        values = [float(f"{v:.12g}") for v in values]  # stable decimal values: 0.1, not 0.10000000000000002
    return values


def _axis_values(name: str, spec: Any) -> list:
    if isinstance(spec, list):
        if not spec:
            raise ValueError(f"axes.{name}: give at least one value")
        values = [_scalar(v, f"axes.{name}") for v in spec]
    elif isinstance(spec, dict):
        if len(spec) != 1 or next(iter(spec)) not in SPACINGS:
            raise ValueError(f"axes.{name} must be a list of values, {{\"log\": [lo, hi, n]}} or "
                             f"{{\"linear\": [lo, hi, n]}}; got {shown(spec)}")
        spacing = next(iter(spec))
        values = _spaced(name, spacing, spec[spacing])
    else:
        raise ValueError(f"axes.{name} must be a list of values, {{\"log\": [lo, hi, n]}} or "
                         f"{{\"linear\": [lo, hi, n]}}; got {shown(spec)}")
    kinds = {_kind(v) for v in values}
    if len(kinds) > 1:
        raise ValueError(f"axes.{name} mixes {', '.join(sorted(kinds))} values; one kind per axis")
    out = []
    for v in values:  # first occurrence wins; 16 and 16.0 are one value
        if not any(v == u and _kind(v) == _kind(u) for u in out):
            out.append(v)
    return out


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, str):
        return "string"
    return "number"


@dataclass(frozen=True)
class Point:
    """One grid point: its index along each axis, its coordinates, and its spec or the reason
    it has none (``invalid``)."""

    index: tuple[int, ...]
    coords: dict
    fields: dict  # the spec fields the grid gives this point (base and coordinates)
    spec: ModelSpec | None
    invalid: str = ""

    @property
    def valid(self) -> bool:
        return self.spec is not None


@dataclass(frozen=True)
class Grid:
    """A parsed grid (see the module docstring)."""

    base: dict
    axes: dict  # field -> list of values (ordered)
    samples: int
    positions: tuple[int, ...] | None
    seed: int
    alpha: float
    device: str

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(v) for v in self.axes.values())

    @property
    def size(self) -> int:
        return int(np.prod(self.shape)) if self.axes else 1

    def to_dict(self) -> dict:
        return {"base": self.base, "axes": self.axes, "samples": self.samples,
                "positions": list(self.positions) if self.positions is not None else None,
                "seed": self.seed, "alpha": self.alpha, "device": self.device}

    def settings(self) -> dict:
        """What every point of a store must share (everything but the axes' values)."""
        out = self.to_dict()
        out["axes"] = list(self.axes)
        return out

    def points(self) -> list[Point]:
        """Every point, in the product order of the axes (invalid ones with their reason)."""
        names = list(self.axes)
        out = []
        for index in itertools.product(*(range(len(v)) for v in self.axes.values())):
            coords = {n: self.axes[n][i] for n, i in zip(names, index)}
            fields = {**self.base, **coords}
            spec, reason = checked_spec(fields)
            if spec is not None:
                fields = {k: _normal(getattr(spec, k)) for k in fields}
            out.append(Point(tuple(index), coords, fields, spec, reason))
        return out

    def positions_of(self, spec: ModelSpec) -> list[int]:
        """The query positions of a point: the grid's (those <= T), else verify's log spacing."""
        t = int(spec.seq_len)
        if self.positions is None:
            return positions_for(t, PER_OCTAVE)
        return [m for m in self.positions if m <= t] or [1]


def _normal(value: Any) -> Any:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    return float(value)


def checked_spec(fields: dict, *, numbers_too: bool = False) -> tuple[ModelSpec | None, str]:
    """``(spec, "")`` for a spec verify can run, else ``(None, reason)``: the reason
    `ModelSpec` or theory's structural domain check gives (positional embeddings, a finite
    vocabulary, ...). ``numbers_too`` adds the numeric half of theory's domain check (float64
    range, the softmax quadrature's error: ~40 ms a spec, so the worker does it, `run_point`)."""
    try:
        spec = ModelSpec.from_dict(dict(fields))
        check_structure(spec)
        if numbers_too:
            check_domain(spec, evaluate=True, level="best")
    except (ValueError, TypeError) as err:
        return None, " ".join(str(err).split())[:400]
    return spec, ""


def point_seed(grid_seed: int, fields: dict) -> int:
    """A 60-bit seed from the grid's seed and the point's spec fields (canonical JSON,
    SHA-256): the same point gets the same seed in any grid, worker or order."""
    text = json.dumps({"seed": int(grid_seed), "spec": fields}, sort_keys=True, separators=(",", ":"))
    return int(hashlib.sha256(text.encode()).hexdigest()[:15], 16)


def _int(data: dict, key: str, default: int | None, minimum: int) -> int:
    value = data.get(key, default)
    if value is None or isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"grid: {key} must be an integer >= {minimum}; got {shown(value)}")
    return int(value)


def parse_grid(data: Any) -> Grid:
    """A `Grid` from the JSON object; ValueError naming the key and the allowed values."""
    if not isinstance(data, dict):
        raise ValueError(f"grid: must be a JSON object with keys {', '.join(GRID_KEYS)}; got {type(data).__name__}")
    unknown = sorted(set(data) - set(GRID_KEYS), key=str)
    if unknown:
        raise ValueError(f"grid: unknown key(s) {', '.join(shown(k, 40) for k in unknown[:5])}; "
                         f"allowed keys are {', '.join(GRID_KEYS)}")
    fields = spec_fields()
    base = data.get("base", {})
    if not isinstance(base, dict):
        raise ValueError(f"grid: base must be an object of ModelSpec fields; got {shown(base)}")
    axes_in = data.get("axes")
    if not isinstance(axes_in, dict) or not axes_in:
        raise ValueError("grid: axes must be a non-empty object {FIELD: values}; fields are "
                         + ", ".join(fields))
    for where, names in (("base", base), ("axes", axes_in)):
        bad = [k for k in names if k not in fields]
        if bad:
            raise ValueError(f"grid: {where}.{shown(bad[0], 40)} is not a ModelSpec field; allowed fields are "
                             + ", ".join(fields))
    both = [k for k in axes_in if k in base]
    if both:
        raise ValueError(f"grid: {both[0]} is both in base and in axes; give it in one place")
    axes = {name: _axis_values(name, spec) for name, spec in axes_in.items()}
    samples = _int(data, "samples", None, 2)
    seed = _int(data, "seed", 0, 0)
    alpha = data.get("alpha", 0.01)
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < alpha < 1:
        raise ValueError(f"grid: alpha must be a number in (0, 1); got {shown(alpha)}")
    device = data.get("device", "cpu")
    if device not in DEVICES:
        raise ValueError(f"grid: device must be one of {', '.join(DEVICES)}; got {shown(device)}")
    positions = data.get("positions")
    if positions is not None:
        if not isinstance(positions, list) or not positions or any(
                isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1 for m in positions):
            raise ValueError(f"grid: positions must be a non-empty list of integers >= 1; got {shown(positions)}")
        positions = tuple(sorted({int(m) for m in positions}))
    grid = Grid(base=dict(base), axes=axes, samples=samples, positions=positions, seed=seed, alpha=float(alpha),
                device=device)
    if grid.size > MAX_POINTS:
        raise ValueError(f"grid: {grid.size} points (axes {' x '.join(map(str, grid.shape))}); at most {MAX_POINTS}")
    return grid


def load_grid(path: str) -> Grid:
    """Read and parse a grid file (at most 1 MiB of UTF-8 JSON)."""
    data = read_json_file(path, "grid file", MAX_GRID_BYTES)
    return parse_grid(data)


__all__ = ["Grid", "Point", "parse_grid", "load_grid", "point_seed", "checked_spec", "spec_fields", "PAPER_SPEC",
           "GRID_KEYS"]
