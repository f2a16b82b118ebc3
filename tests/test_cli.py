import json
import subprocess
import sys

import pandas as pd
import pytest

from parscale_law import PAPER_FITS, compare_forms, load_published
from parscale_law.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "parscale_law", *args], capture_output=True, text=True, timeout=300)


def test_fit_published_prints_both_tables():
    done = run_cli("fit", "--published", "all")
    assert done.returncode == 0, done.stderr
    for name in PAPER_FITS:
        assert name in done.stdout
    assert "0.3345" in done.stdout or "0.334442" in done.stdout


def test_fit_file_with_json_bootstrap_and_holdout(tmp_path, capsys):
    table = tmp_path / "runs.parquet"
    load_published("all").to_parquet(table)
    out = tmp_path / "fit.json"
    assert main(["fit", str(table), "--dataset", "stack-v2-python", "--bootstrap", "50", "--holdout", "extrapolate-P",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    for key in ("E", "A", "alpha", "k", "objective", "r2"):
        assert isinstance(data[key], float)
    assert data["A"] == pytest.approx(PAPER_FITS["stack-v2-python"]["A"], rel=1e-3)
    assert data["holdout"]["mape"] < 1.0
    assert {row["name"] for row in data["bootstrap"]["intervals"]} >= {"k", "multiplier@P=8"}
    assert "bootstrap (parametric): 50 resamples" in capsys.readouterr().out


def test_fit_with_fixed_weights_scheme_and_predictions(tmp_path, capsys):
    table = tmp_path / "runs.csv"
    load_published("pile").assign(w=1.0).to_csv(table, index=False)
    out = tmp_path / "fit.json"
    assert main(["fit", str(table), "--fix", "E=1.3", "--weights", "w", "--bootstrap", "20", "--scheme", "size",
                 "--predict", "1.1e10,8", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["E"] == 1.3 and data["fixed"] == {"E": 1.3}
    assert data["bootstrap"]["scheme"] == "size" and data["bootstrap"]["p_effect"] == "helps"
    assert "loss@N=1.1e+10,P=8" in {row["name"] for row in data["bootstrap"]["intervals"]}
    printed = capsys.readouterr().out
    assert "fixed: E=1.3" in printed and "streams: helps" in printed
    done = run_cli("fit", str(table), "--fix", "E")
    assert done.returncode == 2 and "NAME=VALUE" in done.stderr


def test_csv_input_and_paper_method(tmp_path):
    table = tmp_path / "pile.csv"
    load_published("pile")[["params", "P", "loss"]].to_csv(table, index=False)
    out = tmp_path / "fit.json"
    assert main(["fit", str(table), "--method", "paper", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["method"] == "paper"


@pytest.mark.parametrize(
    "content, message",
    [
        ("params,P,loss\n1e8,1,3.0\n", "needs at least 5"),
        ("params,P\n1e8,1\n", "missing column"),
        ("params,P,loss\n1e8,0.5,3.0\n2e8,1,2.9\n3e8,2,2.8\n4e8,4,2.7\n5e8,8,2.6\n", "P must be >= 1"),
    ],
)
def test_bad_input_is_one_line_and_no_output_file(tmp_path, content, message):
    table = tmp_path / "bad.csv"
    table.write_text(content)
    out = tmp_path / "fit.json"
    done = run_cli("fit", str(table), "--json", str(out))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and done.stderr.startswith("error:")
    assert not out.exists()


def test_unknown_file_and_split_are_one_line_errors(tmp_path):
    assert run_cli("fit", str(tmp_path / "none.csv")).stderr.startswith("error: ")
    done = run_cli("fit", "--published", "pile", "--holdout", "sideways")
    assert done.returncode == 2 and "unknown split" in done.stderr


def test_compare_forms_prefers_the_papers_log_form():
    frame = compare_forms(load_published("pile"))
    assert list(frame["form"]) == ["log", "rho", "power"]
    best = frame.sort_values("aic").iloc[0]
    assert best["form"] == "log" and best["delta_aic"] == 0
    assert (frame["heldout_mape[extrapolate-P]"] < 1.0).all()
    done = run_cli("compare", "--published", "stack-v2-python")
    assert done.returncode == 0 and "power" in done.stdout


def test_benchmark_command_reports_speed_up_and_objectives(capsys):
    from benchmarks.fit_speed import main as benchmark

    benchmark(["--repeats", "1", "--resamples", "4", "--simulations", "1", "--coverage-resamples", "3"])
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith(("stack-v2-python", "pile"))]
    assert len(rows) == 2 and all(line.rstrip().endswith("True") for line in rows)
    assert out.count("4 resamples") == 2 * 3  # every scheme, both data sets
    schemes = [line[14:25].strip() for line in out.splitlines() if line.startswith(("size offsets", "iid"))]
    assert schemes == ["row", "size", "parametric"] * 2


def test_a_prediction_without_bootstrap_is_the_point_and_says_where_it_extrapolates(capsys):
    assert main(["fit", "--published", "pile", "--predict", "1.1e10,8", "--predict", "1e9,2"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "loss@" in line]
    assert len(lines) == 2 and "no interval: add --bootstrap" in lines[0]
    assert "extrapolated: N 2.49x the largest run" in lines[0] and "extrapolated" not in lines[1]


def test_too_few_resamples_are_warned_and_a_far_fixed_value_is_noted_or_refused(capsys):
    assert main(["fit", "--published", "pile", "--bootstrap", "20"]) == 0
    assert capsys.readouterr().err.startswith("warning: --bootstrap 20: too few resamples")
    assert main(["fit", "--published", "pile", "--fix", "E=1.8"]) == 0  # objective 10.3x the free fit's: noted
    assert "note: the fixed fit's objective is" in capsys.readouterr().out
    assert main(["fit", "--published", "pile", "--fix", "E=5"]) == 2
    assert "--fix E=5: the data cannot reach it" in capsys.readouterr().err


def test_a_plan_from_a_fit_at_a_bound_is_warned(tmp_path, capsys):
    from analysis.plan import main as plan_main

    # Flat losses: no N effect to fit, so A runs to its bound.
    rows = [{"params": N * (1 + 0.05 * (P - 1)), "P": P, "loss": 3.0 + 0.01 * (P - 1)}
            for N in (1e6, 2e6, 4e6, 8e6) for P in (1, 2)]
    pd.DataFrame(rows).to_csv(tmp_path / "flat.csv", index=False)
    plan_main(["--results", str(tmp_path / "flat.csv"), "--target-loss", "2.9", "--bootstrap", "0"])
    assert "warning: the fit's status is at_bound (at a bound: A, k)" in capsys.readouterr().err


def test_a_plan_below_the_smallest_run_is_flagged(capsys):
    from analysis.plan import main as plan_main

    assert plan_main(["--published", "pile", "--target-loss", "5", "--bootstrap", "0", "--P", "1,2"]) == 0
    options = [line for line in capsys.readouterr().out.splitlines() if line.lstrip().startswith("P=")]
    assert len(options) == 2 and all("N outside the runs" in line for line in options)
