"""Benchmark: the fast method against the paper's recipe, side by side in one process, and a
1000-resample bootstrap, pinned to one core. ``python -m parscale_law.benchmark [--repeats R]``."""

from __future__ import annotations

import argparse
import os
import statistics
import time

from .bootstrap import bootstrap
from .fit import fit
from .published import DATASETS, load_published


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m parscale_law.benchmark")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each method (median reported)")
    parser.add_argument("--resamples", type=int, default=1000)
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


def _run(args) -> None:
    print(f"{'data set':<16} {'paper s':>9} {'fast ms':>9} {'speed-up':>9} {'paper objective':>17} {'fast objective':>17} {'fast <= paper':>14}")
    for name in DATASETS:
        table = load_published(name)
        timings = {}
        for method in ("paper", "fast"):
            runs = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                result = fit(table, method=method)
                runs.append(time.perf_counter() - started)
            timings[method] = (statistics.median(runs), result.objective)
        (paper_s, paper_obj), (fast_s, fast_obj) = timings["paper"], timings["fast"]
        print(
            f"{name:<16} {paper_s:>9.2f} {fast_s * 1e3:>9.2f} {paper_s / fast_s:>8.0f}x "
            f"{paper_obj:>17.10e} {fast_obj:>17.10e} {str(fast_obj <= paper_obj + 1e-9):>14}"
        )
    for name in DATASETS:
        result = bootstrap(load_published(name), n=args.resamples, seed=0)
        print(f"bootstrap {name}: {args.resamples} resamples in {result.seconds:.2f} s on one core ({result.n_failed} failed)")


if __name__ == "__main__":
    main()
