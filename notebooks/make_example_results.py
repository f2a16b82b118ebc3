"""Writes notebooks/example_results.csv: a synthetic results table shaped like a tiny sweep's.

    python notebooks/make_example_results.py

The six tiny sizes of ``models`` at P = 1, 2, 4, 8, with their exact non-embedding parameter counts,
and losses drawn from a parallel scaling law plus 0.3% log-normal noise. The losses are invented: the
table shows the format a sweep writes and lets notebook 02 run in seconds; fit your own sweep's table
the same way. One run is marked failed, as a real sweep's table may have; the fitter skips it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.cost import ModelShape
from models.sizes import TINY_SIZES
from parscale_law import ParScaleLaw, write_results

# Invented, of the order a byte-level model of this size reaches: ~1.6 at 0.3M parameters.
EXAMPLE_LAW = ParScaleLaw(E=1.2, A=2.0e4, alpha=0.3, k=0.35)
NOISE = 0.003
TOKENS = 50_000_000
OUTPUT = Path(__file__).with_name("example_results.csv")


def example_results(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for size in TINY_SIZES:
        shape = ModelShape.from_size(size)
        for P in (1, 2, 4, 8):
            params = shape.non_embedding_params(P)
            loss = float(EXAMPLE_LAW.predict(params, P) * np.exp(NOISE * rng.standard_normal()))
            rows.append({"dataset": "synthetic-tiny", "size": size, "params": params, "P": P, "loss": round(loss, 5),
                         "tokens": TOKENS, "run_id": f"{size}-P{P}-s0", "seed": 0, "status": "done"})
    # A run that crashed: no loss, status failed.
    rows.append({**rows[-1], "loss": float("nan"), "run_id": f"{rows[-1]['size']}-P8-s1", "seed": 1, "status": "failed"})
    return pd.DataFrame(rows)


if __name__ == "__main__":
    write_results(example_results(), OUTPUT)
    print(f"wrote {OUTPUT}")
