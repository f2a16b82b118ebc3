"""Command line: ``python -m parscale_law fit|optimal|compare ...``.

    python -m parscale_law fit --published pile
    python -m parscale_law fit results.csv --dataset pile --bootstrap 1000 --holdout extrapolate-P --json fit.json
    python -m parscale_law fit results.csv --fix E=1.7 --weights weight --bootstrap 1000 --scheme size
    python -m parscale_law fit results.csv --form log-tokens
    python -m parscale_law fit --published chinchilla --form log-tokens --rollout 20
    python -m parscale_law optimal --published chinchilla --flops 1e21,1e22,1e23 --bootstrap 200
    python -m parscale_law compare --published stack-v2-python

Bad input prints one line on stderr and exits with status 2, writing no output file.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .arguments import (
    CommandParser,
    count,
    output_file,
    positive_floats,
    resamples,
    stream_counts,
    warn_if_few_resamples,
)
from .bootstrap import bootstrap, prediction_name
from .compare import compare_forms
from .errors import report_error, warn_if_degenerate
from .fit import METHODS, fit
from .forms import FORMS
from .holdout import STANDARD_SPLITS, holdout, rollout
from .optimal import compute_optimal
from .published import PUBLISHED, load_published
from .resample import SCHEMES
from .table import read_results


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m parscale_law",
                                     description="Fit parallel scaling laws (ParScale, arXiv 2505.10475).")
    commands = parser.add_subparsers(dest="command", required=True)

    fit_cmd = commands.add_parser("fit", help="fit a law to a results table or to the paper's published losses")
    _add_source(fit_cmd)
    fit_cmd.add_argument("--form", default="log", choices=sorted(FORMS),
                         help="functional form (default: the paper's log form)")
    fit_cmd.add_argument("--method", default="fast", choices=METHODS,
                         help="fast (default) or the paper's 300-start recipe")
    fit_cmd.add_argument("--bootstrap", type=resamples, default=0, metavar="N",
                         help="resamples for confidence intervals (e.g. 1000)")
    fit_cmd.add_argument("--scheme", default="parametric", choices=SCHEMES,
                         help="how resamples are drawn (default parametric)")
    fit_cmd.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    fit_cmd.add_argument("--fix", action="append", default=[], metavar="NAME=VALUE",
                         help="hold a parameter at a value, e.g. E=1.7 (repeatable)")
    fit_cmd.add_argument("--weights", metavar="COLUMN", help="column of per-run weights in the objective")
    fit_cmd.add_argument("--predict", action="append", default=[], type=positive_floats, metavar="N,P",
                         help="predicted loss at (N, P), e.g. 1.1e10,8, with an interval under --bootstrap "
                              "(repeatable)")
    fit_cmd.add_argument("--holdout", metavar="SPEC", help=f"{' | '.join(STANDARD_SPLITS)} | 'TRAIN_QUERY:TEST_QUERY'")
    fit_cmd.add_argument("--rollout", type=count, default=0, metavar="MIN_SIZES",
                         help="also fit on the MIN_SIZES smallest sizes, then one more at a time, predicting the rest")
    fit_cmd.add_argument("--json", type=output_file, metavar="OUT", help="write the result as JSON")

    optimal_cmd = commands.add_parser("optimal", help="compute-optimal params and tokens for training budgets")
    _add_source(optimal_cmd)
    optimal_cmd.add_argument("--flops", required=True, type=positive_floats, metavar="C1,C2,...",
                             help="training budgets in FLOPs")
    optimal_cmd.add_argument("--P", default=[1], type=stream_counts, metavar="P1,P2,...",
                             help="stream counts (default 1)")
    optimal_cmd.add_argument("--form", default="log-tokens", help="a form with a tokens term (default log-tokens)")
    optimal_cmd.add_argument("--bootstrap", type=resamples, default=0, metavar="N", help="resamples for intervals")
    optimal_cmd.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    optimal_cmd.add_argument("--json", type=output_file, metavar="OUT", help="write the table as JSON")

    compare_cmd = commands.add_parser("compare", help="compare the built-in forms: R^2, AIC/BIC, held-out error")
    _add_source(compare_cmd)
    compare_cmd.add_argument("--split", default="extrapolate-P", help="held-out split for the comparison")

    args = parser.parse_args(argv)
    try:
        if getattr(args, "bootstrap", 0):
            warn_if_few_resamples(args.bootstrap)
        table, datasets = _load(args)
        if args.command == "optimal":
            _optimal(table, datasets, args)
        elif args.command == "fit":
            report = {name: _fit_one(table, name, args) for name in datasets}
            _print_fits(report)
            if args.json:
                payload = next(iter(report.values())) if len(report) == 1 else report
                args.json.write_text(json.dumps(payload, indent=2, default=_json_default))
                print(f"wrote {args.json}")
        else:
            for name in datasets:
                frame = compare_forms(table, dataset=name, split=args.split).drop(columns="params")
                print(f"\n{name or 'table'}:\n{frame.to_string(index=False, float_format=lambda v: f'{v:.6g}')}")
    except ValueError as error:  # our InvalidTableError / UnknownNameError and friends
        return report_error(error)
    return 0


def _add_source(cmd: CommandParser) -> None:
    source = cmd.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", type=Path, help="results table (.csv or .parquet) with params, P, loss")
    source.add_argument("--published", choices=[*PUBLISHED, "all"],
                        help="the paper's published losses, or Epoch AI's Chinchilla runs")
    cmd.add_argument("--dataset", help="which data set to fit when the table holds several (default: each)")
    cmd.add_argument("--loss-column", default="loss", help="column to fit (loss, or eval_loss)")


def _load(args) -> tuple[pd.DataFrame, list[str | None]]:
    table = load_published(args.published) if args.published else read_results(args.file)
    if args.dataset:
        return table, [args.dataset]
    if "dataset" in table.columns and table["dataset"].nunique() > 1:
        return table, sorted(map(str, table["dataset"].unique()))
    return table, [None]


def _fixed(specs: list[str]) -> dict[str, float]:
    fixed = {}
    for spec in specs:
        name, _, value = spec.partition("=")
        try:
            fixed[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"--fix {spec!r}: write NAME=VALUE, e.g. --fix E=1.7") from None
    return fixed


def _points(specs: list[list[float]], result) -> list[tuple[float, ...]]:
    """The --predict points, checked against the form: (N, P), or (N, P, tokens) with a tokens term."""
    width = 3 if result.law_form.uses_tokens else 2
    for spec in specs:
        if len(spec) != width:
            raise ValueError(f"--predict {','.join(f'{v:g}' for v in spec)}: the {result.form!r} form takes "
                             f"{'N,P,TOKENS' if width == 3 else 'N,P'}, e.g. --predict 1.1e10,8"
                             + (",4.2e10" if width == 3 else ""))
        if spec[1] < 1:
            raise ValueError(f"--predict {spec[0]:g},{spec[1]:g}: P counts streams and must be >= 1")
    return [tuple(spec) for spec in specs]


# A fixed value is refused when the law it leaves explains the losses worse than their mean does (R^2 < 0),
# and flagged when its objective is this many times the free fit's.
FIXED_FLAG_RATIO = 10.0


def check_fixed_fit(result, table, options) -> str | None:
    """Refuses a fit whose fixed parameters the data cannot reach; returns a note when the fixed fit is far
    worse than the free one (None otherwise)."""
    if not result.fixed:
        return None
    fixed = ", ".join(f"{name}={value:g}" for name, value in result.fixed.items())
    free = fit(table, method="fast", **{**options, "fixed": {}})
    if result.r2 < 0:
        raise ValueError(f"--fix {fixed}: the data cannot reach it (R^2 {result.r2:.3g}, objective "
                         f"{result.objective:.3g} against {free.objective:.3g} free); the free fit has "
                         + ", ".join(f"{name}={free.params[name]:.4g}" for name in result.fixed))
    ratio = result.objective / max(free.objective, 1e-300)
    if ratio > FIXED_FLAG_RATIO:
        return (f"note: the fixed fit's objective is {ratio:.0f}x the free fit's "
                + "(" + ", ".join(f"{name}={free.params[name]:.4g}" for name in result.fixed) + " free)")
    return None


def extrapolation_note(table, point: tuple[float, ...], dataset=None) -> str:
    """'' for a point inside the table's N and P; else what lies beyond the data, e.g. 'N 2.5x the largest run'."""
    rows = table if dataset is None or "dataset" not in table.columns else table[table["dataset"] == dataset]
    notes = []
    largest_N, smallest_N, largest_P = rows["params"].max(), rows["params"].min(), rows["P"].max()
    if point[0] > largest_N:
        notes.append(f"N {point[0] / largest_N:.3g}x the largest run")
    elif point[0] < smallest_N:
        notes.append(f"N {smallest_N / point[0]:.3g}x below the smallest run")
    if point[1] > largest_P:
        notes.append(f"P {point[1]:g} beyond the largest P {largest_P:g}")
    return f"extrapolated: {', '.join(notes)}" if notes else ""


