"""Extrapolation checks: fit on some runs, predict the others, score the predictions.

A split is a pair of pandas query strings over the results table (``"P <= 4"`` / ``"P == 8"``) or one of
the standard splits below. ``rollout`` fits on the k smallest sizes for growing k and predicts the next size
and all larger ones (OLMo-core's ScalingLawRollout).

Scores on the held-out rows: per-point relative error, MAPE (%), R^2, NMSE = sum (y - yhat)^2 /
sum (y - mean y)^2 and NMAE = sum |y - yhat| / sum |y - mean y| (both normalised by the held-out
rows' own spread, so 0 is perfect and 1 is no better than predicting their mean).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .errors import InvalidTableError, UnknownNameError
from .fit import FitResult, fit
from .forms import Form
from .table import finished_runs, prepare, size_groups

STANDARD_SPLITS = {
    # The paper's question: do P <= 4 runs predict P = 8?
    "extrapolate-P": ("P <= 4", "P == 8"),
    # Do the four smaller sizes (N < 2B) predict the two largest (N >= 2.7B)?
    "extrapolate-N": ("params < 2e9", "params >= 2.7e9"),
}


@dataclass
class HoldoutResult:
    train: str
    test: str
    fit: FitResult
    predictions: pd.DataFrame = field(repr=False)
    metrics: dict[str, float]

    def to_dict(self) -> dict:
        return {"train": self.train, "test": self.test, **self.metrics,
                "predictions": self.predictions.to_dict(orient="records")}


def heldout_metrics(observed, predicted) -> dict[str, float]:
    y = np.asarray(observed, dtype=float)
    yhat = np.asarray(predicted, dtype=float)
    relative = (yhat - y) / y
    spread2 = np.sum((y - y.mean()) ** 2)
    spread1 = np.sum(np.abs(y - y.mean()))
    nmse = float(np.sum((y - yhat) ** 2) / spread2) if spread2 > 0 else float("nan")
    return {
        "n_test": int(len(y)),
        "mape": float(100.0 * np.mean(np.abs(relative))),
        "max_abs_rel_error": float(np.max(np.abs(relative))),
        "r2": 1.0 - nmse,
        "nmse": nmse,
        "nmae": float(np.sum(np.abs(y - yhat)) / spread1) if spread1 > 0 else float("nan"),
    }


def parse_split(spec: str) -> tuple[str, str]:
    """A standard split's name, or ``"TRAIN_QUERY:TEST_QUERY"``."""
    if spec in STANDARD_SPLITS:
        return STANDARD_SPLITS[spec]
    if spec.count(":") == 1:
        train, test = (part.strip() for part in spec.split(":"))
        if train and test:
            return train, test
    raise UnknownNameError(f"unknown split {spec!r}; use one of {sorted(STANDARD_SPLITS)} or 'TRAIN_QUERY:TEST_QUERY', "
                           "e.g. 'P <= 4:P == 8'")


def _select(table: pd.DataFrame, query: str, role: str) -> pd.DataFrame:
    try:
        selected = table.query(query)
    except Exception as error:  # pandas raises many types for a bad expression
        raise InvalidTableError(
            f"bad {role} query {query!r}: {error}; write it over the table's columns, e.g. 'P <= 4'"
        ) from None
    if selected.empty:
        raise InvalidTableError(f"the {role} query {query!r} selects no rows")
    return selected


def holdout(
    table: pd.DataFrame,
    split: str | None = None,
    train: str | None = None,
    test: str | None = None,
    form: str | Form = "log",
    method: str = "fast",
    dataset: str | None = None,
    loss_column: str = "loss",
) -> HoldoutResult:
    """Fit on the ``train`` rows, predict the ``test`` rows. Give a ``split`` name or both queries."""
    if split is not None:
        train, test = parse_split(split)
    if train is None or test is None:
        raise ValueError("give split=NAME or both train= and test= queries")
    table = finished_runs(table)
    if dataset is not None and "dataset" in table.columns:
        table = table[table["dataset"] == dataset]
    train_rows = _select(table, train, "train")
    test_rows = _select(table, test, "test")
    result = fit(train_rows, form=form, method=method, dataset=dataset, loss_column=loss_column)
    predicted = predict_rows(result, test_rows)
    observed = test_rows[loss_column].to_numpy(float)
    keep = [c for c in ("dataset", "size", "params", "P", "tokens") if c in test_rows.columns]
    predictions = test_rows[keep].reset_index(drop=True).assign(
        loss=observed, predicted=predicted, rel_error=(predicted - observed) / observed
    )
    return HoldoutResult(train, test, result, predictions, heldout_metrics(observed, predicted))


