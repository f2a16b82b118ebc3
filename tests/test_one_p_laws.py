"""Laws at one P (issue: the fitter for every scaling-law study): Epoch AI's Chinchilla replication reproduced,
the P effect reported as not identified, the N-only form, compute-optimal allocation and rollouts of any form."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import minimize_scalar

from parscale_law import FitResult, bootstrap, compute_optimal, fit, load_chinchilla, load_published, rollout, simulate
from parscale_law.cli import main
from parscale_law.fit import huber_objective, prepare_for
from parscale_law.forms import get_form
from parscale_law.optimal import optimum_of
from parscale_law.published import EPOCH_FIT, EPOCH_STANDARD_ERRORS, epoch_fit_params


@pytest.fixture(scope="module")
def chinchilla_fit():
    return fit(load_chinchilla(), form="log-tokens")


def test_epoch_outliers_are_dropped_by_the_highest_loss_rule_and_match_epochs_own_marks():
    every = load_chinchilla(drop_outliers=False)
    kept = load_chinchilla()
    assert len(every) == 245 and len(kept) == 240
    dropped = every[~every["source_row"].isin(kept["source_row"])]
    assert set(dropped["source_row"]) == set(every.loc[every["epoch_excluded"] == 1, "source_row"])


def test_the_chinchilla_fit_reaches_epochs_objective_and_lies_within_their_standard_errors(chinchilla_fit):
    result = chinchilla_fit
    assert result.status == "converged" and result.not_identified == ("k",)
    data = prepare_for(get_form("log-tokens"), load_chinchilla())
    theirs = huber_objective(get_form("log-tokens"), epoch_fit_params(), data)
    assert result.objective <= theirs * (1 + 1e-9)
    ours = {"E": result.params["E"], "A_chin": result.A_prime, "B": result.params["B"],
            "alpha": result.params["alpha"], "beta": result.params["beta"]}
    for name, error in EPOCH_STANDARD_ERRORS.items():
        assert abs(ours[name] - EPOCH_FIT[name]) <= error, (name, ours[name], EPOCH_FIT[name], error)


def test_one_p_fits_report_the_p_effect_as_not_identified_and_round_trip_through_json():
    table = load_published("pile").query("P == 1")
    result = fit(table, form="log")
    assert result.not_identified == ("k",) and result.n_params == 3 and result.multiplier(8) is None
    written = result.to_dict()
    assert written["k"] is None and written["params"]["k"] is None and written["not_identified"] == ["k"]
    again = FitResult.from_json(result.to_json())
    assert again.not_identified == ("k",)
    np.testing.assert_allclose(again.predict([1e9, 2e9], [1, 1]), result.predict([1e9, 2e9], [1, 1]))
    # A fixed k on one P is no longer refused; the N-only form is the same law.
    assert fit(table, form="log", fixed={"k": 0}).status == "converged"
    n_only = fit(table, form="N-only")
    assert n_only.objective == pytest.approx(result.objective, rel=1e-6)


def test_the_n_only_form_recovers_a_simulated_law():
    truth = {"E": 1.6, "A": 3e8, "alpha": 0.3}
    table = simulate(truth, form="N-only", N=np.geomspace(1e7, 3e9, 8), P=[1], noise=0.002, seed=3)
    result = fit(table, form="N-only")
    assert result.status == "converged"
    assert result.params["alpha"] == pytest.approx(0.3, rel=0.15)
    assert result.params["E"] == pytest.approx(1.6, rel=0.03)


def test_a_bootstrap_at_one_p_gives_no_k_interval_and_no_p_verdict():
    boot = bootstrap(load_published("pile").query("P == 1"), n=40, seed=0)
    assert "k" not in set(boot.intervals["name"]) and boot.p_effect is None
    assert not any(name.startswith("multiplier@") for name in boot.intervals["name"])


def test_the_compute_optimum_is_the_minimum_along_the_budget_and_reproduces_epochs_tokens_per_param(chinchilla_fit):
    budgets = [1e21, 1e22, 5.76e23, 1e24]
    table = compute_optimal(chinchilla_fit, budgets)
    pd.testing.assert_frame_equal(table, chinchilla_fit.compute_optimal(budgets))
    for _, row in table.iterrows():
        # Brute force along C = 6 N D: the closed form is the minimum.
        def loss_at(log_n, flops=row["flops"]):
            n = math.exp(log_n)
            return float(chinchilla_fit.predict([n], [1], [flops / (6 * n)])[0])
        best = minimize_scalar(loss_at, bounds=(math.log(1e6), math.log(1e14)), method="bounded",
                               options={"xatol": 1e-9})
        assert row["params"] == pytest.approx(math.exp(best.x), rel=1e-3)
        assert row["loss"] == pytest.approx(best.fun, rel=1e-9)
    theirs = optimum_of(epoch_fit_params(), budgets, [1] * len(budgets))["tokens_per_param"]
    np.testing.assert_allclose(table["tokens_per_param"], theirs, rtol=0.05)
    assert 15 < table.loc[table["flops"] == 5.76e23, "tokens_per_param"].item() < 25  # Epoch: about 20


def test_compute_optimal_with_streams_spends_the_budget_p_times_and_takes_bootstrap_intervals():
    truth = {"E": 1.7, "A": 2e8, "alpha": 0.3, "k": 0.4, "B": 800.0, "beta": 0.3}
    table = simulate(truth, form="log-tokens", N=np.geomspace(3e7, 3e9, 5), P=[1, 2, 4],
                     tokens=[2e9, 8e9, 3e10], noise=0.003, seed=1)
    result = fit(table, form="log-tokens")
    optimal = compute_optimal(result, [1e21], [1, 4], bootstrap=bootstrap(table, n=30, form="log-tokens"))
    one, four = optimal.iloc[0], optimal.iloc[1]
    assert 6 * four["params"] * four["tokens"] * 4 == pytest.approx(1e21, rel=1e-9)
    assert four["params_low"] <= four["params"] <= four["params_high"]
    assert one["loss"] < four["loss"]  # four streams cost four times the FLOPs per token


def test_compute_optimal_refuses_a_law_without_tokens_and_a_one_p_law_at_other_p(chinchilla_fit):
    with pytest.raises(ValueError, match="no tokens term"):
        compute_optimal(fit(load_published("pile")), [1e21])
    with pytest.raises(ValueError, match="one P"):
        compute_optimal(chinchilla_fit, [1e21], [1, 2])
    with pytest.raises(ValueError, match="finite and positive"):
        compute_optimal(chinchilla_fit, [float("nan")])


def test_a_rollout_of_a_tokens_law_at_one_p_scores_the_next_size_and_all_larger():
    rolled = rollout(load_chinchilla(), min_sizes=34, form="log-tokens")
    steps = rolled.steps
    assert list(steps["train_sizes"]) == [34, 35, 36, 37]
    assert steps["k"].isna().all() and (steps["next_mape"] < 5).all() and (steps["mape"] < 5).all()
    last = rolled.predictions[rolled.predictions["train_sizes"] == 37]
    assert last["next_size"].all() and steps.iloc[-1]["n_test"] == len(last)


def test_a_rollout_with_a_fixed_parameter_holds_it_at_every_step():
    rolled = rollout(load_published("pile"), form="log", fixed={"E": 1.3})
    assert (rolled.steps["E"] == 1.3).all() and len(rolled.steps) == 3


def test_the_cli_prints_optimal_allocations_and_rollouts(tmp_path, capsys):
    out = tmp_path / "optimal.json"
    assert main(["optimal", "--published", "chinchilla", "--flops", "1e21,1e22", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["table"]
    assert [row["flops"] for row in rows] == [1e21, 1e22] and all(15 < row["tokens_per_param"] < 30 for row in rows)
    assert main(["fit", "--published", "chinchilla", "--form", "log-tokens", "--rollout", "36"]) == 0
    printed = capsys.readouterr().out
    assert "not identified" in printed and "rollout" in printed and "-> next N" in printed


def test_the_scaling_figures_draw_the_frontier_and_the_rollout(tmp_path):
    from analysis.scaling import main as scaling_main

    assert scaling_main(["--published", "chinchilla", "--rollout", "35", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "compute_optimal.png").stat().st_size > 10_000
    assert (tmp_path / "rollout.png").stat().st_size > 10_000


def test_one_p_table_round_trips_through_a_csv(tmp_path):
    path = tmp_path / "ladder.csv"
    load_chinchilla().to_csv(path, index=False)
    assert main(["fit", str(path), "--form", "log-tokens"]) == 0
    assert isinstance(pd.read_csv(path), pd.DataFrame)


def test_a_custom_form_with_a_p_effect_still_needs_two_p_values():
    from parscale_law import InvalidTableError, custom_form

    def law(N, P, E, A, alpha, k):
        return E + (A / (N * (1 + k * np.log(P)))) ** alpha

    form = custom_form("mine", law, bounds={"E": (0, 10), "A": (1, 1e12), "alpha": (0.01, 2), "k": (0, 5)},
                       starts={"E": [1, 2], "A": [1e8, 1e9], "alpha": [0.2, 0.4], "k": [0.2, 0.5]})
    with pytest.raises(InvalidTableError, match="same P"):
        fit(load_published("pile").query("P == 1"), form=form)


def test_the_planner_takes_a_training_budget_per_p(capsys):
    from analysis.budget import budget_plan
    from analysis.plan import main as plan_main

    truth = {"E": 1.7, "A": 2e8, "alpha": 0.3, "k": 0.4, "B": 800.0, "beta": 0.3}
    table = simulate(truth, form="log-tokens", N=np.geomspace(3e7, 3e9, 5), P=[1, 2, 4],
                     tokens=[2e9, 8e9, 3e10], noise=0.003, seed=1)
    rows = budget_plan(fit(table, form="log-tokens"), [1e21], [1, 2, 4], gpu="H100-80GB")
    assert list(rows["P"]) == [1, 2, 4] and rows["fits_gpu"].all()
    np.testing.assert_allclose(6 * rows["params"] * rows["tokens"] * rows["P"], 1e21, rtol=1e-9)
    assert (rows["memory_gb"] > 0).all() and rows["hidden_size"].is_monotonic_decreasing
    assert plan_main(["--published", "chinchilla", "--flops", "1e21,1e23", "--P", "1", "--gpu", "H100-80GB"]) == 0
    printed = capsys.readouterr().out
    assert "N*=2.79e+09" in printed and "N beyond the runs" in printed
    assert plan_main(["--published", "chinchilla", "--flops", "1e21", "--P", "1,2"]) == 2
    assert "one P" in capsys.readouterr().err


def test_a_law_fitted_at_one_p_above_one_answers_for_that_p_only():
    truth = {"E": 1.7, "A": 2e8, "alpha": 0.3, "k": 0.4, "B": 800.0, "beta": 0.3}
    table = simulate(truth, form="log-tokens", N=np.geomspace(3e7, 3e9, 5), P=[2], tokens=[2e9, 8e9, 3e10],
                     noise=0.003, seed=2)
    result = fit(table, form="log-tokens")
    assert result.not_identified == ("k",)
    with pytest.raises(ValueError, match=r"one P \(2\).*P=2"):
        compute_optimal(result, [1e21])
    optimum = compute_optimal(result, [1e21], [2]).iloc[0]
    assert 6 * optimum["params"] * optimum["tokens"] * 2 == pytest.approx(1e21, rel=1e-9)