def _fit_one(table: pd.DataFrame, dataset: str | None, args) -> dict:
    options = {"form": args.form, "dataset": dataset, "loss_column": args.loss_column, "weights": args.weights,
               "fixed": _fixed(args.fix)}
    result = fit(table, method=args.method, **options)
    out = {"dataset": dataset, **result.to_dict()}
    note = check_fixed_fit(result, table, options)
    if note:
        out["note"] = note
    points = _points(args.predict, result)
    if points:
        out["predictions"] = [{"name": prediction_name(point), "loss": float(np.ravel(result.predict(*point))[0]),
                               "extrapolation": extrapolation_note(table, point, dataset)} for point in points]
    if args.bootstrap:
        out["bootstrap"] = bootstrap(table, n=args.bootstrap, seed=args.seed, scheme=args.scheme,
                                     predict_at=points, **options).to_dict()
    if args.rollout:
        out["rollout"] = rollout(table, min_sizes=args.rollout, form=args.form, method=args.method, dataset=dataset,
                                 loss_column=args.loss_column, fixed=options["fixed"]).to_dict()
    if args.holdout:
        out["holdout"] = holdout(table, split=args.holdout, form=args.form, method=args.method, dataset=dataset,
                                 loss_column=args.loss_column).to_dict()
    return out


