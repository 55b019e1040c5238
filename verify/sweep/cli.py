"""``python -m verify sweep``: run a grid, or draw the maps of a finished store.

    python -m verify sweep --grid GRID.json --out DIR [--scheduler tcp://HOST:8786] [--workers N]
                           [--no-retry] [--quiet]
    python -m verify sweep --report DIR [--x FIELD] [--y FIELD] [--at FIELD=VALUE ...]
                           [--taps TAP@LAYER,...] [--position M] [--maps DIR2]

Exit status: 0 every point finished or invalid (or the maps written), 1 a point failed,
2 bad input (one line on stderr, no traceback), 130 interrupted.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from theory._argparse import OneLineParser, UsageError, interrupted, usage_error
from theory._guard import guarded

from .grid import load_grid
from .regimes import write_maps
from .runner import sweep

EXTRA = 'the sweep needs the optional [sweep] extra (Dask, xarray, zarr): pip install -e ".[sweep]"'


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m verify sweep", error_prefix="verify sweep",
        description="Sweep theory against simulation over a grid of specs on Dask (one task per point), "
        "writing each point as it finishes to DIR/sweep.zarr (resumable); or (--report) draw the regime maps "
        "and tables of a store.",
        epilog="Exit status: 0 done, 1 a point failed, 2 bad input, 130 interrupted. See docs/sweep.md.")
    parser.add_argument("--grid", help="grid JSON: {base, axes, samples, positions, seed, alpha, device}")
    parser.add_argument("--out", help="output folder of the sweep (the store DIR/sweep.zarr and grid.json)")
    parser.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://HOST:8786); "
                        "default: a LocalCluster on this machine")
    parser.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2), "
                        "one thread each")
    parser.add_argument("--no-retry", action="store_true", help="do not rerun points that failed before")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    parser.add_argument("--report", metavar="DIR", help="draw the maps and tables of the sweep in DIR")
    parser.add_argument("--x", help="map axis across (default: the first numeric axis)")
    parser.add_argument("--y", help="map axis up (default: the next numeric axis)")
    parser.add_argument("--at", action="append", default=[], metavar="FIELD=VALUE",
                        help="hold another axis at this value (default: the value nearest the paper's)")
    parser.add_argument("--taps", help="taps to map, TAP@LAYER comma-separated (default: the main taps at the "
                        "first and the last layer)")
    parser.add_argument("--position", type=int, help="map at this query position (default: the largest "
                        "|relative error| over positions)")
    parser.add_argument("--maps", help="where the maps go (default DIR/maps)")
    return parser




@guarded("verify sweep")
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:
        return int(stop.code or 0)
    try:
        return _report(args) if args.report else _sweep(args)
    except ValueError as err:  # UsageError; grids, stores, specs: the message names the field
        return usage_error("verify sweep", err)
    except ImportError as err:
        return usage_error("verify sweep", f"{EXTRA} ({err})")
    except KeyboardInterrupt:
        return interrupted("verify sweep", "the finished points are in the store: rerun the command to go on")


def _sweep(args) -> int:
    if not args.grid or not args.out:
        raise UsageError("give --grid GRID.json and --out DIR (or --report DIR for the maps)")
    if args.workers < 1:
        raise UsageError(f"--workers must be an integer >= 1, got {args.workers}")
    grid = load_grid(args.grid)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file; give a folder")
    _check_extra()
    summary = sweep(grid, out, scheduler=args.scheduler, workers=args.workers, retry_failed=not args.no_retry,
                    progress=not args.quiet)
    if summary.note and not args.quiet:
        print(f"verify sweep: {summary.note}", file=sys.stderr)
    print(summary.line())
    for line in summary.errors[:5]:
        print(f"  failed {line}")
    return 1 if summary.failed else 0


def _check_extra() -> None:
    missing = [name for name in ("dask", "distributed", "xarray", "zarr") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"{EXTRA} (missing: {', '.join(missing)})")


def _report(args) -> int:
    _check_extra()
    at = {}
    for item in args.at:
        if "=" not in item:
            raise UsageError(f"--at must be FIELD=VALUE, got {item!r}")
        name, value = item.split("=", 1)
        at[name] = value
    taps = [t.strip() for t in args.taps.split(",") if t.strip()] if args.taps else None
    written = write_maps(Path(args.report), maps=Path(args.maps) if args.maps else None, x=args.x, y=args.y, at=at,
                         taps=taps, position=args.position)
    print(f"verify sweep: wrote {len(written)} files to {Path(written[0]).parent if written else args.report}")
    return 0


__all__ = ["main", "build_parser"]