def heldout_checks(table: pd.DataFrame, dataset: str | None = None) -> list:
    """Extrapolation checks any sweep supports: hold out the largest P, and the largest size (its runs at
    every P); checks the table cannot support (too few runs left to fit) are skipped."""
    rows = prepare(table, dataset=dataset).rows
    largest_P = float(rows["P"].max())
    largest_size = float(rows.loc[rows["P"] == rows["P"].min(), "params"].max())
    # The largest size's runs at P > 1 have slightly more parameters (prefixes, aggregator) than at P = 1;
    # every smaller size stays far below.
    threshold = f"{largest_size * 0.99:.6g}"
    splits = [(f"P < {largest_P:g}", f"P == {largest_P:g}"), (f"params < {threshold}", f"params >= {threshold}")]
    checks = []
    for train, test in splits:
        try:
            checks.append(holdout(rows, train=train, test=test))
        except InvalidTableError:
            continue  # e.g. one size left to train on: that check does not apply to this sweep
    return checks


@dataclass
class RolloutResult:
    """A rollout (OLMo-core's ScalingLawRollout): per step, the law fitted on the smallest sizes and how it
    predicts the next size (``next_*`` columns) and every larger size (the metrics without prefix)."""

    steps: pd.DataFrame
    predictions: pd.DataFrame = field(repr=False)  # one row per (step, predicted run)

    def to_dict(self) -> dict:
        return {"steps": self.steps.to_dict(orient="records"),
                "predictions": self.predictions.to_dict(orient="records")}


def rollout(
    table: pd.DataFrame,
    min_sizes: int = 3,
    form: str | Form = "log",
    method: str = "fast",
    dataset: str | None = None,
    loss_column: str = "loss",
    fixed: Mapping[str, float] | None = None,
) -> RolloutResult:
    """Fit on the k smallest sizes (k = min_sizes .. all but one) and score predictions for the next size
    and for all larger ones. Any form: a tokens term predicts at each run's tokens, a one-P table fits with
    its P effect not identified, ``fixed`` holds parameters as in ``fit``."""
    table = finished_runs(table)
    if dataset is not None and "dataset" in table.columns:
        table = table[table["dataset"] == dataset]
    groups = size_groups(table)
    n_sizes = int(groups.max()) + 1 if len(groups) else 0
    if min_sizes < 2 or n_sizes <= min_sizes:
        raise InvalidTableError(f"{n_sizes} sizes in the table; a rollout from min_sizes={min_sizes} (at least 2) "
                                f"needs at least {max(min_sizes, 2) + 1}")
    steps, predictions = [], []
    for k in range(min_sizes, n_sizes):
        train_rows, test_rows = table[groups < k], table[groups >= k]
        result = fit(train_rows, form=form, method=method, dataset=dataset, loss_column=loss_column, fixed=fixed)
        predicted = predict_rows(result, test_rows)
        observed = test_rows[loss_column].to_numpy(float)
        is_next = (groups[groups >= k] == k).to_numpy()
        steps.append({"train_sizes": k, "largest_train_params": float(train_rows["params"].max()),
                      "next_params": float(test_rows["params"][is_next].min()), "status": result.status,
                      **result.reported_params, **heldout_metrics(observed, predicted),
                      **{f"next_{name}": value
                         for name, value in heldout_metrics(observed[is_next], predicted[is_next]).items()}})
        keep = [c for c in ("dataset", "size", "params", "P", "tokens") if c in test_rows.columns]
        predictions.append(test_rows[keep].reset_index(drop=True).assign(
            train_sizes=k, next_size=is_next, loss=observed, predicted=predicted))
    return RolloutResult(pd.DataFrame(steps), pd.concat(predictions, ignore_index=True))


def predict_rows(result: FitResult, rows: pd.DataFrame) -> np.ndarray:
    """The fitted law's loss for each run of ``rows`` (at its tokens where the law has a tokens term)."""
    tokens = rows["tokens"].to_numpy(float) if result.law_form.uses_tokens else None
    return result.predict(rows["params"].to_numpy(float), rows["P"].to_numpy(float), tokens)
