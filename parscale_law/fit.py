"""Fitting a law to a results table.

The objective is the paper's (Chen et al. 2025, arXiv 2505.10475, following Hoffmann et al. 2022):
sum over runs of Huber_delta(ln L_obs - ln L_pred), delta = 1e-3, every parameter bounded below.

Two methods minimise it:

- ``paper``: the released recipe exactly: L-BFGS-B (finite-difference gradients, scipy's default
  tolerances) from each of the 300 points of the paper's starting grid, best objective kept.
  Kept as a cross-check; it takes seconds.
- ``fast`` (default): variable projection. For built-in (separable) forms the loss is linear in
  (E, A**alpha) once (alpha, extra) is fixed, so a grid over (alpha, extra) with (E, A**alpha)
  solved in closed form (relative least squares) maps the whole landscape in one vectorised step;
  the best few local minima of that grid are then polished with L-BFGS-B on the exact Huber
  objective with analytic gradients, in a centred parametrisation (N / geometric-mean N, ln A**alpha)
  that keeps the problem well conditioned. Custom forms get a multi-start instead (see ``_fit_custom``).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.ndimage import minimum_filter
from scipy.optimize import minimize
from scipy.special import huber

from .errors import UnknownNameError
from .forms import PAPER_LOWER_BOUND, Form, SeparableForm, get_form
from .law import ParScaleLaw
from .table import FitData, prepare

DELTA = 1e-3
METHODS = ("fast", "paper")
STATUSES = ("converged", "at_bound", "failed")

# A parameter within this relative distance of a finite bound is reported as sitting on it.
BOUND_TOLERANCE = 1e-6
# Local minima of the (alpha, extra) grid that the fast method polishes.
POLISHED_MINIMA = 3
# Where the fast method looks for alpha: exponents of loss power laws are well inside this range.
ALPHA_GRID = np.geomspace(0.01, 3.0, 40)
# Custom forms: random starts drawn from the box the user's starting values span.
CUSTOM_STARTS = 64


@dataclass
class FitResult:
    """One fitted law: parameters, goodness of fit, residuals and how the optimiser ended."""

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

    @property
    def law_form(self) -> Form:
        return self.form_spec if self.form_spec is not None else get_form(self.form)

    @property
    def n_params(self) -> int:
        return len(self.params)

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
        """Akaike information criterion under Gaussian errors on ln L."""
        return self.n_points * math.log(self._log_rss() / self.n_points) + 2 * self.n_params

    @property
    def bic(self) -> float:
        return self.n_points * math.log(self._log_rss() / self.n_points) + self.n_params * math.log(self.n_points)

    def _log_rss(self) -> float:
        return float(np.sum(self.residuals["log_residual"].to_numpy() ** 2))

    @property
    def law(self) -> ParScaleLaw:
        """The paper's law object (only for the ``log`` form)."""
        if self.form != "log":
            raise ValueError(f"the {self.form!r} form is not the paper's log law; use result.predict() instead")
        return ParScaleLaw(**{name: self.params[name] for name in ("E", "A", "alpha", "k")})

    def predict(self, N, P) -> np.ndarray:
        return self.law_form.predict(self.params, N, P)

    def multiplier(self, P) -> np.ndarray | None:
        return self.law_form.multiplier(self.params, P)

    def to_dict(self) -> dict:
        out = {name: value for name, value in self.params.items()}
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
                "form": self.form,
                "method": self.method,
                "n_points": self.n_points,
                "seconds": self.seconds,
                "delta": self.delta,
                "params": dict(self.params),
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
    def from_json(cls, text_or_path: str | Path, form: Form | None = None) -> "FitResult":
        """Read a result back; pass ``form`` for a custom form (built-in ones are found by name)."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        data = json.loads(text)
        return cls(
            form=data["form"],
            method=data["method"],
            params=dict(data["params"]),
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
        )


def huber_objective(form: Form, params: dict, data: FitData, delta: float = DELTA, weights=None) -> float:
    """The paper's objective: sum of Huber_delta(ln L_obs - ln L_pred)."""
    predicted = form.predict(params, data.N, data.P)
    with np.errstate(all="ignore"):
        r = np.log(data.loss) - np.log(predicted)
    if not np.all(np.isfinite(r)):
        return math.inf
    terms = huber(delta, r)
    return float(np.sum(terms if weights is None else weights * terms))


