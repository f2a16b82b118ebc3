"""The results table: the one contract between sweeps (which write it) and the fitter (which reads it).

One row per training run (a "cell" of a sweep):

==========  ========  ==============================================================================
column      required  meaning
==========  ========  ==============================================================================
dataset     yes*      data set name, e.g. ``pile`` or ``stack-v2-python`` (*optional when one data set)
size        yes*      backbone size label, e.g. ``0.5B`` (*optional for the fit itself)
params      yes       non-embedding parameter count N, ParScale prefixes and aggregator included
P           yes       number of parallel streams (>= 1; need not be a power of two)
loss        yes       final (smoothed) training loss, the quantity the paper fits
tokens      no        training tokens seen
run_id      no        unique id of the run (stable across requeues)
seed        no        random seed; runs that differ only in seed are replicates, not duplicates
eval_loss   no        final held-out loss (fit it with ``loss_column="eval_loss"``)
status      no        ``done`` / ``running`` / ``failed``; only ``done`` rows (or rows without status) are fitted
stage2_fraction no    two-stage training: the last fraction of ``tokens`` trained with P streams on a P = 1
                      backbone (0 or absent: from scratch); one fit takes rows of one value
==========  ========  ==============================================================================

CSV and Parquet are both read (by extension). ``prepare`` turns a table into the arrays the fitter
uses, and refuses bad input with an :class:`InvalidTableError` that names the offending rows.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InvalidTableError

REQUIRED_COLUMNS = ("params", "P", "loss")
RESULT_COLUMNS = ("dataset", "size", "params", "P", "loss", "tokens", "run_id", "seed", "eval_loss", "status",
                  "stage2_fraction")
DONE_STATUS = "done"


TABLE_SUFFIXES = (".csv", ".parquet", ".pq")


def read_results(path: str | Path) -> pd.DataFrame:
    """Read a results table from CSV or Parquet (chosen by the file's extension)."""
    path = Path(path)
    if not path.exists():
        raise InvalidTableError(f"{path}: no such file; pass a CSV or Parquet results table")
    suffix = path.suffix.lower()
    if path.is_dir() or suffix not in TABLE_SUFFIXES + (".txt",):
        raise InvalidTableError(f"{path}: not a .csv or .parquet file; pass a CSV or Parquet results table")
    try:
        return pd.read_parquet(path) if suffix in (".parquet", ".pq") else pd.read_csv(path)
    except (ValueError, OSError) as error:  # pandas' EmptyDataError and ParserError, pyarrow's ArrowInvalid
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InvalidTableError(f"{path}: cannot be read as a table ({first}); pass a CSV or Parquet results table") \
            from None


def write_results(table: pd.DataFrame, path: str | Path) -> None:
    """Write a results table as CSV or Parquet (by extension), columns in the documented order."""
    path = Path(path)
    if path.suffix.lower() not in TABLE_SUFFIXES:
        raise InvalidTableError(f"{path}: a results table is written as .csv or .parquet; name the file so")
    ordered = [c for c in RESULT_COLUMNS if c in table.columns] + [c for c in table.columns if c not in RESULT_COLUMNS]
    table = table[ordered]
    if path.suffix.lower() in (".parquet", ".pq"):
        table.to_parquet(path, index=False)
    else:
        table.to_csv(path, index=False)


def finished_runs(table: pd.DataFrame) -> pd.DataFrame:
    """The rows to fit: those with status ``done``, or all rows when the table has no status column."""
    if "status" not in table.columns:
        return table
    return table[table["status"].isna() | (table["status"].astype(str) == DONE_STATUS)]


@dataclass(frozen=True)
class FitData:
    """The rows a fit uses, as arrays, plus the cleaned table they came from.

    ``weights`` multiply each run's term of the objective (None: all 1); ``D`` is the tokens column (None
    unless the form uses it); ``sizes`` and ``cells`` label each run's backbone size and (size, P, tokens)
    cell with integers, for the bootstrap's resampling units (runs sharing a cell are replicate seeds).
    """

    N: np.ndarray
    P: np.ndarray
    loss: np.ndarray
    rows: pd.DataFrame
    weights: np.ndarray | None = None
    D: np.ndarray | None = None
    sizes: np.ndarray | None = None
    cells: np.ndarray | None = None

    def with_loss(self, loss: np.ndarray) -> FitData:
        """The same runs with other losses (a parametric bootstrap's simulated ones)."""
        return replace(self, loss=np.asarray(loss, dtype=float))


def _rows_text(table: pd.DataFrame, mask: np.ndarray, limit: int = 5) -> str:
    labels = [str(i) for i in table.index[mask][:limit]]
    more = int(mask.sum()) - len(labels)
    return ", ".join(labels) + (f" (+{more} more)" if more > 0 else "")


def size_groups(table: pd.DataFrame) -> pd.Series:
    """Backbone size of each row as a rank, small to large: the ``size`` column when it labels every row,
    else params grouped within 5% (ParScale's prefixes and aggregator add ~2% at P = 8)."""
    params = pd.to_numeric(table["params"], errors="coerce").to_numpy(dtype=float)
    if "size" in table.columns and table["size"].notna().all():
        codes, labels = pd.factorize(table["size"])
        smallest = np.full(len(labels), np.inf)
        np.minimum.at(smallest, codes, params)
        rank = np.argsort(np.argsort(smallest, kind="stable"), kind="stable")
        return pd.Series(rank[codes], index=table.index)
    order = np.argsort(params, kind="stable")
    ranks = np.empty(len(params), dtype=int)
    rank, anchor = -1, None
    for index in order:
        if anchor is None or params[index] > 1.05 * anchor:
            rank, anchor = rank + 1, params[index]
        ranks[index] = rank
    return pd.Series(ranks, index=table.index)


WEIGHT_COLUMN = "_weight"


def _attach_weights(table: pd.DataFrame, weights) -> pd.DataFrame:
    """The table with a weight column, from a column name, a Series (aligned on the index) or an array."""
    if isinstance(weights, str):
        if weights not in table.columns:
            raise InvalidTableError(f"no weights column {weights!r}; the table has {list(table.columns)}")
        values = table[weights]
    elif isinstance(weights, pd.Series):
        values = weights.reindex(table.index)
    else:
        values = np.asarray(weights, dtype=float).ravel()
        if len(values) != len(table):
            raise InvalidTableError(f"{len(values)} weights for a table of {len(table)} rows; give one weight per row")
    return table.assign(**{WEIGHT_COLUMN: values})


def _check_one_recipe(table: pd.DataFrame) -> None:
    """One law per training recipe: two-stage runs of different stage-2 fractions are different experiments."""
    if "stage2_fraction" not in table.columns:
        return
    fractions = sorted(pd.to_numeric(table["stage2_fraction"], errors="coerce").fillna(0).unique())
    if len(fractions) > 1:
        raise InvalidTableError(
            f"the rows come from {len(fractions)} stage2_fraction values {[float(f) for f in fractions]}; fit each on "
            "its own, e.g. table[table.stage2_fraction == F] (python -m sweeps.report fits each F of a sweep)"
        )


def prepare(
    table: pd.DataFrame,
    dataset: str | None = None,
    loss_column: str = "loss",
    min_rows: int = 1,
    need_several_N: bool = True,
    need_several_P: bool = True,
    weights=None,
    need_tokens: bool = False,
) -> FitData:
    """Validate a results table and return the arrays to fit.

    ``min_rows`` is the number of rows the form needs (its free parameters + 1). ``weights`` (a column
    name, a Series or one value per row) weigh each run in the objective; ``need_tokens`` requires a
    ``tokens`` column with at least two values. Rows are named by their index in the table passed in.
    """
    required = _required_columns(table, loss_column, need_tokens)
    if weights is not None:
        table = _attach_weights(table, weights)
    table = finished_runs(_one_dataset(table, dataset))
    _check_one_recipe(table)
    values = _positive_values(table, required)
    run_weights = None
    if weights is not None:
        table, run_weights = _take_weights(table)
    _check_no_duplicates(table)
    _check_design(values, len(table), min_rows, need_several_N, need_several_P, need_tokens)
    sizes, cells = _sizes_and_cells(table, values)
    return FitData(
        N=values["params"], P=values["P"], loss=values[loss_column], rows=table.copy(), weights=run_weights,
        D=values.get("tokens"), sizes=sizes, cells=cells,
    )


def _required_columns(table: pd.DataFrame, loss_column: str, need_tokens: bool) -> tuple[str, ...]:
    """The columns the fit reads; refuses a table without them."""
    if not isinstance(table, pd.DataFrame):
        raise InvalidTableError(f"expected a pandas DataFrame, got {type(table).__name__}; "
                                "read files with read_results()")
    required = ("params", "P", loss_column) + (("tokens",) if need_tokens else ())
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise InvalidTableError(
            f"missing column(s) {missing}; the table has {list(table.columns)}. "
            "A results table needs params (non-embedding N), P and loss"
            + (", and tokens for this form" if need_tokens else "")
        )
    return required


def _one_dataset(table: pd.DataFrame, dataset: str | None) -> pd.DataFrame:
    """The rows of ``dataset``; without one, the table must hold a single data set."""
    if "dataset" not in table.columns:
        if dataset is not None:
            raise InvalidTableError(f"dataset={dataset!r} given but the table has no 'dataset' column; drop the option")
        return table
    names = sorted(map(str, table["dataset"].dropna().unique()))
    if dataset is None:
        if len(names) > 1:
            raise InvalidTableError(f"the table holds several data sets {names}; "
                                    "choose one with dataset=NAME (--dataset NAME)")
        return table
    if dataset not in names:
        raise InvalidTableError(f"no rows for dataset {dataset!r}; the table has {names}")
    return table[table["dataset"].astype(str) == dataset]


def _positive_values(table: pd.DataFrame, required) -> dict[str, np.ndarray]:
    """Each required column as floats, all finite and positive, with P >= 1."""
    values = {}
    for column in required:
        numeric = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bad = ~np.isfinite(numeric) | (numeric <= 0)
        if bad.any():
            raise InvalidTableError(
                f"column {column!r} must be finite and positive; rows {_rows_text(table, bad)} are not. "
                "Drop or fix those runs"
            )
        values[column] = numeric
    below_one = values["P"] < 1
    if below_one.any():
        raise InvalidTableError(f"P must be >= 1 (a count of streams); rows {_rows_text(table, below_one)} are not")
    return values


def _take_weights(table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """The attached weights, checked, and the table without their column."""
    run_weights = pd.to_numeric(table[WEIGHT_COLUMN], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(run_weights) | (run_weights < 0)
    if bad.any():
        raise InvalidTableError(f"weights must be finite and >= 0; rows {_rows_text(table, bad)} are not")
    if not (run_weights > 0).any():
        raise InvalidTableError("every weight is 0; give at least one run a positive weight")
    return table.drop(columns=WEIGHT_COLUMN), run_weights


def _check_no_duplicates(table: pd.DataFrame) -> None:
    key = [c for c in ("dataset", "params", "P", "tokens", "seed") if c in table.columns]
    duplicated = table.duplicated(subset=key, keep=False).to_numpy()
    if duplicated.any():
        raise InvalidTableError(
            f"rows {_rows_text(table, duplicated)} repeat the same (params, P{', seed' if 'seed' in key else ''}); "
            "drop the duplicates, or give replicates distinct seeds in a 'seed' column"
        )


def _check_design(values, rows: int, min_rows: int, need_several_N: bool, need_several_P: bool,
                  need_tokens: bool) -> None:
    """Enough rows for the form, and the spread in N, P and tokens that it needs."""
    if rows < min_rows:
        raise InvalidTableError(f"{rows} usable rows but the form needs at least {min_rows} (its free parameters + 1); "
                                "add runs")
    if need_several_N and np.unique(values["params"]).size < 2:
        raise InvalidTableError("all rows have the same params; the law needs runs at two or more model sizes")
    if need_several_P and np.unique(values["P"]).size < 2:
        raise InvalidTableError("all rows have the same P; fitting the P effect needs runs at two or more P values")
    if need_tokens and np.unique(values["tokens"]).size < 2:
        raise InvalidTableError(
            f"every run has tokens = {values['tokens'][0]:.4g}; a tokens term needs runs at two or more token counts "
            "(fit the log form instead)"
        )


def _sizes_and_cells(table: pd.DataFrame, values) -> tuple[np.ndarray, np.ndarray]:
    """Each run's size group and its cell (size, P and tokens): runs in one cell are replicates."""
    sizes = size_groups(table).to_numpy(dtype=int)
    cell_key = [sizes, values["P"]]
    if "tokens" in table.columns:  # runs at other training lengths are other cells, not replicates
        cell_key.append(pd.to_numeric(table["tokens"], errors="coerce").fillna(-1).to_numpy(dtype=float))
    cells = np.unique(np.stack(cell_key), axis=1, return_inverse=True)[1].ravel()
    return sizes, cells
