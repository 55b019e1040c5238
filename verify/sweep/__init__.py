"""Regime maps: sweeps of theory against simulation over grids of specs, on Dask, resumable.

``python -m verify sweep --grid GRID.json --out DIR`` runs every point of a grid of
`ModelSpec`s (`verify.sweep.grid`) as one Dask task each (`verify.sweep.tasks.run_point`:
theory at the best and the leading level, simulation with per-network standard errors,
relative errors, z-scores and the best level's verdict against its declared tolerance),
on a `distributed.LocalCluster` or any Dask scheduler (`verify.sweep.runner`), and writes
each point as it finishes into one labelled zarr store that xarray reads
(`verify.sweep.store`). ``python -m verify sweep --report DIR`` draws the maps and writes
the regime tables (`verify.sweep.maps`, `verify.sweep.regimes`). See docs/sweep.md.

Dask, xarray and zarr are the optional ``[sweep]`` extra (``pip install -e ".[sweep]"``);
they are imported only when a sweep runs or a store is read.
"""

from .grid import Grid, Point, load_grid, parse_grid, point_seed
from .runner import SweepSummary, sweep
from .store import STATUS, StoreError, open_dataset
from .tasks import run_point

__all__ = ["Grid", "Point", "load_grid", "parse_grid", "point_seed", "sweep", "SweepSummary", "open_dataset",
           "StoreError", "STATUS", "run_point"]
