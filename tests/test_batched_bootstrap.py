"""The bootstrap's resamples solved together (parscale_law.batched): the same fits as one by one, at a fraction
of the cost."""

from __future__ import annotations

import time

import numpy as np
import pytest

from parscale_law import bootstrap, fit, load_chinchilla, load_published
from parscale_law.batched import BatchedRefit
from parscale_law.fit import fit_data, held_parameters, huber_objective, prepare_for
from parscale_law.forms import get_form
from parscale_law.separable import SeparableProblem


@pytest.mark.parametrize("dataset, scheme", [("pile", "parametric"), ("stack-v2-python", "parametric"),
                                             ("pile", "row"), ("stack-v2-python", "size")])
def test_batched_and_one_by_one_refits_give_the_same_intervals(dataset, scheme):
    table = load_published(dataset)
    batched = bootstrap(table, n=150, seed=3, scheme=scheme, predict_at=[(1.1e10, 8)])
    cold = bootstrap(table, n=150, seed=3, scheme=scheme, predict_at=[(1.1e10, 8)], batched=False)
    assert list(batched.statuses) == list(cold.statuses)
    np.testing.assert_allclose(batched.intervals["low"], cold.intervals["low"], rtol=1e-4)
    np.testing.assert_allclose(batched.intervals["high"], cold.intervals["high"], rtol=1e-4)


def test_every_accepted_resample_reaches_the_one_by_one_objective():
    form = get_form("log")
    data = prepare_for(form, load_published("pile"))
    problem = SeparableProblem(form, data, held_parameters(form, data, {}))
    point = fit_data(form, data, problem=problem)
    rng = np.random.default_rng(0)
    losses = data.loss * np.exp(rng.normal(0, 0.004, (60, len(data.loss))))
    refit = BatchedRefit(problem)
    Z, accepted = refit.solve(refit.start_of(point.params), losses, np.ones_like(losses), 1e-3)
    assert accepted.mean() > 0.9
    for i in np.flatnonzero(accepted):
        resample = data.with_loss(losses[i])
        ours = huber_objective(form, problem._params(Z[i]), resample)
        one_by_one = fit_data(form, resample, problem=problem, residuals=False).objective
        assert ours <= one_by_one * (1 + 1e-8)


def test_a_one_p_tokens_law_bootstraps_batched_like_one_by_one():
    table = load_chinchilla()
    batched = bootstrap(table, n=40, seed=1, form="log-tokens")
    cold = bootstrap(table, n=40, seed=1, form="log-tokens", batched=False)
    np.testing.assert_allclose(batched.intervals["low"], cold.intervals["low"], rtol=1e-4)


def test_a_thousand_resamples_cost_at_most_about_a_hundred_fits():
    table = load_published("pile")
    fit(table)
    started = time.process_time()
    for _ in range(20):
        fit(table)
    one_fit = (time.process_time() - started) / 20
    started = time.process_time()
    bootstrap(table, n=1000, seed=0)
    ratio = (time.process_time() - started) / one_fit
    print(f"bootstrap(1000) / one fit = {ratio:.0f}")
    assert ratio <= 150  # the benchmark's target is 100 (benchmarks/fit_speed.py prints the measured ratio)


def test_a_singular_system_in_one_resample_leaves_the_others_solved():
    # Seen on a 6-run smoke grid at 1000 resamples: one resample's Gauss-Newton system was singular, and
    # numpy's batched solve raised for all of them.
    from parscale_law.batched import _solve_rows

    H = np.array([[[2.0, 0.0], [0.0, 4.0]], [[1.0, 1.0], [1.0, 1.0]]])
    gradient = np.array([[2.0, 4.0], [1.0, 1.0]])
    steps = _solve_rows(H, gradient)
    assert np.allclose(steps[0], [1.0, 1.0]) and np.isnan(steps[1]).all()