def fit(
    table: pd.DataFrame,
    form: str | Form = "log",
    method: str = "fast",
    dataset: str | None = None,
    loss_column: str = "loss",
    delta: float = DELTA,
) -> FitResult:
    """Fit ``form`` to a results table (see ``parscale_law.table``) and return a :class:`FitResult`."""
    law_form = get_form(form)
    if method not in METHODS:
        raise UnknownNameError(f"unknown method {method!r}; choose one of {list(METHODS)}")
    data = prepare(
        table,
        dataset=dataset,
        loss_column=loss_column,
        min_rows=len(law_form.param_names) + 1,
        need_several_P=law_form.uses_P,
    )
    return fit_data(law_form, data, method=method, delta=delta)


def fit_data(form: Form, data: FitData, method: str = "fast", delta: float = DELTA, weights=None, problem=None) -> FitResult:
    """Fit validated arrays; ``weights`` (row counts) serve the bootstrap, ``problem`` caches its grid."""
    started = time.perf_counter()
    if method == "paper":
        params, optimiser_ok, message = _fit_paper(form, data, delta)
    elif isinstance(form, SeparableForm):
        problem = problem or SeparableProblem(form, data)
        params, optimiser_ok, message = problem.solve(delta, weights)
    else:
        params, optimiser_ok, message = _fit_custom(form, data, delta, weights)
    objective = huber_objective(form, params, data, delta, weights)
    status, reason = _status(form, params, objective, optimiser_ok, message)
    return _result(form, method, params, objective, status, reason, data, delta, time.perf_counter() - started)


def _result(form, method, params, objective, status, reason, data, delta, seconds) -> FitResult:
    predicted = form.predict(params, data.N, data.P)
    with np.errstate(all="ignore"):
        residual = data.loss - predicted
        log_residual = np.log(data.loss) - np.log(predicted)
    total = np.sum((data.loss - data.loss.mean()) ** 2)
    r2 = float(1.0 - np.sum(residual**2) / total) if total > 0 else math.nan
    keep = [c for c in ("dataset", "size", "run_id", "seed") if c in data.rows.columns]
    residuals = data.rows[keep].reset_index(drop=True).assign(
        params=data.N, P=data.P, loss=data.loss, predicted=predicted, residual=residual, log_residual=log_residual
    )
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
        residuals=residuals,
        form_spec=form,
    )


def _status(form: Form, params: dict, objective: float, optimiser_ok: bool, message: str) -> tuple[str, str]:
    values = np.array([params[name] for name in form.param_names], dtype=float)
    if not (np.all(np.isfinite(values)) and math.isfinite(objective)):
        return "failed", f"non-finite result ({message}); check the data for a P or N effect the form can express"
    if not optimiser_ok:
        return "failed", f"optimiser did not converge: {message}"
    at_bound = []
    for name in form.param_names:
        lo, hi = form.bounds[name]
        for edge in (lo, hi):
            if math.isfinite(edge) and abs(params[name] - edge) <= BOUND_TOLERANCE * max(abs(edge), 1e-2):
                at_bound.append(f"{name}={params[name]:.3g} (bound {edge:g})")
    if at_bound:
        return "at_bound", "parameter(s) at a bound: " + ", ".join(at_bound)
    return "converged", message


# --- the paper's recipe ---------------------------------------------------------------------------


def _fit_paper(form: Form, data: FitData, delta: float):
    names = form.param_names
    scale = np.array([form.scale.get(name, 1.0) for name in names])
    bounds = [
        (max(form.bounds[name][0] / s, PAPER_LOWER_BOUND), _finite(form.bounds[name][1] / s))
        for name, s in zip(names, scale)
    ]
    log_loss = np.log(data.loss)

    def objective(x):
        predicted = form.predict(dict(zip(names, x * scale)), data.N, data.P)
        with np.errstate(all="ignore"):
            value = np.sum(huber(delta, log_loss - np.log(predicted)))
        return value if np.isfinite(value) else 1e10

    best = None
    for start in itertools.product(*(form.starts[name] for name in names)):
        result = minimize(objective, np.array(start) / scale, method="L-BFGS-B", bounds=bounds)
        if best is None or result.fun < best.fun:
            best = result
    return dict(zip(names, best.x * scale)), True, f"paper recipe: best of {math.prod(len(form.starts[n]) for n in names)} starts ({best.message})"


