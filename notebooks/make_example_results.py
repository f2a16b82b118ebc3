"""Writes notebooks/example_results.csv: a synthetic results table shaped like a tiny sweep's.

    python notebooks/make_example_results.py

The six tiny sizes of ``models`` at P = 1, 2, 4, 8, with their exact non-embedding parameter counts,
and losses drawn by ``parscale_law.simulate`` from a parallel scaling law with a per-size offset (sd 0.002
in log loss, shared by all P of a size, as real grids show) and per-run noise (sd 0.002). The losses are
invented: the table shows the format a sweep writes and lets notebook 02 run in seconds; fit your own
sweep's table the same way. One run is marked failed, as a real sweep's table may have; the fitter skips it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cost import ModelShape
from models.sizes import TINY_SIZES
from parscale_law import RESULT_COLUMNS, ParScaleLaw, simulate, write_results

# Invented, of the order a byte-level model of this size reaches: ~1.6 at 0.3M parameters.
EXAMPLE_LAW = ParScaleLaw(E=1.2, A=2.0e4, alpha=0.3, k=0.35)
NOISE, SIZE_OFFSET = 0.002, 0.002
TOKENS = 50_000_000
OUTPUT = Path(__file__).with_name("example_results.csv")


def example_results(seed: int = 0) -> pd.DataFrame:
    design = pd.DataFrame([
        {"size": size, "params": ModelShape.from_size(size).non_embedding_params(P), "P": P, "tokens": TOKENS}
        for size in TINY_SIZES for P in (1, 2, 4, 8)
    ])
    table = simulate(EXAMPLE_LAW, design, noise=NOISE, size_offset=SIZE_OFFSET, seed=seed, dataset="synthetic-tiny")
    table["loss"] = table["loss"].round(5)
    # A run that crashed: no loss, status failed.
    crashed = table.iloc[[-1]].assign(loss=np.nan, seed=1, run_id=lambda t: t["run_id"].str.replace("-s0", "-s1"),
                                      status="failed")
    table = pd.concat([table, crashed], ignore_index=True)
    return table[[column for column in RESULT_COLUMNS if column in table.columns]]


if __name__ == "__main__":
    write_results(example_results(), OUTPUT)
    print(f"wrote {OUTPUT}")
