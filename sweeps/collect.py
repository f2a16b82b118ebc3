"""`python -m sweeps.collect SWEEP_DIR [--out FILE]` builds the results table (one row per finished run,
the contract in parscale_law.table) from the cells' result.json files; with `--wandb ENTITY/PROJECT
--group NAME` it reads the same rows from the wandb API instead, for runs logged on another machine (each
finished run stores its row in the wandb run summary)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from parscale_law.table import RESULT_COLUMNS, write_results


def collect_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """The results table of every finished run below ``sweep_dir``, sorted by data set, params and P."""
    rows = [json.loads(path.read_text()) for path in sorted(Path(sweep_dir).rglob("result.json"))]
    return _table(rows)


def rows_from_wandb(runs: Iterable) -> list[dict]:
    """Result rows from wandb runs (objects with ``summary`` and ``id``), finished runs only."""
    rows = []
    for run in runs:
        summary = dict(run.summary)
        if summary.get("status") != "done":
            continue
        row = {column: summary[column] for column in RESULT_COLUMNS if column in summary}
        row.setdefault("run_id", run.id)
        rows.append(row)
    return rows


def collect_wandb(path: str, group: str | None = None) -> pd.DataFrame:
    """The results table from the wandb API: ``path`` is ENTITY/PROJECT, ``group`` the grid's group."""
    try:
        import wandb
    except ImportError:
        raise RuntimeError("wandb is not installed; pip install wandb, or collect from the run directories") from None
    try:
        runs = list(wandb.Api().runs(path, filters={"group": group} if group else None))
    except Exception as error:  # wandb raises its own types for network and authentication failures
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(f"wandb API failed for {path}: {first_line}; check the network, WANDB_API_KEY and the path") from None
    return _table(rows_from_wandb(runs))


def _table(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    table = pd.DataFrame(rows)
    ordered = [c for c in RESULT_COLUMNS if c in table.columns] + [c for c in table.columns if c not in RESULT_COLUMNS]
    sort = [c for c in ("dataset", "params", "P", "seed") if c in table.columns]
    return table[ordered].sort_values(sort).reset_index(drop=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.collect", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, nargs="?", help="the sweep directory (omit with --wandb)")
    parser.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read finished runs from the wandb API")
    parser.add_argument("--group", help="the wandb group (the grid) to read, with --wandb")
    parser.add_argument("--out", type=Path, help="CSV or Parquet file (default: SWEEP_DIR/results.csv)")
    args = parser.parse_args(argv)
    try:
        if args.wandb:
            table = collect_wandb(args.wandb, args.group)
        elif args.sweep_dir is not None and args.sweep_dir.is_dir():
            table = collect_runs(args.sweep_dir)
        else:
            raise ValueError(f"{args.sweep_dir} is not a directory; pass the sweep directory, or --wandb ENTITY/PROJECT")
        out = args.out or (args.sweep_dir / "results.csv" if args.sweep_dir else None)
        if out is None:
            raise ValueError("--out FILE is needed with --wandb and no sweep directory")
    except (ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    write_results(table, out)
    print(f"{len(table)} finished runs -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
