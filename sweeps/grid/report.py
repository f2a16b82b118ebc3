"""After a sweep: collect the results table, fit the law with bootstrap intervals, draw the figures and
print a summary. Hydra calls `SweepReport.on_multirun_end` when `python -m sweeps.launch` returns; run it
by hand for a sweep that finished on a cluster with `python -m sweeps.report SWEEP_DIR` (sweeps/report.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
from hydra.experimental.callback import Callback

from parscale_law import InvalidTableError, bootstrap, fit
from parscale_law.table import write_results
from sweeps.errors import first_line
from sweeps.grid.cells import STATES, sweep_cells
from sweeps.grid.collect import collect_runs

FIGURE_FORMATS = ("png",)


def report(sweep_dir: Path, n_bootstrap: int = 1000, seed: int = 0) -> bool:
    """Writes results.csv, fit.json, figures/ into ``sweep_dir`` and prints a summary; True if no cell failed
    or was blocked. A two-stage boundary sweep (several stage2_fraction values) gets a fit per value, in
    F<value>/ below the sweep directory."""
    sweep_dir = Path(sweep_dir)
    cells = sweep_cells(sweep_dir)
    counts = {state: sum(cell.state == state for cell in cells) for state in STATES}
    print(f"\nsweep {sweep_dir}: "
          + ", ".join(f"{counts[state]} {state}" for state in STATES if counts[state] or state != "blocked"))
    for cell in cells:
        if cell.state in ("failed", "blocked"):
            print(f"  {cell.state}: {cell.name}: {cell.detail}")
    succeeded = counts["failed"] == 0 and counts["blocked"] == 0
    if counts["pending"] or counts["running"]:
        print(f"  not finished: watch with `python -m sweeps.status {sweep_dir}`, "
              f"then run `python -m sweeps.report {sweep_dir}`")
        return succeeded

    table = collect_runs(sweep_dir)
    results_path = sweep_dir / "results.csv"
    write_results(table, results_path)
    print(f"  results table: {results_path} ({len(table)} runs)")
    _print_streams(table, stream_ablations(sweep_dir))
    fractions = sorted(table["stage2_fraction"].unique()) if "stage2_fraction" in table.columns else [0.0]
    for fraction in fractions:
        if len(fractions) == 1:
            _fit_and_draw(table, sweep_dir, n_bootstrap, seed)
        else:
            print(f"  stage2_fraction={fraction:g}:")
            _fit_and_draw(table[table["stage2_fraction"] == fraction], sweep_dir / f"F{fraction:g}", n_bootstrap, seed)
    return succeeded


def _fit_and_draw(table: pd.DataFrame, out_dir: Path, n_bootstrap: int, seed: int) -> None:
    try:
        boot = bootstrap(table, n=n_bootstrap, seed=seed) if n_bootstrap else None
        result = boot.point if boot else fit(table)
    except InvalidTableError as error:
        print(f"  no fit: {error}")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "fit.json").write_text(json.dumps({**result.to_dict(), "bootstrap": boot.to_dict() if boot else None},
                                                 indent=2))
    figure_dir = out_dir / "figures"
    from analysis import figures

    fitted = {str(table["dataset"].iloc[0]): figures.FittedDataset(table, result, boot, figures.heldout_checks(table))}
    written = figures.draw_fits(fitted, figure_dir, FIGURE_FORMATS, cost_sizes=())
    _print_summary(result, boot, table)
    print(f"  fit: {out_dir / 'fit.json'}\n  figures: {figure_dir} ({len(written)} files)")


VERDICTS = {
    "helps": "streams help: k's interval lies above 0",
    "no evidence": "no evidence that streams help or hurt: k's interval contains 0",
    "hurts": "streams hurt: k's interval lies below 0",
}


def _print_summary(result, boot, table: pd.DataFrame) -> None:
    multiplier = float(result.multiplier([8.0])[0])
    largest_P = float(table["P"].max())
    k_interval = "[{:.3g}, {:.3g}]".format(*boot.interval("k")) if boot else "(no interval)"
    print(f"  law: E={result.params['E']:.4g} A={result.params['A']:.4g} alpha={result.params['alpha']:.4g} "
          f"k={result.params['k']:.4g} {k_interval}  R^2={result.r2:.4f} ({result.status})")
    extrapolated = f" (extrapolated: this grid's largest P is {largest_P:g})" if largest_P < 8 else ""
    if boot is None:
        print(f"  P = 8 streams act like {multiplier:.3g}x the parameters{extrapolated}\n"
              "  no bootstrap (--bootstrap 0), so no verdict on the streams; report again with --bootstrap 1000")
    else:
        m_low, m_high = boot.interval("multiplier@P=8")
        print(f"  P = 8 streams act like {multiplier:.3g}x the parameters [{m_low:.3g}, {m_high:.3g}] "
              f"({boot.level:.0%} {boot.scheme} bootstrap, {boot.fraction_at_bound:.0%} of resamples at a bound)"
              f"{extrapolated}\n  {VERDICTS[boot.p_effect]}")
    for size, rows in table.groupby("size", sort=False):
        by_P = rows.groupby("P")["loss"].mean().sort_index()
        base = int(by_P.index[0])  # P = 1 in the paper's grid; the smallest P of a grid without it
        helped = [int(P) for P, loss in by_P.items() if P > base and loss < by_P.iloc[0]]
        if not helped:
            verdict = f"no P beat P = {base}"
        elif len(helped) == len(by_P) - 1:
            verdict = f"every P > {base} beat P = {base}"
        else:
            verdict = f"P = {', '.join(map(str, helped))} beat P = {base}"
        losses = "  ".join(f"P={int(P)}: {loss:.4f}" for P, loss in by_P.items())
        print(f"    {size:<10} {losses}   {verdict}")
    print(f"  {_parameter_overhead(table)}")
    if table["seed"].nunique() > 1:
        # What a difference between two cells has to beat: the largest spread of one cell over its seeds.
        spread = table.groupby(["size", "P"])["loss"].agg(lambda loss: loss.max() - loss.min())
        print(f"  (means over {table['seed'].nunique()} seeds; one cell's seeds differ by up to {spread.max():.4f})")
        print("  P's effect per seed (loss at P minus P = 1 of the same seed): mean [min, max]")
        for size, rows in paired_effects(table).groupby("size", sort=False):
            effects = "  ".join(f"P={int(row.P)}: {row.mean:+.4f} [{row.min:+.4f}, {row.max:+.4f}]"
                                for row in rows.itertuples())
            print(f"    {size:<10} {effects}")


ABLATION_P = 4
ABLATION_MAX_PARAMS = 5e7  # evaluated here, on the CPU, from each cell's model/: small models only


def stream_ablations(sweep_dir: Path) -> pd.DataFrame:
    """What the streams and the aggregator of every finished P = 4 cell are worth at its end (the stream and
    aggregator gains of models/stream_ablation.py on the cell's held-out rows): how much of P's effect is the
    streams' diversity rather than their prefix slots. Written to stream_ablation.csv; empty for models
    too large to evaluate on this machine."""
    import torch
    import transformers
    from omegaconf import OmegaConf
    from transformers import AutoModelForCausalLM

    from models.stream_ablation import stream_ablation
    from sweeps.data.batches import eval_batch, load_tokenizer
    from sweeps.run.config import from_mapping

    transformers.utils.logging.disable_progress_bar()
    rows = []
    for path in sorted(Path(sweep_dir).glob("*/result.json")):
        result = json.loads(path.read_text())
        if result.get("P") != ABLATION_P or result.get("total_params", 0) > ABLATION_MAX_PARAMS:
            continue
        config = from_mapping(OmegaConf.load(path.parent / "config.yaml"))
        model = AutoModelForCausalLM.from_pretrained(path.parent / "model")  # the class its config.json names
        with torch.inference_mode():
            ablation = stream_ablation(model, eval_batch(config.data, load_tokenizer(config.data), config.seq_len,
                                                         config.eval_sequences), config.micro_batch_size)
        rows.append({"size": result["size"], "seed": result["seed"],
                     "stage2_fraction": result.get("stage2_fraction", 0.0), "P": ABLATION_P,
                     "stream_gain": ablation.stream_gain, "aggregator_gain": ablation.aggregator_gain})
    table = pd.DataFrame(rows, columns=["size", "seed", "stage2_fraction", "P", "stream_gain", "aggregator_gain"])
    if len(table):
        table.to_csv(Path(sweep_dir) / "stream_ablation.csv", index=False)
    return table


def _print_streams(table: pd.DataFrame, ablations: pd.DataFrame) -> None:
    """How far apart the streams ended (and started), and what they are worth, per P and size."""
    if "stream_distance" not in table.columns or not table["stream_distance"].notna().any():
        return
    apart = table[table["P"] > 1].groupby("P")[["stream_distance_start", "stream_distance", "weight_entropy"]].mean()
    print("  streams (mean over cells; distance = 1 - cosine of two streams' last hidden states, entropy 1 = uniform):")
    for P, row in apart.iterrows():
        print(f"    P={int(P)}: distance {row.stream_distance_start:.2e} at the start, "
              f"{row.stream_distance:.2e} at the end; aggregator entropy {row.weight_entropy:.3f}")
    if len(ablations):
        gains = ablations.groupby("size", sort=False)[["stream_gain", "aggregator_gain"]].mean()
        print(f"  what P = {ABLATION_P}'s streams are worth at the end (loss of the best single stream / of uniform "
              "weights, minus the model's; stream_ablation.csv):")
        print("    " + "  ".join(f"{size}: {row.stream_gain:+.4f} / {row.aggregator_gain:+.4f}"
                                  for size, row in gains.iterrows()))


def _parameter_overhead(table: pd.DataFrame) -> str:
    """One line: how many parameters the largest P adds (prefixes and aggregator), which the law counts in N."""
    params = table.groupby(["size", "P"])["params"].mean().unstack("P").sort_index(axis=1)
    smallest, largest = params.columns[0], params.columns[-1]
    added = (params[largest] / params[smallest] - 1).dropna()
    return (f"(P = {int(largest)}'s prefixes and aggregator add {added.min():.1%} to {added.max():.1%} to N over P = "
            f"{int(smallest)}; the law counts them, as the paper does, so k > 0 needs P to gain more than that much N)")


def paired_effects(table: pd.DataFrame) -> pd.DataFrame:
    """Per size and P: the loss minus the smallest P's loss of the same seed, as its mean, min and max over
    the seeds that ran both (one row per size and P above the smallest)."""
    cells = table.groupby(["size", "P", "seed"], sort=False)["loss"].mean().reset_index()
    rows = []
    for size, of_size in cells.groupby("size", sort=False):
        by_seed = of_size.pivot(index="seed", columns="P", values="loss").sort_index(axis=1)
        base = by_seed.columns[0]
        for P in by_seed.columns[1:]:
            differences = (by_seed[P] - by_seed[base]).dropna()
            rows.append({"size": size, "P": int(P), "seeds": len(differences), "mean": differences.mean(),
                         "min": differences.min(), "max": differences.max()})
    return pd.DataFrame(rows, columns=["size", "P", "seeds", "mean", "min", "max"])


class SweepReport(Callback):
    """Hydra callback: the report at the end of `python -m sweeps.launch`; exits 1 if a cell failed."""

    def __init__(self, n_bootstrap: int = 1000) -> None:
        self.n_bootstrap = n_bootstrap

    def on_multirun_end(self, config, **kwargs) -> None:
        if config.get("sweep", {}).get("dry_run", False):
            return  # nothing ran
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            succeeded = report(sweep_dir, n_bootstrap=self.n_bootstrap)
        except Exception as error:  # Hydra would turn it into a warning and exit 0 on an unreported sweep
            print(f"error: the report of {sweep_dir} failed ({type(error).__name__}: {first_line(error)}); the runs "
                  f"are kept: run python -m sweeps.report {sweep_dir}", file=sys.stderr)
            sys.exit(1)
        if not succeeded:
            sys.exit(1)
