"""Many refits of one data set at once: the bootstrap's resamples solved together.

Every resample of a bootstrap has the same runs (N, P, tokens) and differs only in its losses (the parametric
scheme) or in how often each run counts (the row, size and cell schemes), so its optimum lies near the point
fit's. Started there, all resamples are refined together by a damped Gauss-Newton method for the Huber
objective (iteratively reweighted least squares: weight min(1, delta / |r|) per run), in the fast method's
parametrisation (``SeparableProblem``: E, ln of each term's size, the nonlinear parameters), one small linear
system per resample per iteration, all solved in one batched call; a coordinate on its bound with the gradient
pushing outward stays there. A resample is accepted when it ends inside the bounds with its gradient at the
polish's tolerance; the others (a bound, a far optimum, a stalled step) are refitted one by one by the fast
method. Every resample ends
where ``fit_data`` would put it (tests/test_batched_bootstrap.py compares them).
"""

from __future__ import annotations

import numpy as np

from .objective import huber_sum
from .separable import SeparableProblem

# A resample is accepted when every component of its gradient (of the objective / delta) is below this:
# the polish's own acceptance of a stationary point (SeparableProblem._stationary).
GRADIENT_TOLERANCE = 1e-5
MAX_ITERATIONS = 300


class BatchedRefit:
    """Refits of ``problem`` for many loss vectors and weight vectors at once, from one start."""

    def __init__(self, problem: SeparableProblem):
        self.problem = problem
        names = ["E"] * problem.E_free + [f"b{j}" for j in problem.free_terms] + problem.free_nonlinear
        self.slots = {name: i for i, name in enumerate(names)}
        self.plans = problem._term_plans(self.slots)
        bounds = problem._polish_bounds()
        self.low = np.array([-np.inf if b[0] is None else b[0] for b in bounds])
        self.high = np.array([np.inf if b[1] is None else b[1] for b in bounds])

    def start_of(self, params: dict) -> np.ndarray:
        """The point ``params`` (a fit's) in the polish's coordinates."""
        z = np.zeros(len(self.slots))
        if "E" in self.slots:
            z[self.slots["E"]] = params["E"]
        for j, term in enumerate(self.problem.form.terms):
            if f"b{j}" in self.slots:
                x0, exponent = self.problem.refs[term.variable], params[term.exponent]
                log_b = (exponent * np.log(params[term.scale] / x0) if term.inside
                         else np.log(params[term.scale]) - exponent * np.log(x0))
                z[self.slots[f"b{j}"]] = log_b
        for name in self.problem.free_nonlinear:
            z[self.slots[name]] = params[name]
        return np.clip(z, self.low, self.high)

    def _predict(self, Z: np.ndarray):
        """Predicted losses (R, n) and their derivatives by each coordinate (R, n, m)."""
        P = self.problem.data.P[None, :]
        fixed_E = self.problem.fixed.get("E")
        predicted = Z[:, [self.slots["E"]]] if "E" in self.slots else np.full((len(Z), 1), fixed_E)
        derivative = np.zeros((len(Z), len(P[0]), Z.shape[1]))
        if "E" in self.slots:
            derivative[:, :, self.slots["E"]] = 1.0
        for basis, x, theta_slots, size_slot, line, exponent_slot, exponent_at in self.plans:
            theta = [Z[:, [i]] if i is not None else value for i, value in theta_slots]
            G, dG = basis(x[None, :], P, *theta)
            if size_slot is not None:
                size = np.exp(Z[:, [size_slot]])
            else:
                size = np.exp(line[0] + line[1] * theta[exponent_at])
            term = size * G
            predicted = predicted + term
            if size_slot is not None:
                derivative[:, :, size_slot] += term
            elif exponent_slot is not None:
                derivative[:, :, exponent_slot] += term * line[1]
            for (slot, _), d in zip(theta_slots, dG, strict=True):
                if slot is not None:
                    derivative[:, :, slot] += size * d
        return predicted, derivative

    def _objective(self, Z, log_y, W, delta):
        with np.errstate(all="ignore"):
            predicted, derivative = self._predict(Z)
            r = log_y - np.log(predicted)
            value = huber_sum(r, delta, W, axis=-1) / delta
        return np.where(np.isfinite(value), value, np.inf), r, predicted, derivative

    def solve(self, start: np.ndarray, Y: np.ndarray, W: np.ndarray, delta: float):
        """Each row of losses ``Y`` (R, n) with run weights ``W`` (R, n), from ``start``; returns the
        coordinates (R, m) and whether each resample reached a stationary point inside the bounds."""
        log_y = np.log(Y)
        Z = np.repeat(start[None, :], len(Y), axis=0)
        value, r, predicted, derivative = self._objective(Z, log_y, W, delta)
        damping = np.full(len(Y), 1e-3)
        done = np.zeros(len(Y), dtype=bool)  # stationary: accepted
        stuck = np.zeros(len(Y), dtype=bool)  # no step helps any more: left to the one-by-one fit
        for _ in range(MAX_ITERATIONS):
            a = np.flatnonzero(~done & ~stuck)
            if not len(a):
                break
            J = -derivative[a] / predicted[a][:, :, None]  # d r / d z
            psi = np.clip(r[a], -delta, delta) * W[a] / delta  # d objective / d r
            gradient = np.einsum("rn,rnm->rm", psi, J)
            stationary = self._stationary(Z[a], gradient)
            done[a[stationary]] = True
            keep = ~stationary
            a, J, gradient = a[keep], J[keep], gradient[keep]
            if not len(a):
                break
            with np.errstate(all="ignore"):
                omega = W[a] * np.minimum(1.0, delta / np.abs(r[a])) / delta
            H = np.einsum("rn,rnm,rnk->rmk", omega, J, J)
            # A coordinate on its bound whose gradient pushes outward stays there (an active set).
            held = self._blocked(Z[a], gradient)
            gradient = np.where(held, 0.0, gradient)
            free = ~held
            H = H * (free[:, :, None] & free[:, None, :]) + np.eye(H.shape[1]) * held[:, :, None]
            scale = np.maximum(np.einsum("rmm->rm", H), 1e-300)
            H = H + (damping[a][:, None] * scale)[:, :, None] * np.eye(H.shape[1])
            step = -_solve_rows(H, gradient)
            candidate = np.clip(Z[a] + step, self.low, self.high)
            new_value, new_r, new_predicted, new_derivative = self._objective(candidate, log_y[a], W[a], delta)
            better = new_value <= value[a]
            take = a[better]
            Z[take], value[take], r[take] = candidate[better], new_value[better], new_r[better]
            predicted[take], derivative[take] = new_predicted[better], new_derivative[better]
            damping[a] = np.where(better, damping[a] / 3.0, damping[a] * 4.0)
            stuck[a] = damping[a] > 1e10
        return Z, done

    def _blocked(self, Z, gradient) -> np.ndarray:
        return ((Z <= self.low) & (gradient > 0)) | ((Z >= self.high) & (gradient < 0))

    def _stationary(self, Z, gradient) -> np.ndarray:
        """Projected gradient at the tolerance, inside the bounds. A resample resting on a bound is left to the
        one-by-one fit: the fast method's grid may find a lower optimum inside (seen on resampled sizes)."""
        small = np.max(np.abs(gradient), axis=1) < GRADIENT_TOLERANCE
        inside = np.all((Z > self.low) & (Z < self.high), axis=1)
        return small & inside & np.all(np.isfinite(Z), axis=1)


