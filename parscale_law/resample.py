"""How the bootstrap draws a new data set: the resampling schemes.

- ``row``: runs drawn with replacement (case resampling).
- ``size``: backbone sizes drawn with replacement, each with all its runs (a cluster bootstrap).
- ``cell``: within each (size, P) cell, its replicate seeds drawn with replacement (needs replicates).
- ``parametric``: new losses simulated around the fitted law, with the residuals' variance split into
  components (``variance_components``): a per-size offset shared by all runs of a size, a per-cell
  offset shared by a cell's seeds (only when there are replicate seeds), and per-run noise.

The first three reweight the runs (row counts); the parametric scheme keeps the design and draws losses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from .forms import Form
from .table import FitData

SCHEMES = ("parametric", "row", "size", "cell")


def has_replicates(data: FitData) -> bool:
    return bool(np.bincount(data.cells).max() > 1)


def row_counts(data: FitData, scheme: str, rng: np.random.Generator) -> np.ndarray:
    """How many times each run enters one resample of a reweighting scheme."""
    n = len(data.loss)
    if scheme == "row":
        return rng.multinomial(n, np.full(n, 1.0 / n)).astype(float)
    if scheme == "size":
        n_sizes = int(data.sizes.max()) + 1
        return rng.multinomial(n_sizes, np.full(n_sizes, 1.0 / n_sizes))[data.sizes].astype(float)
    if scheme == "cell":
        counts = np.zeros(n)
        for members in _cell_members(data):
            counts[members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)))
        return counts
    raise ValueError(f"{scheme!r} does not reweight runs")


def _cell_members(data: FitData) -> list[np.ndarray]:
    order = np.argsort(data.cells, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(data.cells[order])) + 1)


@dataclass(frozen=True)
class VarianceComponents:
    """Standard deviations (in log loss) of each level of noise, estimated from a fit's residuals.

    Estimated by the method of moments with the fit's leverage taken into account: a fitted law absorbs
    part of every size's offset (six sizes, three parameters in N), so the raw residuals understate it;
    here each quadratic form of the residuals is matched to its expectation under the linearised fit,
    E[r' A r] = sum_g sigma_g^2 tr(A M Z_g Z_g' M'), M = I - H. Components cannot go below zero
    (non-negative least squares). ``dof`` is each statistic's effective degrees of freedom.
    """

    names: tuple[str, ...]
    sd: tuple[float, ...]
    dof: tuple[float, ...]
    # For drawing the components again (their own uncertainty): the statistics and how they map to variances.
    statistics: np.ndarray
    design: np.ndarray

    def as_dict(self) -> dict[str, float]:
        return dict(zip(self.names, self.sd, strict=True))

    def draw_variances(self, rng: np.random.Generator) -> np.ndarray:
        """Variances consistent with statistics drawn from their scaled chi-square laws: with six sizes the
        size-level variance rests on ~3 degrees of freedom, and a resample must carry that uncertainty."""
        draws = self.statistics * np.asarray(self.dof) / rng.chisquare(np.asarray(self.dof))
        return nnls(self.design, draws)[0]


def variance_components(form: Form, params: dict, data: FitData, free: list[str], weights=None) -> VarianceComponents:
    """Split the fit's log residuals into size, cell (with replicate seeds) and run components."""
    log_mean = np.log(form.predict(params, data.N, data.P, data.D))
    r = np.log(data.loss) - log_mean
    n = len(r)
    J = _jacobian(form, params, data, free, log_mean)
    w = np.ones(n) if weights is None else np.asarray(weights, dtype=float)
    hat = J @ np.linalg.pinv((J * w[:, None]).T @ J) @ (J * w[:, None]).T
    M = np.eye(n) - hat
    groupings = [("size", data.sizes)] + ([("cell", data.cells)] if has_replicates(data) else [])
    projections = [_projection(labels) for _, labels in groupings]
    # Statistics: between sizes, between cells within a size, within cells (or within sizes).
    forms = ([projections[0]] + [projections[i] - projections[i - 1] for i in range(1, len(projections))]
             + [np.eye(n) - projections[-1]])
    names = tuple(name for name, _ in groupings) + ("run",)
    covariances = [M @ _indicator(labels) @ _indicator(labels).T @ M.T for _, labels in groupings] + [M @ M.T]
    design = np.array([[np.trace(A @ S) for S in covariances] for A in forms])
    statistics = np.array([r @ A @ r for A in forms])
    variances = nnls(design, statistics)[0]
    fitted = sum(v * S for v, S in zip(variances, covariances, strict=True))
    dof = []
    for A in forms:
        AS = A @ fitted
        mean, var = np.trace(AS), 2.0 * np.trace(AS @ AS)
        dof.append(float(2.0 * mean**2 / var) if var > 0 else 1.0)
    return VarianceComponents(names, tuple(float(np.sqrt(v)) for v in variances),
                              tuple(max(d, 0.5) for d in dof), statistics, design)


def _indicator(labels: np.ndarray) -> np.ndarray:
    return (labels[:, None] == np.unique(labels)[None, :]).astype(float)


def _projection(labels: np.ndarray) -> np.ndarray:
    Z = _indicator(labels)
    return Z @ np.diag(1.0 / Z.sum(axis=0)) @ Z.T


def _jacobian(form: Form, params: dict, data: FitData, free: list[str], log_mean: np.ndarray) -> np.ndarray:
    """d ln L_pred / d theta for the free parameters, by central differences (relative steps for the
    strictly positive scales A and B, whose natural unit is their logarithm)."""
    columns = []
    for name in free:
        value = params[name]
        step = 1e-5 * max(abs(value), 1e-3)
        up, down = dict(params), dict(params)
        up[name], down[name] = value + step, value - step
        with np.errstate(all="ignore"):
            diff = np.log(form.predict(up, data.N, data.P, data.D)) - np.log(form.predict(down, data.N, data.P, data.D))
        columns.append(diff / (2 * step) * (abs(value) if name in ("A", "B") else 1.0))
    J = np.array(columns).T
    return np.where(np.isfinite(J), J, 0.0)


def simulated_log_loss(log_mean: np.ndarray, data: FitData, names, variances, rng: np.random.Generator) -> np.ndarray:
    """ln L of one parametric resample: the fit's ln L plus a draw of every component."""
    y = log_mean.copy()
    for name, variance in zip(names, variances, strict=True):
        sd = float(np.sqrt(max(variance, 0.0)))
        if name == "run":
            y += rng.normal(0.0, sd, len(y))
        else:
            labels = data.sizes if name == "size" else data.cells
            y += rng.normal(0.0, sd, int(labels.max()) + 1)[labels]
    return y
