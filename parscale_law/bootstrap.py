"""Bootstrap confidence intervals for a fitted law, with the resampling scheme chosen to respect the design.

Residuals of a scaling-law grid cluster by size: all P of one backbone move together (intraclass
correlation 0.56 on the paper's Stack-V2-Python runs). Resampling rows then treats 24 runs as 24
independent cases when they are closer to six, and its intervals for alpha, E and extrapolated losses
are too narrow; resampling the six sizes covers those but, with so few clusters, loses coverage on i.i.d.
noise. The default scheme, ``parametric``, simulates new losses around the fit with the residual variance
split into a per-size and a per-run component (plus per-cell with replicate seeds), each estimated with the
fit's leverage accounted for and drawn afresh per resample with its own uncertainty
(``parscale_law.resample``). ``python -m parscale_law.coverage`` measures every scheme's coverage.

Each resample is refitted from scratch with the global fast method (never warm-started at the point
estimate: that would anchor it and make intervals too narrow); its status is recorded, and the fraction of
resamples that ended on a bound is reported.

Derived quantities get intervals too: the effective-parameter multiplier at chosen P (1 + k ln P for the
paper's law) and the predicted loss at chosen (N, P), named ``loss@N=1.1e+10,P=8``. A *prediction* interval
for a new run (``new_run_loss@...``) adds the noise a new run would carry: the estimated size and run
components for the parametric scheme, a residual drawn from the fit for the others.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .batched import refit_resamples
from .errors import InvalidTableError, UnknownNameError
from .fit import FitResult, check_fixed, fit_data, held_parameters, prepare_for
from .forms import Form, SeparableForm, get_form
from .objective import DELTA
from .resample import SCHEMES, VarianceComponents, has_replicates, row_counts, simulated_log_loss, variance_components
from .separable import SeparableProblem

DEFAULT_MULTIPLIER_P = (2, 4, 8)
DEFAULT_SCHEME = "parametric"
P_EFFECTS = ("helps", "no evidence", "hurts")


@dataclass
class BootstrapResult:
    """The point fit, every resample's parameters, derived values and status, and percentile intervals."""

    point: FitResult
    samples: pd.DataFrame = field(repr=False)
    intervals: pd.DataFrame
    level: float
    n_failed: int
    seconds: float
    scheme: str = DEFAULT_SCHEME
    components: dict[str, float] = field(default_factory=dict)
    # Every resample's status, failed ones included (``samples`` holds the others, in the same order).
    statuses: pd.Series = field(default_factory=lambda: pd.Series(dtype=str), repr=False)

    def interval(self, name: str) -> tuple[float, float]:
        table = self.intervals.set_index("name")
        if name not in table.index:
            raise KeyError(f"no interval named {name!r}; there are {list(table.index)}")
        row = table.loc[name]
        return float(row["low"]), float(row["high"])

    @property
    def fraction_at_bound(self) -> float:
        """Share of the resamples whose fit ended with a parameter on a bound of its domain."""
        statuses = self.statuses if len(self.statuses) else self.samples.get("status", pd.Series(dtype=str))
        return float(np.mean(statuses == "at_bound")) if len(statuses) else math.nan

    @property
    def bound_fractions(self) -> dict[str, float]:
        """Per parameter, the share of resamples that put it on a bound."""
        if not len(self.samples):
            return {}
        hits = self.samples["at_bound"].fillna("")
        return {name: float(hits.map(lambda names, name=name: name in names.split(",")).mean())
                for name in self.point.params if name not in self.point.fixed and name not in self.point.not_identified}

    @property
    def p_effect(self) -> str | None:
        """"helps", "no evidence" or "hurts": whether the interval of k (of the multiplier at the largest P
        for forms without k) lies above, around or below no effect of the streams; None with neither."""
        if "k" in self.point.params and "k" not in self.point.fixed and "k" not in self.point.not_identified:
            low, high, none = *self.interval("k"), 0.0
        else:
            names = [n for n in self.intervals["name"] if n.startswith("multiplier@P=")]
            if not names:
                return None
            low, high, none = *self.interval(max(names, key=lambda n: float(n.split("=")[1]))), 1.0
        if low > none:
            return "helps"
        if high < none:
            return "hurts"
        return "no evidence"

    def to_dict(self) -> dict:
        return {
            "scheme": self.scheme,
            "level": self.level,
            "n_resamples": len(self.samples) + self.n_failed,
            "n_failed": self.n_failed,
            "fraction_at_bound": self.fraction_at_bound,
            "statuses": self.statuses.value_counts().to_dict(),
            "bound_fractions": self.bound_fractions,
            "p_effect": self.p_effect,
            "components": self.components,
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
    predict_at: Sequence[tuple[float, ...]] = (),
    delta: float = DELTA,
    scheme: str = DEFAULT_SCHEME,
    weights=None,
    fixed: Mapping[str, float] | None = None,
    batched: bool = True,
) -> BootstrapResult:
    """Refit ``n`` resamples of the table drawn by ``scheme`` and return percentile intervals at ``level``.

    ``predict_at``: (N, P) pairs, or (N, P, tokens) for forms with a tokens term. ``weights`` and
    ``fixed`` as in ``fit``. ``batched``: the resamples solved together from the point fit
    (``parscale_law.batched``); False refits each from cold (the same intervals, about 10x slower).
    """
    if n < 2:
        raise ValueError(f"n={n}: a bootstrap needs at least 2 resamples (1000 is usual)")
    if not 0 < level < 1:
        raise ValueError(f"level={level} must lie strictly between 0 and 1, e.g. 0.95")
    if scheme not in SCHEMES:
        raise UnknownNameError(f"unknown scheme {scheme!r}; choose one of {list(SCHEMES)}")
    started = time.perf_counter()
    law_form = get_form(form)
    fixed = check_fixed(law_form, fixed)
    data = prepare_for(law_form, table, dataset=dataset, loss_column=loss_column, weights=weights, fixed=fixed)
    if scheme == "cell" and not has_replicates(data):
        raise InvalidTableError("scheme='cell' resamples replicate seeds within each (size, P) cell, "
                                "and no cell has two; use 'parametric' or 'size'")
    held = held_parameters(law_form, data, fixed)
    problem = SeparableProblem(law_form, data, held) if isinstance(law_form, SeparableForm) else None
    point = fit_data(law_form, data, delta=delta, problem=problem, fixed=fixed)
    at = _prediction_points(predict_at, law_form)
    multiplier_P = np.asarray(multiplier_P, dtype=float)
    rng = np.random.default_rng(seed)

    components: VarianceComponents | None = None
    log_mean = None
    if scheme == "parametric":
        if point.status == "failed":
            raise InvalidTableError(f"the fit failed ({point.reason}), so there is no law to simulate from; "
                                    "fix the fit or use scheme='row'")
        free = [name for name in law_form.param_names if name not in held]
        components = variance_components(law_form, point.params, data, free, data.weights)
        log_mean = np.log(law_form.predict(point.params, data.N, data.P, data.D))
    residual_noise = point.residuals["log_residual"].to_numpy()
    residual_noise = residual_noise - residual_noise.mean()

    # Every resample is drawn first (in the order the draws always had), then all are fitted together.
    losses, counts, jitters = _draw_resamples(n, data, scheme, components, log_mean, residual_noise, len(at), rng)
    results = refit_resamples(law_form, data, problem, point, losses, counts, delta, fixed, batched)
    rows, statuses = [], []
    for result, jitter in zip(results, jitters, strict=True):
        statuses.append(result.status)
        if result.status == "failed":
            continue
        rows.append({**_sample_row(result, law_form, multiplier_P, at, jitter), "status": result.status,
                     "at_bound": ",".join(result.at_bound)})
    samples = pd.DataFrame(rows)
    estimates = _sample_row(point, law_form, multiplier_P, at, np.ones(len(at)))
    intervals = _percentiles(samples, estimates, level)
    statuses = pd.Series(statuses, name="status")
    return BootstrapResult(point, samples, intervals, level, int((statuses == "failed").sum()),
                           time.perf_counter() - started, scheme,
                           components.as_dict() if components is not None else {}, statuses)


