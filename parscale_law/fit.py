"""Fitting a law to a results table.

The objective is the paper's (Chen et al. 2025, arXiv 2505.10475, following Hoffmann et al. 2022), in
``parscale_law.objective``: sum over runs of w * Huber_delta(ln L_obs - ln L_pred), delta = 1e-3, every
parameter bounded. Weights default to 1; ``fixed`` parameters are held at given values.

Three methods minimise it:

- ``paper``: the released recipe exactly: L-BFGS-B (finite-difference gradients, scipy's default
  tolerances) from each of the 300 points of the paper's starting grid, every parameter bounded below by
  1e-8, best objective kept. Kept as a cross-check; it takes seconds.
- ``fast`` (default) for the built-in (separable) forms: variable projection over a grid, then a polish
  with analytic gradients (``parscale_law.separable``).
- custom forms get a bounded multi-start instead (``_fit_multistart``).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import minimize

from .errors import InvalidTableError, UnknownNameError
from .forms import PAPER_LOWER_BOUND, Form, SeparableForm, get_form
from .law import ParScaleLaw
from .objective import DELTA, huber_sum, log_residuals
from .separable import SeparableProblem, finite_or_none
from .table import FitData, prepare

METHODS = ("fast", "paper")
STATUSES = ("converged", "at_bound", "failed")

# A parameter within this relative distance of a finite bound is reported as sitting on it.
BOUND_TOLERANCE = 1e-6
# Custom forms: random starts drawn from the box the user's starting values span.
CUSTOM_STARTS = 64


@dataclass
class FitResult:
    """One fitted law: parameters, goodness of fit, residuals and how the optimiser ended.

    ``fixed`` names the parameters held at given values (they are in ``params`` too, and do not count in
    ``n_params``); ``at_bound`` the free ones that ended on a bound of the fit's domain; ``not_identified``
    those the data cannot determine (the P effect, at one P): held where they have no effect, in ``params``
    for predicting, written as null by ``to_dict``.
    """

    form: str
    method: str
    params: dict[str, float]
    objective: float
    r2: float
    rmse: float
    status: str
    reason: str
    n_points: int
    seconds: float
    delta: float = DELTA
    residuals: pd.DataFrame = field(default_factory=pd.DataFrame, repr=False)
    # The form object itself, so custom forms predict; built-in forms are found again by name.
    form_spec: Form | None = field(default=None, repr=False, compare=False)
    fixed: dict[str, float] = field(default_factory=dict)
    at_bound: tuple[str, ...] = ()
    not_identified: tuple[str, ...] = ()

    @property
    def law_form(self) -> Form:
        return self.form_spec if self.form_spec is not None else get_form(self.form)

    @property
    def n_params(self) -> int:
        return len(self.params) - len(self.fixed) - len(self.not_identified)

    @property
    def A_prime(self) -> float | None:
        """A**alpha: the other convention for the scale, A' / (N (k ln P + 1))**alpha + E."""
        if "A" in self.params and "alpha" in self.params:
            # numpy's power gives inf, not OverflowError, for the extreme A of a degenerate resample.
            with np.errstate(over="ignore"):
                return float(np.power(self.params["A"], self.params["alpha"]))
        return None

    @property
    def aic(self) -> float:
        """Akaike information criterion under Gaussian errors on ln L (free parameters counted)."""
        return self.n_points * math.log(self._log_rss() / self.n_points) + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.n_points * math.log(self._log_rss() / self.n_points) + self.n_params * math.log(self.n_points)

    def _log_rss(self) -> float:
        return float(np.sum(self.residuals["log_residual"].to_numpy() ** 2))

    @property
    def law(self) -> ParScaleLaw:
        """The paper's law object (the ``log`` form; ``law_at(tokens)`` for ``log-tokens``)."""
        if self.form == "log-tokens":
            raise ValueError("the log-tokens law depends on the tokens too; use result.law_at(tokens=D)")
        if self.form != "log":
            raise ValueError(f"the {self.form!r} form is not the paper's log law; use result.predict() instead")
        return ParScaleLaw(**{name: self.params[name] for name in ("E", "A", "alpha", "k")})

    def law_at(self, tokens: float) -> ParScaleLaw:
        """The paper's law at a fixed training length: log-tokens' B / D**beta joins E."""
        if self.form != "log-tokens":
            return self.law
        p = self.params
        return ParScaleLaw(E=p["E"] + p["B"] / float(tokens) ** p["beta"], A=p["A"], alpha=p["alpha"], k=p["k"])

    def predict(self, N, P, tokens=None) -> np.ndarray:
        if self.law_form.uses_tokens and tokens is None:
            raise ValueError(f"the {self.form!r} form needs tokens: predict(N, P, tokens=D)")
        return self.law_form.predict(self.params, N, P, tokens)

    def compute_optimal(self, flops, P=1, bootstrap=None) -> pd.DataFrame:
        """The params and tokens that minimise this law's loss at each budget (``parscale_law.optimal``)."""
        from .optimal import compute_optimal

        return compute_optimal(self, flops, P, bootstrap=bootstrap)

    def multiplier(self, P) -> np.ndarray | None:
        """None where the form defines none, or the data (one P) cannot tell it."""
        if self.not_identified:
            return None
        return self.law_form.multiplier(self.params, P)

    @property
    def reported_params(self) -> dict[str, float | None]:
        """The parameters as reported: None for those the data cannot determine."""
        return {name: None if name in self.not_identified else value for name, value in self.params.items()}

    def to_dict(self) -> dict:
        params = self.reported_params
        out = dict(params)
        out.update(
            {
                "A_prime": self.A_prime,
                "objective": self.objective,
                "r2": self.r2,
                "rmse": self.rmse,
                "aic": self.aic,
                "bic": self.bic,
                "status": self.status,
                "reason": self.reason,
                "at_bound": list(self.at_bound),
                "form": self.form,
                "method": self.method,
                "n_points": self.n_points,
                "seconds": self.seconds,
                "delta": self.delta,
                "params": params,
                "fixed": dict(self.fixed),
                "not_identified": list(self.not_identified),
                "residuals": self.residuals.to_dict(orient="records"),
            }
        )
        return out

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_json(cls, text_or_path: str | Path, form: Form | None = None) -> FitResult:
        """Read a result back; pass ``form`` for a custom form (built-in ones are found by name)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        data = json.loads(text)
        not_identified = tuple(data.get("not_identified", ()))
        neutral = (form or get_form(data["form"])).p_neutral if not_identified else {}
        return cls(
            form=data["form"],
            method=data["method"],
            params={name: neutral[name] if name in not_identified else value for name, value in data["params"].items()},
            objective=data["objective"],
            r2=data["r2"],
            rmse=data["rmse"],
            status=data["status"],
            reason=data["reason"],
            n_points=data["n_points"],
            seconds=data["seconds"],
            delta=data["delta"],
            residuals=pd.DataFrame.from_records(data["residuals"]),
            form_spec=form,
            fixed=dict(data.get("fixed", {})),
            at_bound=tuple(data.get("at_bound", ())),
            not_identified=not_identified,
        )


def huber_objective(form: Form, params: dict, data: FitData, delta: float = DELTA, weights=None) -> float:
    """The objective at ``params``: sum of w * Huber_delta(ln L_obs - ln L_pred); inf outside the domain."""
    r = log_residuals(data.loss, form.predict(params, data.N, data.P, data.D))
    if not np.all(np.isfinite(r)):
        return math.inf
    return float(huber_sum(r, delta, _weights(data, weights)))


def fit(
    table: pd.DataFrame,
    form: str | Form = "log",
    method: str = "fast",
    dataset: str | None = None,
    loss_column: str = "loss",
    delta: float = DELTA,
    weights=None,
    fixed: Mapping[str, float] | None = None,
) -> FitResult:
    """Fit ``form`` to a results table (see ``parscale_law.table``) and return a :class:`FitResult`.

    ``weights``: a column name, a Series or one value per row, multiplying each run's term of the
    objective. ``fixed``: parameters held at given values, e.g. ``{"E": 1.7}``. A table at a single P fits
    the built-in forms with their P effect not identified (``FitResult.not_identified``).
    """
    law_form = get_form(form)
    if method not in METHODS:
        raise UnknownNameError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    fixed = check_fixed(law_form, fixed)
    data = prepare_for(law_form, table, dataset=dataset, loss_column=loss_column, weights=weights, fixed=fixed)
    return fit_data(law_form, data, method=method, delta=delta, fixed=fixed)


def check_fixed(form: Form, fixed: Mapping[str, float] | None) -> dict[str, float]:
    """``fixed`` as a dict of floats, refused in one line where it names no parameter of ``form``."""
    fixed = {name: float(value) for name, value in (fixed or {}).items()}
    unknown = sorted(set(fixed) - set(form.param_names))
    if unknown:
        raise UnknownNameError(f"fixed parameter(s) {unknown} are not in the {form.name!r} form's "
                               f"{list(form.param_names)}")
    if len(fixed) == len(form.param_names):
        raise ValueError("every parameter is fixed; leave at least one free to fit")
    for name, value in fixed.items():
        low, high = form.bounds[name]
        if not (math.isfinite(value) and low <= value <= high):
            raise ValueError(f"fixed {name}={value:g} lies outside its bounds [{low:g}, {high:g}]")
    return fixed


def prepare_for(form: Form, table, dataset=None, loss_column="loss", weights=None, fixed=None) -> FitData:
    """The validated arrays ``form`` needs from ``table`` (with its free parameters + 1 runs at least)."""
    free = len(form.param_names) - len(fixed or {})
    data = prepare(table, dataset=dataset, loss_column=loss_column, min_rows=free + 1,
                   need_several_P=form.uses_P and not form.p_neutral,
                   weights=weights, need_tokens=form.uses_tokens)
    if fixed and "k" in fixed:
        low, _ = form.bounds_for(float(np.max(data.P)))["k"]
        if fixed["k"] < low:
            raise InvalidTableError(f"fixed k={fixed['k']:g} makes 1 + k ln P <= 0 at this table's largest P; "
                                    f"use k > {low:.4g}")
    return data


def unidentified(form: Form, data: FitData) -> dict[str, float]:
    """The parameters ``data`` cannot determine, with the value at which they have no effect: at one P, the
    parameters that act only through P."""
    if form.uses_P and np.unique(data.P).size == 1:
        return dict(form.p_neutral)
    return {}


def held_parameters(form: Form, data: FitData, fixed: Mapping[str, float] | None) -> dict[str, float]:
    """What the optimiser holds: the unidentified parameters at their neutral values, then ``fixed``."""
    return {**unidentified(form, data), **(fixed or {})}


def _weights(data: FitData, extra=None):
    """The data's own weights times ``extra`` (a bootstrap's row counts); None when both are absent."""
    if data.weights is None:
        return None if extra is None else np.asarray(extra, dtype=float)
    return data.weights if extra is None else data.weights * np.asarray(extra, dtype=float)


def fit_data(
    form: Form,
    data: FitData,
    method: str = "fast",
    delta: float = DELTA,
    weights=None,
    problem: SeparableProblem | None = None,
    fixed: Mapping[str, float] | None = None,
    residuals: bool = True,
) -> FitResult:
    """Fit validated arrays. ``weights`` (a bootstrap's row counts) multiply the data's own; ``problem``
    caches the fast method's grid across resamples (built with ``held_parameters``); ``residuals=False``
    skips the residual table."""
    started = time.perf_counter()
    fixed = dict(fixed or {})
    held = held_parameters(form, data, fixed)
    w = _weights(data, weights)
    if method == "paper":
        params, optimiser_ok, message, bounds = _fit_paper(form, data, delta, w, held)
    elif isinstance(form, SeparableForm):
        problem = problem or SeparableProblem(form, data, held)
        params, optimiser_ok, message = problem.solve(delta, w, data.loss)
        bounds = problem.bounds
    else:
        params, optimiser_ok, message, bounds = _fit_multistart(form, data, delta, w, held)
    objective = huber_objective(form, params, data, delta, weights)
    status, reason, at_bound = _status(form, params, bounds, held, objective, optimiser_ok, message)
    result = _result(form, method, params, objective, status, reason, at_bound, data, delta, fixed,
                     time.perf_counter() - started, residuals)
    result.not_identified = tuple(name for name in held if name not in fixed)
    return result


def _result(form, method, params, objective, status, reason, at_bound, data, delta, fixed, seconds,
            with_residuals) -> FitResult:
    predicted = form.predict(params, data.N, data.P, data.D)
    with np.errstate(all="ignore"):
        residual = data.loss - predicted
    total = np.sum((data.loss - data.loss.mean()) ** 2)
    r2 = float(1.0 - np.sum(residual**2) / total) if total > 0 else math.nan
    table = pd.DataFrame()
    if with_residuals:
        columns = {c: data.rows[c].to_numpy() for c in ("dataset", "size", "run_id", "seed", "tokens")
                   if c in data.rows.columns}
        columns.update(params=data.N, P=data.P, loss=data.loss, predicted=predicted, residual=residual,
                       log_residual=log_residuals(data.loss, predicted))
        if data.weights is not None:
            columns["weight"] = data.weights
        table = pd.DataFrame(columns)
    return FitResult(
        form=form.name,
        method=method,
        params={name: float(params[name]) for name in form.param_names},
        objective=objective,
        r2=r2,
        rmse=float(np.sqrt(np.mean(residual**2))),
        status=status,
        reason=reason,
        n_points=len(data.loss),
        seconds=seconds,
        delta=delta,
        residuals=table,
        form_spec=form,
        fixed=dict(fixed),
        at_bound=at_bound,
    )


def _status(form: Form, params: dict, bounds, fixed, objective: float, optimiser_ok: bool, message: str):
    values = np.array([params[name] for name in form.param_names], dtype=float)
    if not (np.all(np.isfinite(values)) and math.isfinite(objective)):
        return "failed", f"non-finite result ({message}); check the data for a P or N effect the form can express", ()
    if not optimiser_ok:
        return "failed", f"optimiser did not converge: {message}", ()
    at_bound, names = [], []
    for name in form.param_names:
        if name in fixed:
            continue
        lo, hi = bounds[name]
        for edge in (lo, hi):
            if math.isfinite(edge) and abs(params[name] - edge) <= BOUND_TOLERANCE * max(abs(edge), 1e-2):
                at_bound.append(f"{name}={params[name]:.3g} (bound {edge:.4g})")
                names.append(name)
    if at_bound:
        return "at_bound", "parameter(s) at a bound: " + ", ".join(at_bound), tuple(names)
    return "converged", message, ()


def _objective_in(form: Form, data: FitData, delta: float, weights, fixed, names, scale):
    """The objective over the free parameters ``names`` (in units ``scale``), 1e10 outside the domain."""
    log_loss = np.log(data.loss)

    def objective(x):
        predicted = form.predict({**fixed, **dict(zip(names, x * scale, strict=True))}, data.N, data.P, data.D)
        with np.errstate(all="ignore"):
            value = huber_sum(log_loss - np.log(predicted), delta, weights)
        return value if np.isfinite(value) else 1e10

    return objective


# --- the paper's recipe ---------------------------------------------------------------------------


def _fit_paper(form: Form, data: FitData, delta: float, weights, fixed):
    names = [name for name in form.param_names if name not in fixed]
    scale = np.array([form.scale.get(name, 1.0) for name in names])
    paper_bounds = {name: (max(form.bounds[name][0], PAPER_LOWER_BOUND * form.scale.get(name, 1.0)),
                           form.bounds[name][1]) for name in names}
    bounds = [(paper_bounds[n][0] / s, finite_or_none(paper_bounds[n][1] / s))
              for n, s in zip(names, scale, strict=True)]
    objective = _objective_in(form, data, delta, weights, fixed, names, scale)
    best = None
    for start in itertools.product(*(form.starts[name] for name in names)):
        result = minimize(objective, np.array(start) / scale, method="L-BFGS-B", bounds=bounds)
        if best is None or result.fun < best.fun:
            best = result
    params = {**fixed, **dict(zip(names, best.x * scale, strict=True))}
    message = f"paper recipe: best of {math.prod(len(form.starts[n]) for n in names)} starts ({best.message})"
    return params, True, message, paper_bounds


# --- custom forms ----------------------------------------------------------------------------------


def _fit_multistart(form: Form, data: FitData, delta: float, weights, fixed):
    """Multi-start L-BFGS-B from random points in the box spanned by the user's starting values
    (log-uniform for positive ranges wider than 10x), plus the box's centre; best kept."""
    names = [name for name in form.param_names if name not in fixed]
    bounds_used = form.bounds_for(float(np.max(data.P)))
    scale = np.array([form.scale.get(name, 1.0) for name in names])
    bounds = [(finite_or_none(bounds_used[n][0] / s), finite_or_none(bounds_used[n][1] / s))
              for n, s in zip(names, scale, strict=True)]
    rng = np.random.default_rng(0)
    lows = np.array([min(form.starts[n]) for n in names]) / scale
    highs = np.array([max(form.starts[n]) for n in names]) / scale
    log_box = (lows > 0) & (highs > 10 * lows)
    u = rng.random((CUSTOM_STARTS, len(names)))
    safe_lows, safe_highs = np.where(log_box, lows, 1), np.where(log_box, highs, 1)
    starts = np.where(log_box, np.exp(np.log(safe_lows) + u * (np.log(safe_highs) - np.log(safe_lows))),
                      lows + u * (highs - lows))
    starts = np.vstack([(lows + highs) / 2, starts])
    objective = _objective_in(form, data, delta, weights, fixed, names, scale)

    def scaled(x):
        return objective(x) / delta

    best = None
    for start in starts:
        result = minimize(scaled, start, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-14, "gtol": 1e-10})
        if best is None or result.fun < best.fun:
            best = result
    ok = best.fun < 1e10 / delta
    params = {**fixed, **dict(zip(names, best.x * scale, strict=True))}
    return params, ok, f"multi-start L-BFGS-B, {len(starts)} starts ({best.message})", bounds_used


__all__ = ["FitResult", "fit", "fit_data", "huber_objective", "check_fixed", "prepare_for", "held_parameters",
           "unidentified", "DELTA", "METHODS"]
