"""`SimulationResult`: per-tap, per-position statistics of a run; JSON + .npz round trip;
`build_result` makes one from an `Accumulator`."""

from __future__ import annotations

import json
import math
import platform
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from theory import ModelSpec
from theory._outputs import atomic_path, atomic_write_text
from theory._tables import ELLIPSIS, elide, html_table, pandas_module, spec_summary, text_table
from theory.taps import parse_tap, tap_name

from .stats import Accumulator

# The arrays of a tap in a saved result (.npz), besides the optional ones of `TapStats`.
ARRAY_STATS = ("units", "n_values", "mean", "mean_se", "var", "var_se", "skewness", "kurtosis", "m2", "m3", "m4")
OPTIONAL_STATS = ("sum_sq", "sum_sq_se", "reservoir", "sum_sq_reservoir", "entropy", "entropy_se", "var_across_inputs")


@dataclass(frozen=True)
class TapStats:
    """Statistics of one tap, as arrays over the recorded positions (1-based ``positions``).

    ``mean``/``var`` describe one coordinate, pooled over the coordinates (and heads) of a
    position; for ``hook_attn_scores`` and ``hook_pattern`` one entry ``(m, n)`` pooled over
    keys ``n <= m``. ``mean_se``/``var_se`` are standard errors across independent units
    (networks when annealed, sequences when quenched); ``n`` is the number of units and
    ``n_values`` the number of pooled values. ``skewness``/``kurtosis`` (not excess) and the
    central moment sums ``m2, m3, m4`` are of the pooled values. For ``hook_pattern``,
    ``sum_sq``/``sum_sq_se`` estimate ``E[sum_{n<=m} a_mn^2]`` per head. ``reservoir``
    (K, P) holds raw values, one per unit and position, or None. ``entropy``/``entropy_se``
    (pattern, from `simulate.record` only): ``E[-sum_n a_mn ln a_mn]`` per head, in nats.
    ``var_across_inputs`` (`simulate.record(..., across_inputs=True)` only): the mean over
    coordinates ``c`` of the unbiased variance of ``x_{m,c}`` across units, the coordinate
    held fixed (``var`` adds the spread of the per-coordinate means).
    """

    tap: str
    positions: np.ndarray
    n: int
    n_values: np.ndarray
    mean: np.ndarray
    mean_se: np.ndarray
    var: np.ndarray
    var_se: np.ndarray
    skewness: np.ndarray
    kurtosis: np.ndarray
    m2: np.ndarray
    m3: np.ndarray
    m4: np.ndarray
    sum_sq: np.ndarray | None = None
    sum_sq_se: np.ndarray | None = None
    reservoir: np.ndarray | None = None
    sum_sq_reservoir: np.ndarray | None = None
    entropy: np.ndarray | None = None
    entropy_se: np.ndarray | None = None
    var_across_inputs: np.ndarray | None = None

    def index(self, m: int) -> int:
        hits = np.flatnonzero(self.positions == m)
        if not len(hits):
            raise KeyError(f"position {m} was not recorded; recorded positions: {_ranges(self.positions)}")
        return int(hits[0])

    def _table(self) -> tuple[list[str], list[list]]:
        """(columns, rows): var, its SE (and sum_sq, entropy for patterns) at the elided positions."""
        index = elide(range(len(self.positions)))
        columns = ["statistic"] + [ELLIPSIS if i is ELLIPSIS else f"m={int(self.positions[i])}" for i in index]
        named = [("mean", self.mean), ("var", self.var), ("var_se", self.var_se), ("sum_sq", self.sum_sq),
                 ("sum_sq_se", self.sum_sq_se), ("entropy", self.entropy)]
        rows = [[name] + [ELLIPSIS if i is ELLIPSIS else values[i] for i in index]
                for name, values in named if values is not None]
        return columns, rows

    def _caption(self) -> str:
        return f"{self.tap}: n = {self.n}, {len(self.positions)} positions"

    def __repr__(self) -> str:
        return f"TapStats({self._caption()})\n" + text_table(*self._table())

    def _repr_html_(self) -> str:
        return html_table(*self._table(), caption=self._caption())

    def at(self, m: int) -> dict[str, float]:
        """The JSON statistics of 1-based position ``m``."""
        i = self.index(m)
        out = {
            "mean": float(self.mean[i]),
            "mean_se": float(self.mean_se[i]),
            "var": float(self.var[i]),
            "var_se": float(self.var_se[i]),
            "n": int(self.n),
            "n_values": int(self.n_values[i]),
            "skewness": float(self.skewness[i]),
            "kurtosis": float(self.kurtosis[i]),
        }
        if self.sum_sq is not None:
            out["sum_sq"] = float(self.sum_sq[i])
            out["sum_sq_se"] = float(self.sum_sq_se[i])
        if self.entropy is not None:
            out["entropy"] = float(self.entropy[i])
            out["entropy_se"] = float(self.entropy_se[i])
        if self.var_across_inputs is not None:
            out["var_across_inputs"] = float(self.var_across_inputs[i])
        return out


