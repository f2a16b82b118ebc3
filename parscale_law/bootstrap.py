"""Bootstrap confidence intervals for a fitted law.

Case resampling: each resample draws the runs with replacement (as row counts, so a run drawn twice
counts twice in the objective) and refits from scratch with the global fast method. Resamples are
never warm-started at the point estimate: that would anchor them to it and make intervals too narrow.

Derived quantities get intervals too: the effective-parameter multiplier at chosen P (1 + k ln P for
the paper's law) and the predicted loss at chosen (N, P). A *prediction* interval for a new run adds
residual noise: each resample's prediction is multiplied by exp(e), e drawn from the point fit's
log residuals, so it covers where a rerun's loss would land, not only where the curve lies.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .fit import DELTA, FitResult, SeparableProblem, fit_data
from .forms import Form, SeparableForm, get_form
from .table import prepare

DEFAULT_MULTIPLIER_P = (2, 4, 8)


@dataclass
class BootstrapResult:
    """The point fit, every resample's parameters and derived values, and percentile intervals."""

    point: FitResult
    samples: pd.DataFrame = field(repr=False)
    intervals: pd.DataFrame
    level: float
    n_failed: int
    seconds: float

    def interval(self, name: str) -> tuple[float, float]:
        row = self.intervals.set_index("name").loc[name]
        return float(row["low"]), float(row["high"])

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "n_resamples": len(self.samples),
            "n_failed": self.n_failed,
            "seconds": self.seconds,
            "intervals": self.intervals.to_dict(orient="records"),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text


def bootstrap(
    table: pd.DataFrame,
    n: int = 1000,
    seed: int = 0,
    form: str | Form = "log",
    dataset: str | None = None,
    loss_column: str = "loss",
    level: float = 0.95,
    multiplier_P: Sequence[float] = DEFAULT_MULTIPLIER_P,
    predict_at: Sequence[tuple[float, float]] = (),
    delta: float = DELTA,
) -> BootstrapResult:
    """Refit ``n`` case resamples of the table and return percentile intervals at ``level``."""
    if n < 2:
        raise ValueError(f"n={n}: a bootstrap needs at least 2 resamples (1000 is usual)")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie strictly between 0 and 1, e.g. 0.95")
    started = time.perf_counter()
    law_form = get_form(form)
    data = prepare(table, dataset=dataset, loss_column=loss_column, min_rows=len(law_form.param_names) + 1, need_several_P=law_form.uses_P)
    problem = SeparableProblem(law_form, data) if isinstance(law_form, SeparableForm) else None
    point = fit_data(law_form, data, delta=delta, problem=problem)

    rng = np.random.default_rng(seed)
    noise = point.residuals["log_residual"].to_numpy()
    noise = noise - noise.mean()
    multiplier_P = np.asarray(multiplier_P, dtype=float)
    at = np.asarray(predict_at, dtype=float).reshape(-1, 2)

    rows, failed = [], 0
    for _ in range(n):
        counts = rng.multinomial(len(data.loss), np.full(len(data.loss), 1.0 / len(data.loss))).astype(float)
        result = fit_data(law_form, data, delta=delta, weights=counts, problem=problem)
        if result.status == "failed":
            failed += 1
            continue
        rows.append(_sample_row(result, law_form, multiplier_P, at, noise, rng))
    samples = pd.DataFrame(rows)
    estimates = _sample_row(point, law_form, multiplier_P, at, np.zeros(1), rng)
    intervals = _percentiles(samples, estimates, level)
    return BootstrapResult(point, samples, intervals, level, failed, time.perf_counter() - started)


def _sample_row(result: FitResult, form: Form, multiplier_P, at, noise, rng) -> dict:
    row = dict(result.params)
    if result.A_prime is not None:
        row["A_prime"] = result.A_prime
    multipliers = form.multiplier(result.params, multiplier_P) if len(multiplier_P) else None
    if multipliers is not None:
        row.update({f"multiplier@P={_fmt(P)}": float(m) for P, m in zip(multiplier_P, multipliers)})
    if len(at):
        predicted = form.predict(result.params, at[:, 0], at[:, 1])
        jitter = np.exp(rng.choice(noise, size=len(at)))
        for (N, P), loss, factor in zip(at, predicted, jitter):
            row[f"loss@N={N:.4g},P={_fmt(P)}"] = float(loss)
            row[f"new_run_loss@N={N:.4g},P={_fmt(P)}"] = float(loss * factor)
    return row


def _percentiles(samples: pd.DataFrame, estimates: dict, level: float) -> pd.DataFrame:
    tail = (1.0 - level) / 2.0 * 100.0
    rows = []
    for name, estimate in estimates.items():
        values = samples[name].to_numpy(dtype=float) if name in samples else np.array([])
        values = values[np.isfinite(values)]
        low, high = (np.percentile(values, [tail, 100.0 - tail]) if len(values) else (math.nan, math.nan))
        if name.startswith("new_run_loss@"):
            estimate = estimates[name.replace("new_run_loss@", "loss@")]
        rows.append({"name": name, "estimate": float(estimate), "low": float(low), "high": float(high)})
    return pd.DataFrame(rows)


def _fmt(P: float) -> str:
    return f"{P:g}"