def _print_fits(report: dict) -> None:
    for name, out in report.items():
        _print_fit(name, out)
        if "bootstrap" in out:
            _print_bootstrap(out["bootstrap"], out["params"])
        _print_predictions(out)
        if "holdout" in out:
            _print_holdout(out["holdout"])
        if "rollout" in out:
            _print_rollout(out["rollout"])


def _print_fit(name: str | None, out: dict) -> None:
    """The fit's parameters (with their bootstrap intervals), goodness of fit and status."""
    params = out["params"]
    print(f"\n{name or 'table'}  ({out['form']} form, {out['method']} method, {out['n_points']} runs, "
          f"{out['seconds'] * 1e3:.1f} ms)")
    for key, value in params.items():
        if value is None:
            print(f"  {key:<8} {'not identified':>14}   (every run has the same P)")
            continue
        line = f"  {key:<8} {value:>14.6g}"
        interval = _interval(out, key)
        print(line + (f"   [{interval[0]:.6g}, {interval[1]:.6g}]" if interval else ""))
    if out.get("A_prime") is not None:
        print(f"  {'A^alpha':<8} {out['A_prime']:>14.6g}")
    print(f"  R^2 {out['r2']:.4f}   RMSE {out['rmse']:.3g}   objective {out['objective']:.6g}   status {out['status']}")
    if out["fixed"]:
        print(f"  fixed: {', '.join(f'{k}={v:g}' for k, v in out['fixed'].items())}")
    if out["status"] != "converged":
        print(f"  ({out['reason']})")
    if out.get("note"):
        print(f"  {out['note']}")


