"""The figures draw what the fit says: each curve, map, band and point is checked against the result objects,
and the files written are valid images of the size asked for."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import equivalence, figures, tables
from analysis.cost import averaged_cost
from analysis.style import SAVE_DPI
from parscale_law import ParScaleLaw, bootstrap, fit, holdout, load_published, simulate


@pytest.fixture(scope="module")
def stack():
    table = load_published("stack-v2-python")
    return table, fit(table)


@pytest.fixture(scope="module")
def stack_boot(stack):
    return bootstrap(stack[0], n=30, seed=0)


def artist(figure, gid):
    found = [a for ax in figure.axes for a in ax.get_children() if a.get_gid() == gid]
    assert len(found) == 1, f"expected one artist {gid!r}, found {len(found)}"
    return found[0]


def saved_size(figure, tmp_path):
    path = tmp_path / "figure.png"
    figure.savefig(path, dpi=SAVE_DPI)
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        return image.size


def test_loss_vs_params_draws_the_fitted_curves_and_the_runs(stack, tmp_path):
    table, result = stack
    figure = figures.loss_vs_params(result, table, title="Stack-V2-Python")
    for P in (1, 2, 4, 8):
        curve = artist(figure, f"fit P={P}")
        np.testing.assert_allclose(curve.get_ydata(), result.predict(curve.get_xdata(), P))
        points = artist(figure, f"observed P={P}").get_offsets()
        runs = table[table["P"] == P]
        np.testing.assert_allclose(points, runs[["params", "loss"]].to_numpy(float))
    text = " ".join(t.get_text() for t in figure.axes[0].texts)
    assert f"{result.params['k']:.4f}" in text and f"{result.r2:.4f}" in text and "4.4B" in text
    width, height = figure.get_size_inches()
    assert saved_size(figure, tmp_path) == (round(width * SAVE_DPI), round(height * SAVE_DPI))


def test_loss_vs_params_labels_each_size_once_over_seeds(stack):
    table, _ = stack
    seeds = pd.concat([table.assign(seed=0), table.assign(seed=1, loss=table["loss"] + 0.01)], ignore_index=True)
    figure = figures.loss_vs_params(fit(seeds), seeds)
    labels = [t for t in figure.axes[0].texts if t.get_text() in set(table["size"])]
    assert sorted(t.get_text() for t in labels) == sorted(set(table["size"]))
    label_1_6b = next(t for t in labels if t.get_text() == "1.6B")
    highest = seeds[(seeds["size"] == "1.6B") & (seeds["P"] == 1)]["loss"].max()
    assert label_1_6b.xy[1] == pytest.approx(highest)


def test_contours_map_the_predicted_loss_over_N_and_P(stack):
    table, result = stack
    figure = figures.loss_contours(result, table)
    mesh = artist(figure, "predicted loss")
    coordinates = mesh.get_coordinates()
    np.testing.assert_allclose(mesh.get_array(), result.predict(coordinates[..., 0], coordinates[..., 1]))
    assert coordinates[..., 1].min() == 1 and coordinates[..., 1].max() >= 8
    np.testing.assert_allclose(artist(figure, "observed").get_offsets(), table[["params", "P"]].to_numpy(float))


def test_equivalence_draws_the_multiplier_band_and_the_collapse(stack, stack_boot):
    table, result = stack
    figure = figures.equivalence(result, stack_boot, table)
    line = artist(figure, "multiplier")
    P = line.get_xdata()
    np.testing.assert_allclose(line.get_ydata(), 1 + result.params["k"] * np.log(P))
    band = artist(figure, "bootstrap band").get_paths()[0].vertices
    low, high = stack_boot.interval("multiplier@P=8")
    at_8 = band[np.isclose(band[:, 0], P[np.argmin(abs(P - 8))])][:, 1]
    assert at_8.min() == pytest.approx(low, rel=0.02) and at_8.max() == pytest.approx(high, rel=0.02)
    for P_value in (1, 8):
        runs = table[table["P"] == P_value]
        points = artist(figure, f"collapsed P={P_value}").get_offsets()
        np.testing.assert_allclose(points[:, 0], runs["params"] * (1 + result.params["k"] * np.log(P_value)))
        # On the P = 1 curve up to each run's own residual.
        residual = result.residuals.loc[result.residuals["P"] == P_value, "residual"].to_numpy()
        np.testing.assert_allclose(points[:, 1] - result.predict(points[:, 0], 1), residual, atol=1e-12)


def test_multiplier_against_N_draws_each_runs_implied_multiplier_and_the_fitted_constant(stack_boot):
    table = load_published("pile")
    result = fit(table)
    boot = bootstrap(table, n=30, seed=0)
    figure = equivalence.multiplier_vs_params(result, boot, table)
    implied = artist(figure, "implied P=8").get_ydata()
    # The reading of the Pile: at P = 8 the streams are worth 1.59x at 0.5B and 1.72x at 4.4B.
    assert implied[0] == pytest.approx(1.59, abs=0.01) and implied[-1] == pytest.approx(1.72, abs=0.01)
    runs = table[table["P"] == 8]
    expected = (result.params["A"] * (runs["loss"] - result.params["E"]) ** (-1 / result.params["alpha"])
                / runs["params"])
    np.testing.assert_allclose(implied, expected.to_numpy())
    constant = artist(figure, "fitted P=8").get_ydata()
    assert constant[0] == constant[1] == pytest.approx(1 + result.params["k"] * np.log(8))
    band = artist(figure, "band P=8").get_paths()[0].vertices[:, 1]
    low, high = boot.interval("multiplier@P=8")
    assert band.min() == pytest.approx(low, rel=0.02) and band.max() == pytest.approx(high, rel=0.02)


def test_streams_to_match_a_larger_model(stack, stack_boot):
    _, result = stack
    table = equivalence.streams_for_multiplier(result, (1.5, 2.0, 3.0), stack_boot)
    k = result.params["k"]
    np.testing.assert_allclose(table["P"], np.exp((table["factor"] - 1) / k), rtol=1e-3)  # 1 + k ln P = factor
    assert list(table["extrapolated"]) == [False, True, True]  # only 1.5x lies within the measured P <= 8
    assert (table["low"] < table["P"]).all() and (table["P"] < table["high"]).all()
    figure = equivalence.streams_to_match(result, stack_boot)
    assert artist(figure, "P for 1.5x").get_offsets()[0][1] == pytest.approx(table["P"][0])
    hurting = fit(simulate(ParScaleLaw(E=1.5, A=4e7, alpha=0.22, k=-0.05), N=np.geomspace(5e7, 5e9, 6)))
    assert np.isinf(equivalence.streams_for_multiplier(hurting)["P"]).all()  # no number of streams is worth more


def test_form_multipliers_side_by_side(stack, stack_boot):
    table, result = stack
    fits = {"log": result, "rho": fit(table, form="rho"), "power": fit(table, form="power")}
    figure = equivalence.form_multipliers(fits, {"log": stack_boot})
    for name, form_fit in fits.items():
        line = artist(figure, f"multiplier {name}")
        np.testing.assert_allclose(line.get_ydata(), form_fit.multiplier(line.get_xdata()))
        assert line.get_xdata().max() == pytest.approx(64)  # 8x the largest measured P
    artist(figure, "band log")
    assert "rho ($\\Delta$AIC" in " ".join(t.get_text() for t in figure.axes[0].get_legend().get_texts())


def test_residuals_draw_heldout_predictions_apart_from_fitted_runs(stack):
    table, result = stack
    check = holdout(table, split="extrapolate-P")
    figure = figures.residuals(result, [check])
    np.testing.assert_allclose(artist(figure, "held-out").get_offsets()[:, 1], -100 * check.predictions["rel_error"])
    assert len(artist(figure, "fitted").get_offsets()) == (table["P"] <= 4).sum()
    eights = artist(figure, "residual P=8").get_offsets()[:, 1]
    fitted = result.residuals[result.residuals["P"] == 8]
    np.testing.assert_allclose(eights, 100 * fitted["residual"] / fitted["loss"])
    assert "P = 8" in figure.axes[1].get_title()


def test_heldout_checks_suit_any_sweep(stack):
    table, _ = stack
    checks = figures.heldout_checks(table)
    assert [(c.train, c.test) for c in checks] == [("P < 8", "P == 8"),
                                                   ("params < 4.30967e+09", "params >= 4.30967e+09")]
    assert set(checks[1].predictions["size"]) == {"4.4B"}
    two_sizes = table[table["size"].isin(["0.5B", "0.7B"])]
    assert len(figures.heldout_checks(two_sizes)) == 1  # one size cannot be fitted alone: that check is skipped


def test_inference_cost_places_each_setting_at_its_modelled_cost(stack):
    table, result = stack
    figure = figures.inference_cost(table, result, batch_sizes=(2,), lengths=(64,))
    memory_panel, latency_panel = figure.axes
    for P in (1, 8):
        memory = [a for a in memory_panel.get_children() if a.get_gid() == f"cost P={P}"][0].get_offsets()
        latency = [a for a in latency_panel.get_children() if a.get_gid() == f"cost P={P}"][0].get_offsets()
        for row, size in enumerate(("1.6B", "2.8B", "4.4B")):
            expected_memory, expected_latency = averaged_cost(size, P, 2, lengths=(64,))
            loss = table.loc[(table["size"] == size) & (table["P"] == P), "loss"].item()
            assert tuple(memory[row]) == pytest.approx((expected_memory, loss))
            assert tuple(latency[row]) == pytest.approx((expected_latency, loss))
    assert "less memory increase" in memory_panel.get_title()


def test_cost_losses_fall_back_to_the_fit_where_no_run_exists(stack):
    table, result = stack
    losses = figures.cost_losses(["1.6B"], [1, 3], table, result).set_index("P")
    assert losses.loc[1, "observed"] and not losses.loc[3, "observed"]
    assert losses.loc[3, "loss"] == pytest.approx(result.predict(losses.loc[3, "params"], 3))
    with pytest.raises(ValueError, match="pass result="):
        figures.cost_losses(["1.6B"], [3], table)


def test_fit_table_in_markdown_and_latex(stack, stack_boot):
    _, result = stack
    summary = tables.fit_table({"stack-v2-python": result}, {"stack-v2-python": stack_boot})
    assert summary.loc[0, "k"] == result.params["k"]
    assert summary.loc[0, "multiplier@P=8"] == pytest.approx(1 + result.params["k"] * np.log(8))
    low, high = stack_boot.interval("k")
    markdown = tables.markdown(summary)
    assert f"{result.params['k']:#.4g} [{low:#.4g}, {high:#.4g}]" in markdown
    assert markdown.count("\n") == 3 and "1 + k ln 8" in markdown
    latex = tables.latex(summary)
    assert r"\toprule" in latex and r"1.131\times10^{7}" in latex and r"\alpha" in latex
    without_intervals = tables.markdown(tables.fit_table({"stack-v2-python": result}))
    assert "[" not in without_intervals


def test_cli_draws_every_figure_from_a_table_without_dataset_column(tmp_path, capsys):
    pile = load_published("pile").drop(columns=["dataset"])
    path = tmp_path / "runs.csv"
    pile.to_csv(path, index=False)
    out = tmp_path / "figures"
    assert figures.main(["--results", str(path), "--out", str(out), "--format", "png,pdf", "--bootstrap", "10"]) == 0
    # One data set: one panel per figure, two for the equivalence, three for the residuals (the fit and
    # two held-out checks), a 2 x 4 grid for the inference cost; inches x 200 dpi.
    sizes = {"loss_vs_params": (700, 540), "loss_contours": (780, 540), "equivalence": (1400, 540),
             "residuals": (1560, 540), "inference_cost": (1600, 880), "multiplier_vs_params": (700, 540),
             "streams_to_match": (700, 540), "form_multipliers": (700, 540)}
    for name, size in sizes.items():
        with Image.open(out / f"{name}.png") as image:
            assert image.format == "PNG" and image.size == size, name
        assert (out / f"{name}.pdf").read_bytes().startswith(b"%PDF")
    assert "| table | 24 |" in (out / "fits.md").read_text()
    assert "wrote" in capsys.readouterr().out


def test_cli_reports_a_bad_table_in_one_line(tmp_path, capsys):
    path = tmp_path / "runs.csv"
    pd.DataFrame({"params": [1e9, 2e9], "loss": [2.0, 1.9]}).to_csv(path, index=False)
    assert figures.main(["--results", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "missing column" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_cli_on_a_sweep_table_with_dataset_column_and_its_own_sizes(tmp_path):
    out = tmp_path / "figures"
    example = str(Path(__file__).resolve().parent.parent / "notebooks" / "example_results.csv")
    sizes = "tiny-32,tiny-64,tiny-128"
    assert figures.main(["--results", example, "--out", str(out), "--bootstrap", "0", "--cost-sizes", sizes]) == 0
    assert "| synthetic-tiny | 24 |" in (out / "fits.md").read_text()  # the failed run is left out
    assert "[" not in (out / "fits.md").read_text()  # no bootstrap, no intervals
    assert figures.main(["--results", example, "--dataset", "pile", "--out", str(out)]) == 2
