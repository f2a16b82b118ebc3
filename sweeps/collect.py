"""`python -m sweeps.collect SWEEP_DIR [--out FILE]`: the results table of a sweep, one row per finished run
(sweeps/grid/collect.py), from its cells' result.json files, their local wandb files (`--wandb-files`) or the
wandb API (`--wandb ENTITY/PROJECT [--group NAME]`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parscale_law.errors import exits_on
from parscale_law.table import write_results
from sweeps.grid.collect import collect_runs, collect_wandb, collect_wandb_files


@exits_on(ValueError, RuntimeError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.collect", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="the sweep directory (omit with --wandb)")
    parser.add_argument("--wandb-files", action="store_true", help="read SWEEP_DIR's local wandb files (no network)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read finished runs from the wandb API")
    parser.add_argument("--group", help="the wandb group (the grid) to read, with --wandb or --wandb-files")
    parser.add_argument("--out", type=Path, help="CSV or Parquet file (default: SWEEP_DIR/results.csv)")
    args = parser.parse_args(argv)
    if args.wandb:
        table = collect_wandb(args.wandb, args.group)
    elif args.sweep_dir is not None and args.sweep_dir.is_dir():
        table = collect_wandb_files(args.sweep_dir, args.group) if args.wandb_files else collect_runs(args.sweep_dir)
    else:
        raise ValueError(f"{args.sweep_dir} is not a directory; pass the sweep directory, or --wandb ENTITY/PROJECT")
    out = args.out or (args.sweep_dir / "results.csv" if args.sweep_dir else None)
    if out is None:
        raise ValueError("--out FILE is needed with --wandb and no sweep directory")
    write_results(table, out)
    print(f"{len(table)} finished runs -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
