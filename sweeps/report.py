"""`python -m sweeps.report SWEEP_DIR [--bootstrap N]`: the results table, the fit with bootstrap intervals, the
figures and a summary of a sweep that finished on a cluster (sweeps/grid/report.py; `python -m sweeps.launch`
runs the same at its end)."""

from __future__ import annotations

import sys
from pathlib import Path

from parscale_law.arguments import CommandParser, resamples, warn_if_few_resamples
from parscale_law.errors import exits_on
from sweeps.grid.cells import check_sweep_dir
from sweeps.grid.report import report


@exits_on(ValueError)
def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m sweeps.report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--bootstrap", type=resamples, default=1000, metavar="N",
                        help="resamples for the fit's intervals; 0 for none (default 1000)")
    args = parser.parse_args(argv)
    sweep_dir = check_sweep_dir(args.sweep_dir)
    if args.bootstrap:
        warn_if_few_resamples(args.bootstrap)
    return 0 if report(sweep_dir, args.bootstrap) else 1


if __name__ == "__main__":
    sys.exit(main())
