"""The fast method for separable forms (see ``parscale_law.forms``): variable projection, then a polish.

For fixed nonlinear parameters (alpha, k, beta, ...) the loss E + sum_j b_j G_j is linear in E and the
terms' sizes b_j, so a grid over the nonlinear parameters with (E, b) solved in closed form (relative
least squares under E >= its bound, b >= 0, by enumerating which bounds are active) maps the whole
landscape in one vectorised step. The best few local minima of that grid are then polished with L-BFGS-B
on the exact objective with analytic gradients, in a centred parametrisation (x / geometric-mean x,
ln b) that keeps the problem well conditioned.

Fixed parameters leave the search: a fixed nonlinear parameter is a grid of one value, a fixed E moves to
the data's side, and a fixed A or B makes its term's size a known function of its exponent.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

import numpy as np
from scipy.ndimage import minimum_filter
from scipy.optimize import minimize

from .forms import SeparableForm
from .objective import huber_slope, huber_sum, log_residuals
from .table import FitData

# Local minima of the grid that are polished.
POLISHED_MINIMA = 3
# A term's size is kept at least this (so ln b exists) when the linear part puts it at zero.
TINY = 1e-12


def _solve_small(matrix: list[list[np.ndarray]], rhs: list[np.ndarray]) -> list[np.ndarray]:
    """Solve, per cell, a 1x1, 2x2 (closed form) or larger system given as nested lists of per-cell arrays;
    singular cells give inf or NaN."""
    k = len(rhs)
    if k == 1:
        return [rhs[0] / matrix[0][0]]
    if k == 2:
        det = matrix[0][0] * matrix[1][1] - matrix[0][1] * matrix[1][0]
        return [(rhs[0] * matrix[1][1] - matrix[0][1] * rhs[1]) / det,
                (matrix[0][0] * rhs[1] - matrix[1][0] * rhs[0]) / det]
    stacked = np.stack([np.stack(row, axis=-1) for row in matrix], axis=-2)
    ridge = 1e-12 * np.trace(stacked, axis1=-2, axis2=-1)[:, None, None] * np.eye(k)
    solved = np.linalg.solve(stacked + ridge, np.stack(rhs, axis=-1)[..., None])[..., 0]
    return [solved[:, i] for i in range(k)]


def finite_or_none(value: float):
    return value if math.isfinite(value) else None


def _add_term_gradients(gradient: np.ndarray, parts: list[tuple], slope: np.ndarray) -> None:
    """Adds each term's part of the gradient: through its size (ln b, or the exponent where a fixed A or B
    ties ln b to it) and through its nonlinear parameters."""
    for theta_slots, size_slot, line, exponent_slot, term_value, dG, size in parts:
        through_size = slope @ term_value
        if size_slot is not None:
            gradient[size_slot] = through_size
        elif exponent_slot is not None:
            gradient[exponent_slot] += through_size * line[1]
        for (slot, _), derivative in zip(theta_slots, dG, strict=True):
            if slot is not None:
                gradient[slot] += size * (slope @ derivative)


class SeparableProblem:
    """The grid of one data set (its N, P, tokens and fixed parameters), computed once and reused for
    every reweighting (bootstrap counts) or new losses (simulated data) of the same runs."""

    def __init__(self, form: SeparableForm, data: FitData, fixed: Mapping[str, float] | None = None):
        self.form = form
        self.data = data
        self.fixed = dict(fixed or {})
        self.bounds = form.bounds_for(float(np.max(data.P)))
        self.refs = {"N": float(np.exp(np.mean(np.log(data.N)))), "D": 1.0}
        self.x = {"N": data.N / self.refs["N"], "D": None}
        if data.D is not None:
            self.refs["D"] = float(np.exp(np.mean(np.log(data.D))))
            self.x["D"] = data.D / self.refs["D"]
        self.nonlinear = form.nonlinear
        self.E_free = "E" not in self.fixed
        self.free_terms = [j for j, term in enumerate(form.terms) if term.scale not in self.fixed]
        self.free_nonlinear = [name for name in self.nonlinear if name not in self.fixed]
        self.axes = [self._axis(name) for name in self.nonlinear]
        self.grid_shape = tuple(len(axis) for axis in self.axes)
        shape = (math.prod(self.grid_shape), len(data.N))
        self.G = []  # per term: (cells, points)
        self.known = 0.0  # the terms whose size is fixed, (cells, points) when there are any
        mesh = np.meshgrid(*self.axes, indexing="ij")
        for term in form.terms:
            theta = [mesh[self.nonlinear.index(name)].reshape(-1, 1) for name in term.nonlinear]
            with np.errstate(all="ignore"):
                G, _ = term.basis(self.x[term.variable][None, :], data.P[None, :], *theta)
            G = np.broadcast_to(G, shape)
            if term.scale in self.fixed:
                intercept, slope = self._fixed_line(term)
                exponent = mesh[self.nonlinear.index(term.exponent)].reshape(-1, 1)
                with np.errstate(all="ignore"):
                    self.known = self.known + np.exp(intercept + slope * exponent) * G
            self.G.append(np.ascontiguousarray(G))
        self.E_lower = self.bounds["E"][0]
        self._products: dict[tuple[int, int], np.ndarray] = {}

    def _axis(self, name: str) -> np.ndarray:
        if name in self.fixed:
            return np.array([float(self.fixed[name])])
        low, high = self.bounds[name]
        grid = np.asarray(self.form.grids[name], dtype=float)
        inside = grid[(grid >= low) & (grid <= high)]
        return inside if inside.size else np.array([min(max(0.0, low), high)])

    def _fixed_line(self, term) -> tuple[float, float]:
        """ln b = intercept + slope * exponent, for a term whose scale parameter (A or B) is fixed."""
        x0 = self.refs[term.variable]
        value = float(self.fixed[term.scale])
        return (0.0, math.log(value / x0)) if term.inside else (math.log(value), -math.log(x0))

    # --- the grid ------------------------------------------------------------------------------

    def solve(self, delta: float, weights=None, loss=None):
        """(params, optimiser_ok, message) for these weights (default: the data's) and losses."""
        y = self.data.loss if loss is None else np.asarray(loss, dtype=float)
        w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=float)
        E, b = self._linear_part(y, w)
        predicted = self.known + (E[:, None] if self.E_free else self.fixed["E"])
        for j, coefficient in zip(self.free_terms, b, strict=True):
            predicted = predicted + coefficient[:, None] * self.G[j]
        with np.errstate(all="ignore"):
            grid_objective = huber_sum(log_residuals(y, predicted), delta, w, axis=-1)
        grid_objective = np.where(np.isfinite(grid_objective), grid_objective, np.inf).reshape(self.grid_shape)
        is_minimum = ((minimum_filter(grid_objective, size=3, mode="constant", cval=np.inf) == grid_objective)
                      & np.isfinite(grid_objective))
        candidates = np.argwhere(is_minimum)
        order = np.argsort(grid_objective[is_minimum])[:POLISHED_MINIMA]
        best = None
        for index in candidates[order]:
            cell = np.ravel_multi_index(tuple(index), self.grid_shape)
            start = ([E[cell]] if self.E_free else []) + [math.log(coefficient[cell]) for coefficient in b]
            start += [self.axes[self.nonlinear.index(name)][index[self.nonlinear.index(name)]]
                      for name in self.free_nonlinear]
            result = self._polish(np.array(start, dtype=float), y, w, delta)
            if best is None or result.fun < best.fun:
                best = result
        if best is None:
            return {name: math.nan for name in self.form.param_names}, False, "no finite point on the grid"
        ok = bool(best.success) or self._stationary(best)
        return self._params(best.x), ok, f"variable projection + L-BFGS-B ({best.message})"

    def _stationary(self, result) -> bool:
        """L-BFGS-B may stop on "abnormal termination in line search" at an optimum whose gradient is already
        at rounding level; those are accepted (the gradient projected on the bounds: at E's lower bound a
        push further down does not count), the rest reported."""
        if not np.all(np.isfinite(result.x)):
            return False
        gradient = np.array(result.jac, dtype=float)
        low = np.array([b[0] if b[0] is not None else -np.inf for b in result.bounds])
        high = np.array([b[1] if b[1] is not None else np.inf for b in result.bounds])
        blocked = ((result.x <= low) & (gradient > 0)) | ((result.x >= high) & (gradient < 0))
        return float(np.max(np.abs(np.where(blocked, 0.0, gradient)), initial=0.0)) < 1e-5

    def _linear_part(self, y, w):
        """Per grid cell, E and the free terms' sizes b minimising sum v (y - known - E - sum b G)**2 with
        v = w / y**2 (relative errors), E >= its lower bound, b >= 0: every combination of active bounds
        is solved and the best feasible one kept. Arrays are per cell, one per coefficient pair."""
        v = w / y**2
        cells = math.prod(self.grid_shape)
        target = y - (0.0 if self.E_free else self.fixed["E"])
        per_cell = not np.isscalar(self.known)
        if per_cell:
            target = target[None, :] - self.known
        columns = ([None] if self.E_free else []) + list(self.free_terms)  # None: the constant column
        lower = ([self.E_lower] if self.E_free else []) + [0.0] * len(self.free_terms)
        k = len(columns)
        if k == 0:
            return np.zeros(cells), []
        vt = v * target
        rhs = [np.broadcast_to(vt.sum(axis=-1) if j is None
                               else (np.sum(self.G[j] * vt, axis=-1) if per_cell else self.G[j] @ vt), (cells,))
               for j in columns]
        gram = [[None] * k for _ in range(k)]
        for a, ja in enumerate(columns):
            for c in range(a, k):
                jc = columns[c]
                if ja is None and jc is None:
                    value = np.full(cells, v.sum())
                elif ja is None or jc is None:
                    value = self.G[jc if ja is None else ja] @ v
                else:
                    value = self._product(ja, jc) @ v
                gram[a][c] = gram[c][a] = value
        constant = np.broadcast_to(np.sum(vt * target, axis=-1), (cells,))
        best_value = np.full(cells, np.inf)
        best = [np.full(cells, bound) for bound in lower]
        for active in itertools.product((False, True), repeat=k):
            free = [a for a in range(k) if not active[a]]
            beta = [np.full(cells, bound) for bound in lower]
            if free:
                reduced_rhs = [rhs[a] - sum(gram[a][c] * lower[c] for c in range(k) if active[c]) for a in free]
                with np.errstate(all="ignore"):
                    solved = _solve_small([[gram[a][c] for c in free] for a in free], reduced_rhs)
                for a, value in zip(free, solved, strict=True):
                    beta[a] = value
            with np.errstate(all="ignore"):
                feasible = np.logical_and.reduce([np.isfinite(beta[a]) & (beta[a] >= lower[a] - 1e-12)
                                                  for a in range(k)])
                value = constant - 2 * sum(beta[a] * rhs[a] for a in range(k))
                value = value + sum(beta[a] * beta[c] * gram[a][c] for a in range(k) for c in range(k))
            better = feasible & (value < best_value)
            best_value = np.where(better, value, best_value)
            best = [np.where(better, beta[a], best[a]) for a in range(k)]
        E = best[0] if self.E_free else np.zeros(cells)
        sizes = best[1:] if self.E_free else best
        return E, [np.maximum(size, TINY) for size in sizes]

    def _product(self, a: int, c: int) -> np.ndarray:
        """G_a * G_c, cached: it depends on the design only, not on the losses or weights."""
        key = (min(a, c), max(a, c))
        if key not in self._products:
            self._products[key] = self.G[a] * self.G[c]
        return self._products[key]

    # --- the polish ----------------------------------------------------------------------------

    def _unpack(self, z):
        values = dict(self.fixed)
        i = 0
        if self.E_free:
            values["E"], i = z[0], 1
        log_b = {}
        for j in self.free_terms:
            log_b[j], i = z[i], i + 1
        for name in self.free_nonlinear:
            values[name], i = z[i], i + 1
        return values, log_b

    def _polish(self, start, y, w, delta):
        bounds = self._polish_bounds()
        low = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
        high = np.array([np.inf if b[1] is None else b[1] for b in bounds])
        start = np.clip(start, low, high)
        log_y, P = np.log(y), self.data.P
        slots = {name: i for i, name in enumerate(
            ["E"] * self.E_free + [f"b{j}" for j in self.free_terms] + self.free_nonlinear)}
        E_slot, E_value = slots.get("E"), self.fixed.get("E")
        plans = self._term_plans(slots)

        def value_and_gradient(z):
            gradient = np.zeros(len(z))
            predicted = z[E_slot] if E_slot is not None else E_value
            parts = []
            for basis, x, theta_slots, size_slot, line, exponent_slot, exponent_at in plans:
                theta = [z[i] if i is not None else value for i, value in theta_slots]
                G, dG = basis(x, P, *theta)
                size = np.exp(z[size_slot] if size_slot is not None else line[0] + line[1] * theta[exponent_at])
                predicted = predicted + size * G
                parts.append((theta_slots, size_slot, line, exponent_slot, size * G, dG, size))
            r = log_y - np.log(predicted)
            if not math.isfinite(r.sum()):  # NaN or inf anywhere: outside the domain
                return 1e10, gradient
            # Scaled by 1/delta so the objective is O(1) and L-BFGS-B's tolerances mean something.
            value = huber_sum(r, delta, w) / delta
            slope = -w * huber_slope(r, delta) / (delta * predicted)
            if E_slot is not None:
                gradient[E_slot] = slope.sum()
            _add_term_gradients(gradient, parts, slope)
            return value, gradient

        options = {"ftol": 1e-14, "gtol": 1e-10, "maxiter": 2000}
        with np.errstate(all="ignore"):  # the domain's edges are handled in value_and_gradient
            result = minimize(value_and_gradient, start, jac=True, method="L-BFGS-B", bounds=bounds, options=options)
            if not result.success:
                # A line search can stall where the Huber objective's curvature jumps (|r| = delta);
                # restarting from there resets L-BFGS-B's curvature memory and usually finishes the job.
                result = minimize(value_and_gradient, result.x, jac=True, method="L-BFGS-B",
                                  bounds=bounds, options=options)
        result.fun = result.fun * delta
        result.bounds = bounds
        return result

    def _polish_bounds(self) -> list[tuple]:
        """L-BFGS-B's bounds on z = (E, the free terms' ln b, the free nonlinear parameters); None: open."""
        bounds = ([(self.E_lower, None)] if self.E_free else []) + [(None, None)] * len(self.free_terms)
        bounds += [(finite_or_none(self.bounds[n][0]), finite_or_none(self.bounds[n][1])) for n in self.free_nonlinear]
        return bounds

    def _term_plans(self, slots: dict[str, int]) -> list[tuple]:
        """Per term, what the polish needs to evaluate it from z: its basis and x; per nonlinear parameter its
        slot in z or its fixed value; the slot of ln b, or the fixed line giving ln b from the exponent; the
        exponent's slot and its index among the term's nonlinear parameters."""
        plans = []
        for j, term in enumerate(self.form.terms):
            plans.append((
                term.basis, self.x[term.variable],
                [(slots.get(n), self.fixed.get(n)) for n in term.nonlinear],
                slots.get(f"b{j}"), None if f"b{j}" in slots else self._fixed_line(term), slots.get(term.exponent),
                term.nonlinear.index(term.exponent),
            ))
        return plans

    def _params(self, z) -> dict[str, float]:
        values, log_b = self._unpack(z)
        params = {"E": float(values["E"])}
        for j, term in enumerate(self.form.terms):
            if j in log_b:
                params[term.scale] = term.scale_from(float(log_b[j]), float(values[term.exponent]),
                                                     self.refs[term.variable])
            else:
                params[term.scale] = float(self.fixed[term.scale])
        params.update({name: float(values[name]) for name in self.nonlinear})
        return {name: params[name] for name in self.form.param_names}