def _ranges(positions: np.ndarray) -> str:
    p = list(map(int, positions))
    return f"{p[0]}..{p[-1]} ({len(p)} positions)" if len(p) > 8 else ", ".join(map(str, p))


def _json_number(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass
class SimulationResult:
    """What `simulate.run` returns: statistics per tap (dict-like) and the run's metadata.

    Index by full tap name, ``(name, layer)`` or ``name, layer``::

        result["blocks.0.attn.hook_z"].var        # np.ndarray over result.positions
        result["hook_z", 0].at(16)["var_se"]
        result["pattern", 0].sum_sq
    """

    spec: ModelSpec | None  # None for `simulate.record` of a model without a ModelSpec
    positions: np.ndarray
    stats: dict[str, TapStats]
    meta: dict[str, Any] = field(default_factory=dict)

    def _key(self, key: Any) -> str:
        name = tap_name(key) if isinstance(key, tuple) else (key if key.startswith("blocks.") else tap_name(key, None))
        if name not in self.stats:
            raise KeyError(f"tap {name!r} was not recorded; recorded: {', '.join(self.stats)}")
        return name

    def __getitem__(self, key: Any) -> TapStats:
        return self.stats[self._key(key)]

    def __contains__(self, key: Any) -> bool:
        try:
            self._key(key)
        except (KeyError, ValueError):
            return False
        return True

    def __iter__(self):
        return iter(self.stats)

    def __len__(self) -> int:
        return len(self.stats)

    @property
    def taps(self) -> list[str]:
        return list(self.stats)

    # ---------------------------------------------------------------- serialisation
    def _table(self) -> tuple[list[str], list[list]]:
        """(columns, rows): per tap, var (sum_sq for patterns) at the elided positions and n."""
        index = elide(range(len(self.positions)))
        columns = ["tap", "n", "statistic"] + [ELLIPSIS if i is ELLIPSIS else f"m={int(self.positions[i])}"
                                               for i in index]
        rows = []
        for tap, st in self.stats.items():
            name, values = ("sum_sq", st.sum_sq) if st.sum_sq is not None else ("var", st.var)
            rows.append([tap, str(st.n), name] + [ELLIPSIS if i is ELLIPSIS else values[i] for i in index])
        return columns, rows

    def _caption(self) -> str:
        unit = self.meta.get("unit", "sample")
        where = spec_summary(self.spec) if self.spec is not None else "a recorded model"
        return f"{len(self.stats)} taps x {len(self.positions)} positions, {unit}s; spec: {where}"

    def __repr__(self) -> str:
        return f"SimulationResult({self._caption()})\n" + text_table(*self._table())

    def _repr_html_(self) -> str:
        return html_table(*self._table(), caption="SimulationResult: " + self._caption())

    def to_dataframe(self):
        """A long pandas DataFrame: tap, layer, position, mean, mean_se, var, var_se, n (one row per tap
        and position)."""
        rows = [(tap, parse_tap(tap)[1], int(m), float(st.mean[i]), float(st.mean_se[i]), float(st.var[i]),
                 float(st.var_se[i]), int(st.n)) for tap, st in self.stats.items() for i, m in enumerate(st.positions)]
        return pandas_module().DataFrame(rows, columns=["tap", "layer", "position", "mean", "mean_se", "var", "var_se", "n"])

    def to_dict(self) -> dict[str, Any]:
        """``{"meta": {...}, "stats": {TAP: {"<m>": {"mean", "mean_se", "var", ...}}}}``."""
        stats = {}
        for tap, ts in self.stats.items():
            stats[tap] = {
                str(int(m)): {k: (_json_number(v) if isinstance(v, float) else v) for k, v in ts.at(int(m)).items()}
                for m in ts.positions
            }
        return {"meta": self.meta, "stats": stats}

    def save(self, path: str | Path) -> None:
        """Write ``path`` (JSON summaries) and ``path`` with suffix ``.npz`` (all arrays)."""
        path = Path(path)
        if path.suffix == ".npz":  # the arrays' file would overwrite the JSON
            raise ValueError(f"a result is saved to a .json path (its arrays go beside it as .npz), got {str(path)!r}")
        # arrays first, then the JSON that names them: each file is replaced atomically
        with atomic_path(path.with_suffix(".npz")) as tmp:
            np.savez(tmp, **self.arrays())
        atomic_write_text(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")

    def arrays(self) -> dict[str, np.ndarray]:
        """Every array, keyed ``"positions"`` and ``"{tap}/{stat}"``."""
        out = {"positions": self.positions}
        for tap, ts in self.stats.items():
            for name in ARRAY_STATS[1:] + OPTIONAL_STATS:
                value = getattr(ts, name)
                if value is not None:
                    out[f"{tap}/{name}"] = np.asarray(value)
            out[f"{tap}/units"] = np.asarray(ts.n)
        return out

    @classmethod
    def load(cls, path: str | Path) -> "SimulationResult":
        """Read a result written by `save` (the .npz beside it restores every array).

        JSON and ``np.load`` (with its default ``allow_pickle=False``) run no code from a file;
        a file that is not such a result (foreign, truncated, edited) is one ValueError naming it.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read simulation result {str(path)!r}: {err}") from None
        npz_path = path.with_suffix(".npz")
        arrays = None
        if npz_path.exists():
            try:
                with np.load(npz_path) as npz:
                    arrays = dict(npz)
            except Exception as err:  # noqa: BLE001 - not a zip, truncated, a pickle: the same remedy
                raise ValueError(
                    f"cannot read the arrays of simulation result {str(npz_path)!r} ({err}); save the result "
                    "again, or move the .npz aside to load the JSON summaries alone"
                ) from None
        try:
            return cls._from_saved(data, arrays)
        except (KeyError, IndexError, AttributeError, TypeError, ValueError) as err:
            raise ValueError(
                f"{str(path)!r} is not a simulation result written by SimulationResult.save "
                f"({type(err).__name__}: {err})"
            ) from None

    @classmethod
    def _from_saved(cls, data: dict, arrays: dict[str, np.ndarray] | None) -> "SimulationResult":
        """`load`'s parsing: ``data`` the JSON, ``arrays`` the .npz (None: JSON only)."""
        meta = data.get("meta", {})
        spec = ModelSpec.from_dict(meta["spec"]) if meta.get("spec") else None  # None: a recorded model
        stats = {}
        if arrays is not None:
            positions = arrays["positions"]
            for tap in data["stats"]:
                kw = {k: arrays.get(f"{tap}/{k}") for k in ARRAY_STATS[1:] + OPTIONAL_STATS}
                stats[tap] = TapStats(tap=tap, positions=positions, n=int(arrays[f"{tap}/units"]), **kw)
        else:  # JSON only: the moment sums and reservoirs are not there
            for tap, per_pos in data["stats"].items():
                ms = sorted(per_pos, key=int)
                positions = np.array([int(m) for m in ms])
                col = lambda k: np.array([np.nan if per_pos[m].get(k) is None else per_pos[m][k] for m in ms], dtype=float)  # noqa: E731
                is_pattern = parse_tap(tap)[0] == "attn.hook_pattern"
                nan = np.full(len(ms), np.nan)
                stats[tap] = TapStats(
                    tap=tap, positions=positions, n=int(per_pos[ms[0]]["n"]), n_values=col("n_values"),
                    mean=col("mean"), mean_se=col("mean_se"), var=col("var"), var_se=col("var_se"),
                    skewness=col("skewness"), kurtosis=col("kurtosis"), m2=nan, m3=nan, m4=nan,
                    sum_sq=col("sum_sq") if is_pattern else None, sum_sq_se=col("sum_sq_se") if is_pattern else None,
                    entropy=col("entropy") if is_pattern and "entropy" in per_pos[ms[0]] else None,
                    entropy_se=col("entropy_se") if is_pattern and "entropy" in per_pos[ms[0]] else None,
                )
            positions = next(iter(stats.values())).positions if stats else np.zeros(0, dtype=int)
        return cls(spec=spec, positions=positions, stats=stats, meta=meta)


def build_result(spec: ModelSpec | None, positions: np.ndarray, acc: Accumulator, stat_rows: list[tuple[str, str]],
                 taps: list[str], meta: dict[str, Any]) -> SimulationResult:
    """The `SimulationResult` of an accumulator whose rows are ``stat_rows`` (per tap: its
    ``"value"`` row, then ``"sum_sq"`` and ``"entropy"`` where the tap has them)."""
    final = acc.finalize()
    res = acc.reservoir_values()  # (R, K, P)
    index = {row: i for i, row in enumerate(stat_rows)}
    stats = {}
    for tap in taps:
        i = index[(tap, "value")]
        extra = {}
        if (tap, "sum_sq") in index:
            j = index[(tap, "sum_sq")]
            extra = {
                "sum_sq": final["mean"][j], "sum_sq_se": final["mean_se"][j],
                "sum_sq_reservoir": res[j] if acc.reservoir_size else None,
            }
        if (tap, "entropy") in index:  # rows `simulate.record` adds for the pattern
            k = index[(tap, "entropy")]
            extra.update(entropy=final["mean"][k], entropy_se=final["mean_se"][k])
        stats[tap] = TapStats(
            tap=tap, positions=positions, n=int(final["units"][i][0]), n_values=final["n_values"][i],
            mean=final["mean"][i], mean_se=final["mean_se"][i], var=final["var"][i], var_se=final["var_se"][i],
            skewness=final["skewness"][i], kurtosis=final["kurtosis"][i],
            m2=final["m2"][i], m3=final["m3"][i], m4=final["m4"][i],
            reservoir=res[i] if acc.reservoir_size else None, **extra,
        )
    return SimulationResult(spec=spec, positions=positions, stats=stats, meta=meta)


def versions() -> dict[str, str]:
    """The versions a result was made with (its ``meta["versions"]``)."""
    try:
        package = version("nope-theory")
    except PackageNotFoundError:
        package = "unknown"
    return {
        "nope-theory": package,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