def _draw_resamples(n, data, scheme, components, log_mean, residual_noise, n_points, rng):
    """Per resample: its losses (parametric) or run counts (the others), and the factors that turn each
    predicted loss into a new run's."""
    losses, counts, jitters = [], [], []
    for _ in range(n):
        if components is not None:
            variances = components.draw_variances(rng)
            losses.append(np.exp(simulated_log_loss(log_mean, data, components.names, variances, rng)))
            counts.append(None)
            jitters.append(np.exp(rng.normal(0.0, math.sqrt(variances.sum()), n_points)))
        else:
            losses.append(None)
            counts.append(row_counts(data, scheme, rng))
            jitters.append(np.exp(rng.choice(residual_noise, size=n_points)))
    return losses, counts, jitters


def _prediction_points(predict_at, form: Form) -> np.ndarray:
    width = 3 if form.uses_tokens else 2
    at = np.asarray(predict_at, dtype=float)
    if at.size == 0:
        return np.zeros((0, width))
    at = at.reshape(-1, at.shape[-1]) if at.ndim > 1 else at.reshape(1, -1)
    if at.shape[1] != width:
        raise ValueError(f"predict_at takes {'(N, P, tokens)' if width == 3 else '(N, P)'} tuples for the "
                         f"{form.name!r} form")
    return at


def prediction_name(point: Sequence[float]) -> str:
    """``loss@N=1.1e+10,P=8`` (``...,D=4.2e+10`` with tokens): the name of a predicted-loss interval."""
    name = f"loss@N={point[0]:.4g},P={point[1]:g}"
    return name + (f",D={point[2]:.4g}" if len(point) > 2 else "")


def _sample_row(result: FitResult, form: Form, multiplier_P, at, jitter) -> dict:
    row = {name: value for name, value in result.params.items() if name not in result.not_identified}
    if result.A_prime is not None:
        row["A_prime"] = result.A_prime
    multipliers = result.multiplier(multiplier_P) if len(multiplier_P) else None
    if multipliers is not None:
        row.update({f"multiplier@P={P:g}": float(m) for P, m in zip(multiplier_P, multipliers, strict=True)})
    if len(at):
        predicted = form.predict(result.params, at[:, 0], at[:, 1], at[:, 2] if at.shape[1] > 2 else None)
        for point, loss, factor in zip(at, predicted, jitter, strict=True):
            name = prediction_name(point)
            row[name] = float(loss)
            row["new_run_" + name] = float(loss * factor)
    return row


def _percentiles(samples: pd.DataFrame, estimates: dict, level: float) -> pd.DataFrame:
    tail = (1.0 - level) / 2.0 * 100.0
    rows = []
    for name, estimate in estimates.items():
        values = samples[name].to_numpy(dtype=float) if name in samples else np.array([])
        values = values[np.isfinite(values)]
        low, high = (np.percentile(values, [tail, 100.0 - tail]) if len(values) else (math.nan, math.nan))
        if name.startswith("new_run_loss@"):
            estimate = estimates[name.removeprefix("new_run_")]
        rows.append({"name": name, "estimate": float(estimate), "low": float(low), "high": float(high)})
    return pd.DataFrame(rows)