def refit_resamples(form, data, problem, point, losses, weights, delta: float, fixed, batched: bool = True) -> list:
    """The fits of every resample (row i: losses ``losses[i]``, run weights ``weights[i]``, either None for
    the data's own), solved together from the point fit where the form is separable, one by one elsewhere
    and for the resamples the batch leaves (a bound reached, a far optimum). Each is a FitResult as
    ``fit_data`` returns it, without residuals. ``problem``: the separable form's grid (None for other forms);
    ``batched=False`` fits every resample one by one."""
    from .fit import _result, _status, _weights, fit_data, held_parameters, huber_objective

    def one_by_one(i):
        resample = data if losses[i] is None else data.with_loss(losses[i])
        return fit_data(form, resample, delta=delta, weights=weights[i], problem=problem, fixed=fixed,
                        residuals=False)

    if not batched or problem is None or point.status == "failed":
        return [one_by_one(i) for i in range(len(losses))]
    Y = np.array([data.loss if loss is None else loss for loss in losses], dtype=float)
    own = _weights(data)
    W = np.array([(np.ones_like(data.loss) if own is None else own) * (1.0 if w is None else np.asarray(w))
                  for w in weights], dtype=float)
    refit = BatchedRefit(problem)
    Z, accepted = refit.solve(refit.start_of(point.params), Y, W, delta)
    held = held_parameters(form, data, fixed)
    results = []
    for i in range(len(losses)):
        if not accepted[i]:
            results.append(one_by_one(i))
            continue
        resample = data if losses[i] is None else data.with_loss(losses[i])
        params = problem._params(Z[i])
        objective = huber_objective(form, params, resample, delta, weights[i])
        status, reason, at_bound = _status(form, params, problem.bounds, held, objective, True,
                                           "batched Gauss-Newton from the point fit")
        result = _result(form, "fast", params, objective, status, reason, at_bound, resample, delta, fixed, 0.0,
                         False)
        result.not_identified = point.not_identified
        results.append(result)
    return results


def _solve_rows(H: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """H[i]^-1 gradient[i] for every row; a row whose system is singular (a resample whose law lost a term's
    influence on every run) gets NaN, so its step is rejected and its damping grows until the one-by-one fit
    takes it over."""
    with np.errstate(all="ignore"):
        try:
            return np.linalg.solve(H, gradient[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            steps = np.full_like(gradient, np.nan)
            for i in range(len(H)):
                try:
                    steps[i] = np.linalg.solve(H[i], gradient[i])
                except np.linalg.LinAlgError:
                    continue
            return steps
