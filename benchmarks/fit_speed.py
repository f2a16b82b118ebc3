"""Benchmark, pinned to one core, measured side by side in one process:

1. the fast method against the paper's recipe (time, and the objective each reaches);
2. 1000-resample bootstraps with each scheme (CPU seconds, so other processes on the core do not count), the
   resamples solved together (the default) and refitted one by one, each as a count of single fast fits;
3. the coverage of each scheme's 95% intervals on simulated Pile-shaped grids (``parscale_law.coverage``).

``python -m benchmarks.fit_speed [--repeats R] [--resamples N] [--simulations S] [--coverage-resamples M]``
(``--simulations 0`` skips the coverage study, which takes most of the time).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from parscale_law.bootstrap import bootstrap
from parscale_law.coverage import coverage, table_text
from parscale_law.fit import fit
from parscale_law.published import DATASETS, load_published

BOOTSTRAP_SCHEMES = ("parametric", "row", "size")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fit_speed")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each method (median reported)")
    parser.add_argument("--resamples", type=int, default=1000, help="resamples of the timed bootstraps")
    parser.add_argument("--simulations", type=int, default=50, help="simulated grids per regime for coverage (0: skip)")
    parser.add_argument("--coverage-resamples", type=int, default=200,
                        help="resamples per interval in the coverage study")
    args = parser.parse_args(argv)
    pinned = hasattr(os, "sched_setaffinity")
    if pinned:
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})
    try:
        _run(args)
    finally:
        if pinned:
            os.sched_setaffinity(0, cores)


def _fast_fit_seconds(table, repeats: int = 50) -> float:
    """The median CPU seconds of one fast fit, over enough repeats for a millisecond-scale time."""
    runs = []
    for _ in range(repeats):
        started = time.process_time()
        fit(table)
        runs.append(time.process_time() - started)
    return statistics.median(runs)


def _run(args) -> None:
    print(f"{'data set':<16} {'paper s':>9} {'fast ms':>9} {'speed-up':>9} {'paper objective':>17} "
          f"{'fast objective':>17} {'fast <= paper':>14}")
    one_fit = {}
    for name in DATASETS:
        table = load_published(name)
        timings = {}
        for method in ("paper", "fast"):
            runs = []
            for _ in range(args.repeats):
                started = time.process_time()
                result = fit(table, method=method)
                runs.append(time.process_time() - started)
            timings[method] = (statistics.median(runs), result.objective)
        (paper_s, paper_obj), (fast_s, fast_obj) = timings["paper"], timings["fast"]
        one_fit[name] = _fast_fit_seconds(table)
        print(
            f"{name:<16} {paper_s:>9.2f} {fast_s * 1e3:>9.2f} {paper_s / fast_s:>8.0f}x "
            f"{paper_obj:>17.10e} {fast_obj:>17.10e} {str(fast_obj <= paper_obj + 1e-9):>14}"
        )
    for name in DATASETS:
        for scheme in BOOTSTRAP_SCHEMES:
            seconds = {}
            for batched in (True, False):
                started = time.process_time()
                result = bootstrap(load_published(name), n=args.resamples, seed=0, scheme=scheme, batched=batched)
                seconds[batched] = time.process_time() - started
            fits = {batched: value / one_fit[name] for batched, value in seconds.items()}
            print(f"bootstrap {name} ({scheme}): {args.resamples} resamples in {seconds[True]:.2f} s CPU = "
                  f"{fits[True]:.0f} fits (one by one: {seconds[False]:.2f} s = {fits[False]:.0f} fits; "
                  f"{seconds[False] / seconds[True]:.1f}x); {result.n_failed} failed, "
                  f"{result.fraction_at_bound:.1%} at a bound")
    if args.simulations:
        summary = coverage(simulations=args.simulations, resamples=args.coverage_resamples)
        print(f"\n95% interval coverage, {args.simulations} Pile-shaped simulations per regime "
              f"(data seeds 0..{args.simulations - 1}), "
              f"{args.coverage_resamples} resamples each; (w Nx): median width over the row scheme's")
        print(table_text(summary))


if __name__ == "__main__":
    main()
