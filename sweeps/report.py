"""`python -m sweeps.report SWEEP_DIR [--bootstrap N]`: the results table, the fit with bootstrap intervals, the
figures and a summary of a sweep that finished on a cluster (sweeps/grid/report.py; `python -m sweeps.launch`
runs the same at its end)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from parscale_law.errors import exits_on
from sweeps.grid.report import report


@exits_on(ValueError)
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--bootstrap", type=int, default=1000)
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        raise ValueError(f"{args.sweep_dir} is not a directory; pass the sweep directory the launcher printed")
    return 0 if report(args.sweep_dir, args.bootstrap) else 1


if __name__ == "__main__":
    sys.exit(main())
