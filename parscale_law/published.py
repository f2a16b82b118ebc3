"""The paper's published final losses, shipped with the package.

Source: Chen et al. 2025, "Parallel Scaling Law for Language Models" (arXiv 2505.10475), Tables
for Stack-V2-Python and the Pile: 6 sizes x P in {1, 2, 4, 8}, each trained on 42B tokens, with the
exact non-embedding parameter count N (ParScale prefixes and aggregator included).
"""

from __future__ import annotations

import math
from importlib import resources

import pandas as pd

from .errors import UnknownNameError

DATASETS = ("stack-v2-python", "pile")
# Every data set load_published knows: the paper's two and Epoch AI's Chinchilla runs (below).
PUBLISHED = (*DATASETS, "chinchilla")

# The fits the paper prints in its Figure 2 (E, A, k, alpha, R^2), for checking a reproduction.
PAPER_FITS = {
    "stack-v2-python": {"E": 0.6912, "A": 1.131e7, "k": 0.3935, "alpha": 0.1894, "r2": 0.9978},
    "pile": {"E": 1.2888, "A": 1.974e8, "k": 0.3345, "alpha": 0.1963, "r2": 0.9987},
}


def load_published(dataset: str = "all") -> pd.DataFrame:
    """The paper's 48 (or one data set's 24) final losses as a results table; "chinchilla": Epoch AI's 240
    kept Chinchilla runs (``load_chinchilla``)."""
    if dataset == CHINCHILLA:
        return load_chinchilla()
    if dataset not in (*DATASETS, "all"):
        raise UnknownNameError(f"unknown published data set {dataset!r}; choose one of {[*PUBLISHED, 'all']}")
    with resources.files(__package__).joinpath("data/published_losses.csv").open() as handle:
        table = pd.read_csv(handle)
    table["status"] = "done"
    table["tokens"] = 42_000_000_000
    if dataset != "all":
        table = table[table["dataset"] == dataset].reset_index(drop=True)
    return table


# Hoffmann et al. 2022's runs as Epoch AI digitised them from the paper's Figure 4 (Besiroglu, Erdil, Barnett,
# You 2024, "Chinchilla Scaling: A replication attempt", arXiv 2404.10102; github.com/epoch-research/
# analyzing-chinchilla at 92258837, data/svg_extracted_data.csv): 245 runs at P = 1, `params` the total
# parameter count as Hoffmann et al. count it, `tokens` = training FLOP / (6 params) as Epoch derives it.
CHINCHILLA = "chinchilla"
# Epoch leaves out the five runs of highest loss (all near 1e19 FLOP, with fewer than 0.41 tokens per
# parameter: far from the rest of the runs' regime); `load_chinchilla` drops them by that rule.
CHINCHILLA_OUTLIERS = 5
# Epoch's fit of L = E + A_chin / N^alpha + B / D^beta to the 240 kept runs (Huber delta 1e-3 on ln L, their
# notebook's exact values) with their bootstrap standard errors (4,000 resamples). A_chin = A^alpha here.
EPOCH_FIT = {"E": 1.8172, "A_chin": 482.01, "B": 2085.43, "alpha": 0.34781303, "beta": 0.36585412,
             "ln_E": 0.59711196, "ln_A_chin": 6.17795598, "ln_B": 7.64273236}
EPOCH_STANDARD_ERRORS = {"E": 0.026, "A_chin": 124.5, "B": 1293.0, "alpha": 0.0154, "beta": 0.0206}


def load_chinchilla(drop_outliers: bool = True) -> pd.DataFrame:
    """Epoch AI's digitised Chinchilla runs as a results table (240 without Epoch's outliers, else 245)."""
    with resources.files(__package__).joinpath("data/chinchilla_epoch.csv").open() as handle:
        table = pd.read_csv(handle)
    table["status"] = "done"
    if drop_outliers:
        outliers = table["loss"].nlargest(CHINCHILLA_OUTLIERS).index
        table = table.drop(index=outliers).reset_index(drop=True)
    return table


def epoch_fit_params() -> dict[str, float]:
    """Epoch's published fit in this package's ``log-tokens`` parameters: A = A_chin^(1/alpha), k = 0."""
    fit = EPOCH_FIT
    return {"E": math.exp(fit["ln_E"]), "A": math.exp(fit["ln_A_chin"] / fit["alpha"]), "alpha": fit["alpha"],
            "k": 0.0, "B": math.exp(fit["ln_B"]), "beta": fit["beta"]}
