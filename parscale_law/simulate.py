"""Synthetic results tables from a known law: for tests, coverage studies and trying a design before
training it.

    simulate(ParScaleLaw(E=1.29, A=1.98e8, alpha=0.196, k=0.334), grid=load_published("pile"),
             noise=0.001, size_offset=0.003, seed=0)

Each run's loss is the law's times exp(u_size + c_cell + e_run): ``size_offset`` is the standard
deviation of u, one draw per backbone size shared by all its P and seeds (a size that trains a little
better or worse than the law says, as real grids show); ``cell_offset`` of c, one per (size, P, tokens)
cell shared by its seeds; ``noise`` of e, independent per run (seed-to-seed noise). All in log loss.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .fit import FitResult
from .forms import Form, get_form
from .law import ParScaleLaw
from .table import size_groups


def simulate(
    truth: ParScaleLaw | FitResult | Mapping[str, float],
    grid: pd.DataFrame | None = None,
    *,
    N: Sequence[float] = (),
    P: Sequence[float] = (1, 2, 4, 8),
    tokens: Sequence[float] | None = None,
    noise: float = 0.0,
    size_offset: float = 0.0,
    cell_offset: float = 0.0,
    seeds: int = 1,
    seed: int = 0,
    form: str | Form = "log",
    dataset: str = "simulated",
) -> pd.DataFrame:
    """A results table of runs drawn from ``truth`` (a law, a fit, or parameters of ``form``).

    The design is ``grid``'s rows (its ``params``, ``P`` and, when present, ``size`` and ``tokens``), or
    else every combination of ``N`` x ``P`` (x ``tokens``); each design row is run ``seeds`` times.
    """
    params, law_form = _truth(truth, form)
    design = _design(grid, N, P, tokens)
    if law_form.uses_tokens and "tokens" not in design.columns:
        raise ValueError(f"the {law_form.name!r} form needs tokens: pass tokens=[...] or a grid with a tokens column")
    if seeds < 1 or min(noise, size_offset, cell_offset) < 0:
        raise ValueError("seeds must be >= 1 and noise, size_offset, cell_offset >= 0")
    rng = np.random.default_rng(seed)
    design = design.reset_index(drop=True)
    size_rank = size_groups(design).to_numpy(dtype=int)
    u = rng.normal(0.0, size_offset, size_rank.max() + 1)[size_rank]
    c = rng.normal(0.0, cell_offset, len(design))
    runs = design.loc[np.repeat(design.index, seeds)].reset_index(drop=True)
    runs["seed"] = np.tile(np.arange(seeds), len(design))
    offsets = np.repeat(u + c, seeds) + rng.normal(0.0, noise, len(runs))
    D = runs["tokens"].to_numpy(float) if "tokens" in runs.columns else None
    mean = law_form.predict(params, runs["params"].to_numpy(float), runs["P"].to_numpy(float), D)
    runs["loss"] = mean * np.exp(offsets)
    runs["dataset"] = dataset
    runs["status"] = "done"
    runs["run_id"] = [f"{s}-P{p:g}-s{k}" for s, p, k in zip(runs["size"], runs["P"], runs["seed"], strict=True)]
    first = ["dataset", "size", "params", "P"] + (["tokens"] if "tokens" in runs.columns else [])
    return runs[first + ["loss", "seed", "run_id", "status"]]


def _truth(truth, form) -> tuple[dict[str, float], Form]:
    if isinstance(truth, ParScaleLaw):
        return {"E": truth.E, "A": truth.A, "alpha": truth.alpha, "k": truth.k}, get_form("log")
    if isinstance(truth, FitResult):
        return dict(truth.params), truth.law_form
    law_form = get_form(form)
    missing = sorted(set(law_form.param_names) - set(truth))
    if missing:
        raise ValueError(f"truth lacks {missing} of the {law_form.name!r} form's parameters "
                         f"{list(law_form.param_names)}")
    return {name: float(truth[name]) for name in law_form.param_names}, law_form


def _design(grid, N, P, tokens) -> pd.DataFrame:
    if grid is not None:
        keep = [c for c in ("size", "params", "P", "tokens") if c in grid.columns]
        design = grid[keep].copy()
        if "size" not in design.columns:
            rank = size_groups(design)
            smallest = design.groupby(rank)["params"].transform("min")
            design.insert(0, "size", [f"N={n:.3g}" for n in smallest])
        return design
    if len(N) == 0:
        raise ValueError("give a grid (a table with params and P) or the sizes N=[...] to simulate")
    columns = {"params": np.asarray(N, float), "P": np.asarray(P, float)}
    if tokens is not None:
        columns["tokens"] = np.asarray(tokens, float)
    mesh = np.meshgrid(*columns.values(), indexing="ij")
    design = pd.DataFrame({name: axis.ravel() for name, axis in zip(columns, mesh, strict=True)})
    design.insert(0, "size", [f"N={n:.3g}" for n in design["params"]])
    return design