def _print_bootstrap(boot: dict, params: dict) -> None:
    """The resampling's summary and the intervals of the quantities that are not parameters."""
    print(f"  bootstrap ({boot['scheme']}): {boot['n_resamples']} resamples, {boot['level']:.0%} intervals, "
          f"{boot['n_failed']} failed, {boot['fraction_at_bound']:.0%} at a bound, {boot['seconds']:.1f} s")
    if boot["p_effect"]:
        print(f"  streams: {boot['p_effect']}")
    for row in boot["intervals"]:
        if row["name"] not in params and not row["name"].startswith("loss@"):
            print(f"    {row['name']:<18} {row['estimate']:.4g}   [{row['low']:.4g}, {row['high']:.4g}]")


def _print_predictions(out: dict) -> None:
    """Each --predict point: the loss (its interval is in the bootstrap's rows), flagged when extrapolated."""
    intervals = {row["name"]: row for row in out.get("bootstrap", {}).get("intervals", [])}
    for prediction in out.get("predictions", []):
        row = intervals.get(prediction["name"])
        interval = f"   [{row['low']:.4g}, {row['high']:.4g}]" if row else "   (no interval: add --bootstrap 1000)"
        flag = f"   ({prediction['extrapolation']})" if prediction["extrapolation"] else ""
        print(f"  {prediction['name']:<26} {prediction['loss']:.4g}{interval}{flag}")


def _print_holdout(check: dict) -> None:
    print(f"  holdout train[{check['train']}] -> test[{check['test']}]: MAPE {check['mape']:.3f}%  "
          f"max |rel err| {check['max_abs_rel_error']:.4f}  R^2 {check['r2']:.4f}  NMSE {check['nmse']:.4f}  "
          f"NMAE {check['nmae']:.4f}")


def _print_rollout(rolled: dict) -> None:
    print("  rollout: train sizes -> MAPE of the next size / of all larger sizes (max |rel err|)")
    for step in rolled["steps"]:
        print(f"    {step['train_sizes']:>3} (N <= {step['largest_train_params']:.3g}) -> next N "
              f"{step['next_params']:.3g}: {step['next_mape']:.3f}% / all: {step['mape']:.3f}% "
              f"({step['max_abs_rel_error']:.4f})")


def _optimal(table: pd.DataFrame, datasets: list[str | None], args) -> None:
    """Per data set, the compute-optimal allocation of each budget (with bootstrap intervals if asked)."""
    flops, P = args.flops, args.P
    payload = {}
    for name in datasets:
        result = fit(table, form=args.form, dataset=name)
        warn_if_degenerate(result)
        boot = (bootstrap(table, n=args.bootstrap, seed=args.seed, form=args.form, dataset=name)
                if args.bootstrap else None)
        frame = compute_optimal(result, flops, P, bootstrap=boot)
        frame["extrapolated"] = [extrapolation_note(table, (row.params, row.P), name).removeprefix("extrapolated: ")
                                 for row in frame.itertuples()]
        payload[name or "table"] = frame.to_dict(orient="records")
        print(f"\n{name or 'table'} ({args.form} form, C = 6 N D P):\n"
              f"{frame.to_string(index=False, float_format=lambda v: f'{v:.4g}')}")
    if args.json:
        args.json.write_text(json.dumps(payload, indent=2, default=_json_default))
        print(f"wrote {args.json}")


def _interval(out: dict, key: str):
    for row in out.get("bootstrap", {}).get("intervals", []):
        if row["name"] == key:
            return row["low"], row["high"]
    return None


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