# --- the fast method for separable forms -----------------------------------------------------------


class SeparableProblem:
    """The (alpha, extra) grid of one data set, computed once and reused across bootstrap resamples."""

    def __init__(self, form: SeparableForm, data: FitData):
        self.form = form
        self.data = data
        self.N0 = float(np.exp(np.mean(np.log(data.N))))
        self.n = data.N / self.N0
        self.log_loss = np.log(data.loss)
        extra_lo, extra_hi = form.bounds[form.extra]
        self.alphas = ALPHA_GRID
        self.extras = np.clip(np.asarray(form.extra_grid, dtype=float), extra_lo, extra_hi)
        a, x = np.meshgrid(self.alphas, self.extras, indexing="ij")
        with np.errstate(all="ignore"):
            G, _, _ = form.basis(self.n[None, None, :], data.P[None, None, :], a[..., None], x[..., None])
        self.G = G  # (alphas, extras, points)
        self.E_lower = form.bounds["E"][0]

    def solve(self, delta: float, weights=None):
        w = np.ones_like(self.data.loss) if weights is None else np.asarray(weights, dtype=float)
        E, b = self._linear_part(w)
        with np.errstate(all="ignore"):
            predicted = E[..., None] + b[..., None] * self.G
            grid_objective = np.sum(w * huber(delta, self.log_loss - np.log(predicted)), axis=-1)
        grid_objective = np.where(np.isfinite(grid_objective), grid_objective, np.inf)
        is_minimum = (minimum_filter(grid_objective, size=3, mode="constant", cval=np.inf) == grid_objective) & np.isfinite(grid_objective)
        candidates = np.argwhere(is_minimum)
        order = np.argsort(grid_objective[is_minimum])[:POLISHED_MINIMA]
        best = None
        for i, j in candidates[order]:
            start = np.array([E[i, j], math.log(b[i, j]), self.alphas[i], self.extras[j]])
            result = self._polish(start, w, delta)
            if best is None or result.fun < best.fun:
                best = result
        if best is None:
            return {name: math.nan for name in self.form.param_names}, False, "no finite point on the (alpha, extra) grid"
        E_fit, log_b, alpha, extra = best.x
        with np.errstate(all="ignore"):
            A = self.N0 * math.exp(min(log_b / alpha, 700.0)) if alpha > 0 else math.inf
        params = {"E": E_fit, "A": A, "alpha": alpha, self.form.extra: extra}
        return params, bool(best.success) or self._stationary(best), f"variable projection + L-BFGS-B ({best.message})"

    def _linear_part(self, w):
        """Per grid cell, E and b minimising sum w ((y - E - b G) / y)**2 with E >= lower bound, b > 0."""
        y = self.data.loss
        v = w / y**2
        S, Sy = v.sum(), (v * y).sum()
        Sg, Sgg, Sgy = self.G @ v, (self.G**2) @ v, self.G @ (v * y)
        with np.errstate(all="ignore"):
            det = S * Sgg - Sg**2
            b = (S * Sgy - Sg * Sy) / det
            E = (Sy - b * Sg) / S
            low = E < self.E_lower
            E = np.where(low, self.E_lower, E)
            b = np.where(low, (Sgy - self.E_lower * Sg) / Sgg, b)
        tiny = 1e-12
        flat = ~(b > tiny)
        b = np.where(flat, tiny, b)
        E = np.where(flat, np.maximum(Sy / S, self.E_lower), E)
        return E, b

    def _polish(self, start, w, delta):
        form = self.form
        lo_E = form.bounds["E"][0]
        lo_a, hi_a = form.bounds["alpha"]
        lo_x, hi_x = form.bounds[form.extra]
        bounds = [(lo_E, None), (None, None), (lo_a, _finite(hi_a)), (lo_x, _finite(hi_x))]
        start = np.clip(start, [lo_E, -np.inf, lo_a, lo_x], [np.inf, np.inf, hi_a, hi_x])
        n, P, y_log = self.n, self.data.P, self.log_loss

        def value_and_gradient(z):
            E, log_b, alpha, extra = z
            with np.errstate(all="ignore"):
                G, dG_alpha, dG_extra = form.basis(n, P, alpha, extra)
                b = np.exp(log_b)
                predicted = E + b * G
                r = y_log - np.log(predicted)
            if not np.all(np.isfinite(r)):
                return 1e10, np.zeros(4)
            # Scaled by 1/delta so the objective is O(1) and L-BFGS-B's tolerances mean something.
            value = np.sum(w * huber(delta, r)) / delta
            slope = -w * np.clip(r, -delta, delta) / (delta * predicted)
            gradient = np.array([slope.sum(), (slope * b * G).sum(), (slope * b * dG_alpha).sum(), (slope * b * dG_extra).sum()])
            return value, gradient

        options = {"ftol": 1e-14, "gtol": 1e-10, "maxiter": 2000}
        result = minimize(value_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        if not result.success:
            # A line search can stall where the Huber objective's curvature jumps (|r| = delta);
            # restarting from there resets L-BFGS-B's curvature memory and usually finishes the job.
            result = minimize(value_and_gradient, result.x, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
        result.fun = result.fun * delta
        return result

    @staticmethod
    def _stationary(result) -> bool:
        # L-BFGS-B may stop on "abnormal termination in line search" at an optimum whose gradient is
        # already at rounding level; accept those, report the rest.
        return bool(np.all(np.isfinite(result.x))) and float(np.max(np.abs(result.jac))) < 1e-5


def _finite(value: float):
    return value if math.isfinite(value) else None


# --- custom forms ----------------------------------------------------------------------------------


def _fit_custom(form: Form, data: FitData, delta: float, weights=None):
    """Multi-start L-BFGS-B from random points in the box spanned by the user's starting values
    (log-uniform for positive ranges wider than 10x), plus the box's corners' centre; best kept."""
    names = form.param_names
    scale = np.array([form.scale.get(name, 1.0) for name in names])
    bounds = [(_finite(form.bounds[n][0] / s), _finite(form.bounds[n][1] / s)) for n, s in zip(names, scale)]
    rng = np.random.default_rng(0)
    lows = np.array([min(form.starts[n]) for n in names]) / scale
    highs = np.array([max(form.starts[n]) for n in names]) / scale
    log_box = (lows > 0) & (highs > 10 * lows)
    u = rng.random((CUSTOM_STARTS, len(names)))
    starts = np.where(
        log_box,
        np.exp(np.log(np.where(log_box, lows, 1)) + u * (np.log(np.where(log_box, highs, 1)) - np.log(np.where(log_box, lows, 1)))),
        lows + u * (highs - lows),
    )
    starts = np.vstack([(lows + highs) / 2, starts])
    log_loss = np.log(data.loss)
    w = np.ones_like(log_loss) if weights is None else np.asarray(weights, dtype=float)

    def objective(x):
        predicted = form.predict(dict(zip(names, x * scale)), data.N, data.P)
        with np.errstate(all="ignore"):
            value = np.sum(w * huber(delta, log_loss - np.log(predicted))) / delta
        return value if np.isfinite(value) else 1e10

    best = None
    for start in starts:
        result = minimize(objective, start, method="L-BFGS-B", bounds=bounds, options={"ftol": 1e-14, "gtol": 1e-10})
        if best is None or result.fun < best.fun:
            best = result
    ok = best.fun < 1e10
    return dict(zip(names, best.x * scale)), ok, f"multi-start L-BFGS-B, {len(starts)} starts ({best.message})"


__all__ = ["FitResult", "fit", "fit_data", "huber_objective", "SeparableProblem", "DELTA", "METHODS"]
