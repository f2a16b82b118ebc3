"""The paper's published final losses, shipped with the package.

Source: Chen et al. 2025, "Parallel Scaling Law for Language Models" (arXiv 2505.10475), Tables
for Stack-V2-Python and the Pile: 6 sizes x P in {1, 2, 4, 8}, each trained on 42B tokens, with the
exact non-embedding parameter count N (ParScale prefixes and aggregator included).
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from .errors import UnknownNameError

DATASETS = ("stack-v2-python", "pile")

# The fits the paper prints in its Figure 2 (E, A, k, alpha, R^2), for checking a reproduction.
PAPER_FITS = {
    "stack-v2-python": {"E": 0.6912, "A": 1.131e7, "k": 0.3935, "alpha": 0.1894, "r2": 0.9978},
    "pile": {"E": 1.2888, "A": 1.974e8, "k": 0.3345, "alpha": 0.1963, "r2": 0.9987},
}


def load_published(dataset: str = "all") -> pd.DataFrame:
    """The paper's 48 (or one data set's 24) final losses as a results table."""
    if dataset not in (*DATASETS, "all"):
        raise UnknownNameError(f"unknown published data set {dataset!r}; choose one of {[*DATASETS, 'all']}")
    with resources.files(__package__).joinpath("data/published_losses.csv").open() as handle:
        table = pd.read_csv(handle)
    table["status"] = "done"
    table["tokens"] = 42_000_000_000
    if dataset != "all":
        table = table[table["dataset"] == dataset].reset_index(drop=True)
    return table
