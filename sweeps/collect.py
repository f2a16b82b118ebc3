"""`python -m sweeps.collect SWEEP_DIR [--out FILE]`: the results table of a sweep, one row per finished run
(sweeps/grid/collect.py), from its cells' result.json files, their local wandb files (`--wandb-files`) or the
wandb API (`--wandb ENTITY/PROJECT [--group NAME]`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parscale_law.arguments import CommandParser, output_file
from parscale_law.errors import exits_on
from parscale_law.table import TABLE_SUFFIXES, write_results
from sweeps.grid.cells import check_sweep_dir
from sweeps.grid.collect import collect_runs, collect_wandb, collect_wandb_files, wandb_mode_of


def table_file(text: str) -> Path:
    """An argparse type: a results table to write, .csv or .parquet, in a folder that exists."""
    path = output_file(text)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise argparse.ArgumentTypeError(f"{text}: a results table is written as .csv or .parquet; name it so")
    return path


@exits_on(ValueError, RuntimeError)
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m sweeps.collect", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="the sweep directory (omit with --wandb)")
    parser.add_argument("--wandb-files", action="store_true", help="read SWEEP_DIR's local wandb files (no network)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read finished runs from the wandb API")
    parser.add_argument("--group", help="the wandb group (the grid) to read, with --wandb or --wandb-files")
    parser.add_argument("--out", type=table_file, help="CSV or Parquet file (default: SWEEP_DIR/results.csv)")
    args = parser.parse_args(argv)
    if args.wandb:
        table = collect_wandb(args.wandb, args.group)
    elif args.sweep_dir is None:
        raise ValueError("give the sweep folder (python -m sweeps.collect multirun/<grid>-<scale>), "
                         "or --wandb ENTITY/PROJECT")
    elif args.wandb_files:
        table = _from_wandb_files(args.sweep_dir, args.group)
    else:
        table = collect_runs(check_sweep_dir(args.sweep_dir))
    out = args.out or (args.sweep_dir / "results.csv" if args.sweep_dir else None)
    if out is None:
        raise ValueError("--out FILE is needed with --wandb and no sweep directory")
    write_results(table, out)
    print(f"{len(table)} finished runs -> {out}")
    return 0


def _from_wandb_files(folder: Path, group: str | None):
    """The rows in the wandb files below ``folder``; a folder without any says why (wandb disabled there)."""
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder; pass the sweep folder whose wandb files to read")
    if not any(folder.rglob("*.wandb")):
        mode = wandb_mode_of(folder)
        if mode == "disabled":
            raise ValueError(f"wandb was disabled in {folder} (wandb.mode=disabled), so it has no wandb files; "
                             f"collect from the run folders: python -m sweeps.collect {folder}")
        raise ValueError(f"no wandb files (*.wandb) below {folder}; collect from the run folders without "
                         "--wandb-files, or pass the folder the runs logged to")
    return collect_wandb_files(folder, group)


if __name__ == "__main__":
    sys.exit(main())
