"""How often the bootstrap's intervals hold the truth, measured on simulated grids.

    python -m parscale_law.coverage                                   # 50 simulations per regime, 200 resamples
    python -m parscale_law.coverage --simulations 20 --resamples 100 --schemes row,parametric

Each simulation draws a Pile-shaped grid (the paper's 24 Pile runs: six sizes x P = 1, 2, 4, 8, their
exact N) from the paper's Pile fit with ``simulate``, in two regimes:

- ``size offsets``: a per-size offset of sd 0.003 in log loss shared by all P of a size, plus per-run
  noise of sd 0.001 (residuals clustered by size, as the published runs show);
- ``iid``: per-run noise only, sd 0.002;

then computes the 95% intervals of alpha, E, k and the predicted loss at N = 1.1e10 (2.5x the largest N)
at P = 1 and 8 with each scheme, and counts how many hold the truth. Simulation i draws its data with seed
``seed + i`` and bootstraps with seed i; the report says how many simulations and resamples were run.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Mapping, Sequence

import pandas as pd

from .bootstrap import bootstrap, prediction_name
from .law import ParScaleLaw
from .published import PAPER_FITS, load_published
from .resample import SCHEMES
from .simulate import simulate

PILE_TRUTH = ParScaleLaw(**{name: PAPER_FITS["pile"][name] for name in ("E", "A", "alpha", "k")})
REGIMES: dict[str, dict[str, float]] = {
    "size offsets": {"size_offset": 0.003, "noise": 0.001},
    "iid": {"size_offset": 0.0, "noise": 0.002},
}
PREDICT_AT = ((1.1e10, 1.0), (1.1e10, 8.0))
QUANTITIES = ("alpha", "E", "k")


def coverage(
    truth: ParScaleLaw = PILE_TRUTH,
    grid: pd.DataFrame | None = None,
    regimes: Mapping[str, Mapping[str, float]] = REGIMES,
    schemes: Sequence[str] = ("row", "size", "parametric"),
    simulations: int = 50,
    resamples: int = 200,
    seed: int = 0,
    predict_at: Sequence[tuple[float, float]] = PREDICT_AT,
    level: float = 0.95,
) -> pd.DataFrame:
    """One row per (regime, scheme, quantity): the share of simulations whose interval holds the truth,
    the median interval width, and that width over the row scheme's (when the row scheme is run)."""
    grid = load_published("pile") if grid is None else grid
    quantities = list(QUANTITIES) + [prediction_name(point) for point in predict_at]
    truth_values = {"alpha": truth.alpha, "E": truth.E, "k": truth.k}
    truth_values.update({prediction_name(point): float(truth.predict(*point)) for point in predict_at})
    records = []
    for regime, noise in regimes.items():
        for i in range(simulations):
            table = simulate(truth, grid, seed=seed + i, **noise)
            for scheme in schemes:
                boot = bootstrap(table, n=resamples, seed=i, scheme=scheme, predict_at=predict_at, level=level)
                for name in quantities:
                    low, high = boot.interval(name)
                    records.append({"regime": regime, "scheme": scheme, "quantity": name, "simulation": i,
                                    "covered": low <= truth_values[name] <= high, "width": high - low,
                                    "at_bound": boot.fraction_at_bound})
    runs = pd.DataFrame(records)
    summary = runs.groupby(["regime", "scheme", "quantity"], sort=False).agg(
        coverage=("covered", "mean"), median_width=("width", "median"), fraction_at_bound=("at_bound", "mean"))
    summary = summary.reset_index()
    if "row" in schemes:
        row_width = summary[summary["scheme"] == "row"].set_index(["regime", "quantity"])["median_width"]
        summary["width_vs_row"] = [
            w / row_width[(r, q)]
            for r, q, w in zip(summary["regime"], summary["quantity"], summary["median_width"], strict=True)
        ]
    summary.attrs.update(simulations=simulations, resamples=resamples, seed=seed, level=level)
    return summary


def table_text(summary: pd.DataFrame) -> str:
    """Coverage per quantity (columns) for each regime and scheme (rows), widths against the row scheme's."""
    lines = []
    quantities = list(dict.fromkeys(summary["quantity"]))
    header = f"{'regime':<13} {'scheme':<11} " + " ".join(f"{q:>20}" for q in quantities)
    lines.append(header)
    for (regime, scheme), rows in summary.groupby(["regime", "scheme"], sort=False):
        rows = rows.set_index("quantity")
        cells = []
        for q in quantities:
            cell = f"{rows.loc[q, 'coverage']:.2f}"
            if "width_vs_row" in rows:
                cell += f" (w {rows.loc[q, 'width_vs_row']:.2f}x)"
            cells.append(f"{cell:>20}")
        lines.append(f"{regime:<13} {scheme:<11} " + " ".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m parscale_law.coverage", description=__doc__.split("\n\n")[0])
    parser.add_argument("--simulations", type=int, default=50)
    parser.add_argument("--resamples", type=int, default=200, help="bootstrap resamples per interval")
    parser.add_argument("--schemes", default="row,size,parametric", help=f"comma-separated, of {list(SCHEMES)}")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    started = time.process_time()
    summary = coverage(schemes=args.schemes.split(","), simulations=args.simulations,
                       resamples=args.resamples, seed=args.seed)
    print(f"95% interval coverage on Pile-shaped grids: {args.simulations} simulations per regime (data seeds "
          f"{args.seed}..{args.seed + args.simulations - 1}), {args.resamples} resamples each; "
          "(w Nx): median width over the row scheme's")
    print(table_text(summary))
    widths = summary.pivot_table(index=["regime", "scheme"], columns="quantity", values="median_width", sort=False)
    print("\nmedian widths:\n" + widths.to_string(float_format=lambda v: f"{v:.4g}"))
    print(f"\n{time.process_time() - started:.0f} s CPU on one core")


if __name__ == "__main__":
    main()
