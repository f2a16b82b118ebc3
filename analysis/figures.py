"""The paper's figures, drawn from the fitter's result objects, for the published data or any results table.

    python -m analysis.figures --published all --out outputs/figures --format png,pdf
    python -m analysis.figures --results runs.csv --bootstrap 200

Each figure is a function that draws into given axes (or a new paper-sized figure) and returns the figure:

- ``loss_vs_params(result)``: loss against non-embedding parameters per P, the fitted curves, the
  fitted parameters and R^2 (the paper's Figure 2);
- ``loss_contours(result)``: predicted-loss contours over (N, P), observed runs marked (Figure 3);
- ``equivalence(result, boot)``, ``multiplier_vs_params``, ``streams_to_match``, ``form_multipliers``
  (in ``analysis.equivalence``): what P streams are worth in parameters, whether that depends on N, the
  P that matches a larger model, and the forms' multipliers beyond the measured P;
- ``residuals(result, holdouts)``: residuals of the fit, and held-out predictions against fitted points;
- ``inference_cost(table)``: loss against memory and latency per batch size (Figure 4).

Nothing here fits: every curve is ``result.predict``, every band comes from bootstrap samples, every cost
from ``analysis.cost``. Artists carry a ``gid`` ("fit P=2", "observed P=2", ...) so tests and users can
find what was drawn.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D

from parscale_law import DATASETS, FitResult, bootstrap, fit, heldout_checks, load_published, prepare, read_results
from parscale_law.arguments import CommandParser, output_folder, resamples, warn_if_few_resamples
from parscale_law.errors import report_error

from . import cost, tables
from .equivalence import (
    P_values,
    equivalence,
    form_multipliers,
    multiplier_vs_params,
    panels,
    runs_of,
    streams_to_match,
)
from .gpus import gpu_name
from .style import (
    PARALLEL_SCALING_COLOUR,
    PARAMETER_SCALING_COLOUR,
    PARAMS_FORMATTER,
    SAVE_DPI,
    P_colour,
    P_label,
    P_marker,
    P_marker_size,
    format_params,
    log_params_axis,
    new_figure,
    paper_style,
)

FIGURE4_SIZES = ("1.6B", "2.8B", "4.4B")
ALTERNATIVE_FORMS = ("rho", "power")
GREEK = {"alpha": r"\alpha", "beta": r"\beta", "rho": r"\rho"}


def _param_text(name: str, value: float) -> str:
    symbol = GREEK.get(name, name)
    if abs(value) >= 1e4:
        mantissa, exponent = f"{value:.3e}".split("e")
        return rf"${symbol} = {mantissa}\times10^{{{int(exponent)}}}$"
    return rf"${symbol} = {value:.4f}$"


# --- (a) Figure 2 -------------------------------------------------------------------------------------


def loss_vs_params(result: FitResult, table: pd.DataFrame | None = None, ax=None, title: str | None = None):
    """Loss against non-embedding parameters (log axis), one colour and marker per P, the fitted curve of
    each P, and the fitted parameters with R^2 in the corner."""
    runs = runs_of(result, table)
    all_P = P_values(runs)
    with paper_style():
        (ax,) = panels(ax)
        N = runs["params"].to_numpy(float)
        grid = np.geomspace(N.min() / 1.15, N.max() * 1.15, 200)
        for P in all_P:
            colour = P_colour(P, all_P)
            ax.plot(grid, result.predict(grid, np.full_like(grid, P)), color=colour, lw=2, alpha=0.6,
                    gid=f"fit P={P:g}")
            rows = runs[runs["P"] == P]
            ax.scatter(
                rows["params"], rows["loss"], marker=P_marker(P), s=P_marker_size(P), color=colour,
                edgecolor="black", linewidth=0.5, zorder=3, label=P_label(P), gid=f"observed P={P:g}",
            )
        if "size" in runs.columns:
            # One label per size, above its highest smallest-P point: with several seeds a size has several.
            smallest_P = runs[runs["P"] == all_P[0]]
            for row in smallest_P.loc[smallest_P.groupby("size")["loss"].idxmax()].itertuples():
                ax.annotate(str(row.size), (row.params, row.loss), xytext=(2, 5), textcoords="offset points",
                            fontsize=7)
        lines = [_param_text(name, value) for name, value in result.params.items()] + [f"$R^2 = {result.r2:.4f}$"]
        ax.text(0.03, 0.04, "\n".join(lines), transform=ax.transAxes, va="bottom", ha="left", fontsize=7)
        log_params_axis(ax.xaxis)
        ax.set_xlabel("Parameters (non-embedding)")
        ax.set_ylabel("Loss")
        ax.legend(loc="upper right")
        if title:
            ax.set_title(title, fontweight="bold")
    return ax.figure


# --- (b) Figure 3 -------------------------------------------------------------------------------------


def loss_contours(result: FitResult, table: pd.DataFrame | None = None, ax=None, title: str | None = None):
    """Predicted loss over (N, P) as a colour map with labelled contours; observed runs as dots."""
    runs = runs_of(result, table)
    all_P = P_values(runs)
    with paper_style():
        (ax,) = panels(ax)
        N = runs["params"].to_numpy(float)
        n_grid = np.linspace(N.min() * 0.9, N.max() * 1.08, 180)
        p_grid = np.linspace(1.0, max(all_P) * 1.04, 140)
        NN, PP = np.meshgrid(n_grid, p_grid)
        predicted = result.predict(NN, PP)
        mesh = ax.pcolormesh(n_grid, p_grid, predicted, shading="gouraud", cmap="YlOrBr", gid="predicted loss")
        # Loss falls fast at small N, so evenly spaced levels would crowd the left edge; quantiles of the
        # map give each band between two contours an equal share of the plot instead.
        levels = np.unique(np.round(np.quantile(predicted, np.linspace(0.04, 0.96, 10)), 3))
        contours = ax.contour(NN, PP, predicted, levels=levels, colors="black", linewidths=0.6, alpha=0.7)
        ax.clabel(contours, fmt="%.3f", fontsize=6)
        ax.scatter(runs["params"], runs["P"], s=14, color="white", edgecolor="black", linewidth=0.6, zorder=3,
                   clip_on=False, gid="observed")
        ax.figure.colorbar(mesh, ax=ax, label="Predicted loss")
        ax.set_yticks(all_P, [P_label(P) for P in all_P])
        ax.xaxis.set_major_formatter(PARAMS_FORMATTER)
        ax.set_xlabel("Parameters (non-embedding)")
        ax.set_ylabel("Parallel streams")
        if title:
            ax.set_title(title, fontweight="bold")
    return ax.figure


# --- (d) residuals and held-out predictions -------------------------------------------------------------


def residuals(result: FitResult, holdouts: Sequence = (), axes=None, title: str | None = None):
    """First panel: relative residuals of the fit against N, per P. Then one panel per holdout check
    (``parscale_law.holdout`` results): the errors of its fit on the runs it saw, and of its predictions
    for the runs it did not, drawn apart, with the held-out MAPE."""
    runs = result.residuals
    all_P = P_values(runs)
    with paper_style():
        first, *rest = panels(axes, ncols=1 + len(holdouts))
        relative = 100 * runs["residual"].to_numpy(float) / runs["loss"].to_numpy(float)
        for P in all_P:
            mask = (runs["P"] == P).to_numpy()
            first.scatter(
                runs["params"][mask], relative[mask], marker=P_marker(P), s=P_marker_size(P), color=P_colour(P, all_P),
                edgecolor="black", linewidth=0.5, label=P_label(P), zorder=3, gid=f"residual P={P:g}",
            )
        first.axhline(0, color="black", lw=0.8)
        log_params_axis(first.xaxis)
        first.set_xlabel("Parameters (non-embedding)")
        first.set_ylabel("Observed - fitted (% of loss)")
        heading = f"{title}\n" if title else ""
        first.set_title(f"{heading}residuals, RMSE {result.rmse:.2g}", fontsize=8)
        first.margins(x=0.08, y=0.3)
        first.legend(loc="upper left", ncols=2, fontsize=6)

        for ax, check in zip(rest, holdouts, strict=True):
            fitted = check.fit.residuals
            ax.scatter(
                fitted["params"], 100 * fitted["residual"] / fitted["loss"], s=16, color="#bdbdbd", edgecolor="black",
                linewidth=0.4, label="fitted runs", gid="fitted",
            )
            tested = check.predictions
            ax.scatter(
                tested["params"], -100 * tested["rel_error"], s=36, marker="D", facecolor="none", edgecolor="#d6191b",
                linewidth=1.2, label=f"held out (MAPE {check.metrics['mape']:.2f}%)", zorder=3, gid="held-out",
            )
            ax.axhline(0, color="black", lw=0.8)
            log_params_axis(ax.xaxis)
            ax.set_xlabel("Parameters $N$")
            ax.set_ylabel("Observed - predicted (%)")
            ax.set_title(f"fit {_readable(check.train)}\npredict {_readable(check.test)}", fontsize=8)
            ax.margins(x=0.08, y=0.3)
            ax.legend(loc="upper left", fontsize=6)
    return first.figure


def _readable(query: str) -> str:
    """A holdout query as a title: "params >= 4.30967e+09" -> "N ≥ 4.3B"."""
    for code, symbol in ((">=", "≥"), ("<=", "≤"), ("==", "="), ("params", "N")):
        query = query.replace(code, symbol)
    return re.sub(r"\d+(\.\d+)?(e[+-]?\d+)?", lambda m: format_params(float(m.group())), query)


# --- (e) Figure 4 -------------------------------------------------------------------------------------


def cost_losses(sizes, P_values, table: pd.DataFrame | None = None, result: FitResult | None = None) -> pd.DataFrame:
    """Loss of each (size, P): the table's run where there is one (``size`` column), else the fit's
    prediction at that size's non-embedding parameter count. Columns size, P, params, loss, observed."""
    runs = None if table is None else prepare(table, need_several_N=False, need_several_P=False).rows
    rows = []
    for size in sizes:
        shape = cost.ModelShape.from_size(size)
        for P in P_values:
            run = pd.DataFrame()
            if runs is not None and "size" in runs.columns:
                run = runs[(runs["size"].astype(str) == size) & (runs["P"] == P)]
            if len(run):
                loss, observed = float(run["loss"].iloc[0]), True
            elif result is not None:
                loss, observed = float(result.predict(shape.non_embedding_params(P), P)), False
            else:
                raise ValueError(f"no run of size {size} at P={P} in the table; "
                                 "pass result= to use the fit's prediction")
            rows.append({"size": size, "P": P, "params": shape.non_embedding_params(P), "loss": loss,
                         "observed": observed})
    return pd.DataFrame(rows)


def inference_cost(
    table: pd.DataFrame | None = None,
    result: FitResult | None = None,
    sizes: Sequence[str] = FIGURE4_SIZES,
    P_values: Sequence[int] = (1, 2, 4, 8),
    batch_sizes: Sequence[int] = cost.PAPER_BATCHES,
    lengths: Sequence[int] = cost.PAPER_LENGTHS,
    gpu: str = cost.PAPER_GPU,
    axes=None,
):
    """Loss against modelled GPU memory (top row) and latency (bottom row), one column per batch size,
    averaged over input = output length in ``lengths``. Blue arrows: parameter scaling (P = 1, growing
    size); grey arrows: parallel scaling (growing P). Losses come from ``cost_losses``; where a loss is
    the fit's prediction rather than a run, its marker is hollow. Each panel's title gives the ratio of
    ``analysis.cost.compare_scaling``: how many times less memory (latency) the smallest size gains with
    the most streams than parameter scaling to the same loss gains."""
    losses = cost_losses(sizes, P_values, table, result)
    loss_of = {(row.size, row.P): row.loss for row in losses.itertuples()}
    all_P = sorted(P_values)
    with paper_style():
        if axes is None:
            _, axes = new_figure(ncols=len(batch_sizes), nrows=2, width=2.0 * len(batch_sizes), height=4.4)
        axes = np.asarray(axes).reshape(2, len(batch_sizes))
        for column, batch in enumerate(batch_sizes):
            averaged = {(s, P): cost.averaged_cost(s, P, batch, lengths, gpu=gpu) for s in sizes for P in all_P}
            ratios = _scaling_ratios(batch, sizes, max(all_P), loss_of, lengths, gpu)
            for row, (ax, quantity) in enumerate(zip(axes[:, column], ("memory", "latency"), strict=True)):
                position = {key: (value[row], loss_of[key]) for key, value in averaged.items()}
                _draw_cost_panel(ax, position, losses, sizes, all_P)
                ax.set_xlabel("GPU memory (GB)" if quantity == "memory" else "Latency (s)")
                heading = f"batch size {batch}\n" if row == 0 else ""
                if ratios is not None:
                    ratio = ratios[quantity]
                    heading += (f"{ratio:.1f}x less {quantity} increase" if ratio >= 1
                                else f"{1 / ratio:.1f}x more {quantity} increase")
                ax.set_title(heading, fontsize=7.5)
        for ax in axes[:, 0]:
            ax.set_ylabel("Loss")
        figure = axes[0, 0].figure
        figure.legend(
            handles=[Line2D([], [], ls="", marker=P_marker(P), markersize=6 if P == 1 else 8,
                            markerfacecolor=P_colour(P, all_P), markeredgecolor="black", label=P_label(P))
                     for P in all_P]
            + [Line2D([], [], color=PARAMETER_SCALING_COLOUR, lw=2, label="parameter scaling"),
               Line2D([], [], color=PARALLEL_SCALING_COLOUR, lw=1, label="parallel scaling")],
            loc="outside lower center", ncols=len(all_P) + 2, fontsize=7, frameon=False,
        )
        figure.suptitle(
            f"Modelled on {gpu}, averaged over input = output length in {{{', '.join(map(str, lengths))}}}\n"
            f"ratios: {sizes[0]} at $P={max(all_P)}$ against parameter scaling to the same loss"
            + ("" if losses["observed"].all() else "; hollow markers: loss predicted by the fit, not run"),
            fontsize=7.5,
        )
    return figure


def _scaling_ratios(batch, sizes, P, loss_of, lengths, gpu) -> dict | None:
    try:
        row = cost.compare_scaling([batch], base=sizes[0], larger=tuple(sizes[1:]), P=P, losses=loss_of,
                                   lengths=lengths, gpu=gpu).iloc[0]
    except ValueError:
        return None  # the P streams reach a loss outside the sizes' range: no parameter-scaling match to state
    return {"memory": row["memory_ratio"], "latency": row["latency_ratio"]}


def _draw_cost_panel(ax, position, losses, sizes, all_P):
    for size in sizes:
        for before, after in zip(all_P, all_P[1:], strict=False):
            ax.annotate("", xy=position[(size, after)], xytext=position[(size, before)],
                        arrowprops={"arrowstyle": "-|>", "color": PARALLEL_SCALING_COLOUR, "lw": 0.9, "shrinkA": 3,
                                    "shrinkB": 3})
    for before, after in zip(sizes, sizes[1:], strict=False):
        ax.annotate("", xy=position[(after, all_P[0])], xytext=position[(before, all_P[0])],
                    arrowprops={"arrowstyle": "-|>", "color": PARAMETER_SCALING_COLOUR, "lw": 2.0, "shrinkA": 5,
                                "shrinkB": 5})
    for P in all_P:
        chosen = losses[losses["P"] == P]
        x = [position[(row.size, P)][0] for row in chosen.itertuples()]
        y = [position[(row.size, P)][1] for row in chosen.itertuples()]
        colour = P_colour(P, all_P)
        ax.scatter(x, y, marker=P_marker(P), s=P_marker_size(P),
                   color=[colour if o else "none" for o in chosen["observed"]],
                   edgecolor=[("black" if o else colour) for o in chosen["observed"]], linewidth=0.6, zorder=3,
                   gid=f"cost P={P:g}")
    for size in sizes:
        x, y = position[(size, all_P[0])]
        ax.annotate(size, (x, y), xytext=(3, 4), textcoords="offset points", fontsize=6.5)
    ax.margins(x=0.12, y=0.1)


# --- everything at once, and the command line --------------------------------------------------------


@dataclass
class FittedDataset:
    """One data set's runs and what the figures draw from them."""

    runs: pd.DataFrame
    fit: FitResult
    boot: object | None = None  # a BootstrapResult, for the bands and intervals
    checks: list = field(default_factory=list)  # HoldoutResults


def fit_datasets(table, n_bootstrap=1000, seed=0, dataset=None) -> dict[str, FittedDataset]:
    """Fit (and bootstrap) each data set of ``table``, keyed by data set name ("table" when it has none)."""
    names = [dataset] if dataset else (_dataset_order(table["dataset"].unique()) if "dataset" in table.columns
                                       else [None])
    fitted = {}
    for name in names:
        part = table if name is None else table[table["dataset"].astype(str) == name]
        if part.empty:
            raise ValueError(f"no rows for data set {name!r}; the table has "
                             f"{sorted(map(str, table['dataset'].unique()))}")
        boot = bootstrap(part, n=n_bootstrap, seed=seed) if n_bootstrap else None
        fitted[name or "table"] = FittedDataset(part, boot.point if boot else fit(part), boot, heldout_checks(part))
    return fitted


def draw_all(table, out: Path, formats, n_bootstrap=1000, seed=0, dataset=None, cost_sizes=FIGURE4_SIZES,
             gpu=cost.PAPER_GPU) -> list[Path]:
    """Fit each data set of ``table``, draw every figure and write the fit tables; returns the files written."""
    return draw_fits(fit_datasets(table, n_bootstrap, seed, dataset), out, formats, cost_sizes=cost_sizes, gpu=gpu)


def draw_fits(fitted: dict[str, FittedDataset], out: Path, formats, cost_sizes=FIGURE4_SIZES,
              gpu=cost.PAPER_GPU) -> list[Path]:
    """Draw every figure of already fitted data sets and write the fit tables; returns the files written.
    ``cost_sizes=()`` leaves out the inference-cost figure (the paper's sizes; meaningless for a tiny sweep)."""
    figures = {
        "loss_vs_params": _per_dataset(fitted, lambda item, **panel: loss_vs_params(item.fit, item.runs, **panel)),
        "loss_contours": _per_dataset(fitted, lambda item, **panel: loss_contours(item.fit, item.runs, **panel),
                                      width=3.9 * len(fitted)),
        "equivalence": _equivalence_figure(fitted),
        "multiplier_vs_params": _per_dataset(
            fitted, lambda item, **panel: multiplier_vs_params(item.fit, item.boot, **panel)),
        "streams_to_match": _per_dataset(fitted, lambda item, **panel: streams_to_match(item.fit, item.boot, **panel)),
        "form_multipliers": _per_dataset(fitted, _form_multipliers_panel),
        "residuals": _residuals_figure(fitted),
    }
    if cost_sizes:
        # the paper's Figure 4 data set
        cost_label = "stack-v2-python" if "stack-v2-python" in fitted else list(fitted)[0]
        figures["inference_cost"] = inference_cost(fitted[cost_label].runs, fitted[cost_label].fit,
                                                   sizes=cost_sizes, gpu=gpu)
    return _save_figures(figures, out, formats) + _write_fit_tables(fitted, out)


def _per_dataset(fitted: dict[str, FittedDataset], draw, width: float | None = None):
    """A figure of one panel per data set, side by side: ``draw(item, ax=..., title=...)`` fills each."""
    figure, axes = new_figure(ncols=len(fitted), width=width)
    for ax, (label, item) in zip(axes, fitted.items(), strict=True):
        draw(item, ax=ax, title=_title(label))
    return figure


def _form_multipliers_panel(item: FittedDataset, **panel) -> None:
    forms = {"log": item.fit, **{name: fit(item.runs, form=name) for name in ALTERNATIVE_FORMS}}
    form_multipliers(forms, {"log": item.boot} if item.boot is not None else {}, **panel)


def _equivalence_figure(fitted: dict[str, FittedDataset]):
    """One row of two panels per data set."""
    figure, axes = new_figure(ncols=2, nrows=len(fitted))
    for row, (label, item) in enumerate(fitted.items()):
        equivalence(item.fit, item.boot, item.runs, axes=axes[2 * row : 2 * row + 2], title=_title(label))
    return figure


def _residuals_figure(fitted: dict[str, FittedDataset]):
    """One row per data set: the fit's residuals, then one panel per holdout check (rows with fewer checks
    leave their last panels hidden)."""
    width = 1 + max(len(item.checks) for item in fitted.values())
    figure, axes = new_figure(ncols=width, nrows=len(fitted), width=2.6 * width)
    for row, (label, item) in enumerate(fitted.items()):
        panels = axes[width * row : width * (row + 1)]
        residuals(item.fit, item.checks, axes=panels[: 1 + len(item.checks)], title=_title(label))
        for unused in panels[1 + len(item.checks) :]:
            unused.set_visible(False)
    return figure


def _save_figures(figures: dict, out: Path, formats) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, figure in figures.items():
        for extension in formats:
            path = out / f"{name}.{extension}"
            figure.savefig(path, dpi=SAVE_DPI)
            written.append(path)
    return written


def _write_fit_tables(fitted: dict[str, FittedDataset], out: Path) -> list[Path]:
    """fits.md and fits.tex: every data set's fit, with its bootstrap intervals where there are any."""
    summary = tables.fit_table(
        {label: item.fit for label, item in fitted.items()},
        {label: item.boot for label, item in fitted.items() if item.boot is not None},
    )
    written = []
    for extension, text in (("md", tables.markdown(summary)), ("tex", tables.latex(summary))):
        path = out / f"fits.{extension}"
        path.write_text(text)
        written.append(path)
    return written


def _dataset_order(names) -> list[str]:
    """The paper's data sets first, in its order, then the rest alphabetically."""
    return sorted(map(str, names), key=lambda name: (DATASETS.index(name) if name in DATASETS else len(DATASETS), name))


def _title(label: str) -> str:
    return {"stack-v2-python": "Stack-V2-Python", "pile": "Pile"}.get(label, label)


def figure_formats(text: str) -> list[str]:
    """An argparse type: comma-separated file formats matplotlib can write (png, pdf, svg, ...)."""
    import argparse

    from matplotlib.backend_bases import FigureCanvasBase

    formats = [part.strip().lstrip(".").lower() for part in text.split(",") if part.strip()]
    known = FigureCanvasBase.get_supported_filetypes()
    unknown = [name for name in formats if name not in known]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"{', '.join(unknown) or repr(text)}: not a figure format; "
                                         f"choose from {', '.join(sorted(known))}")
    return formats


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m analysis.figures", description="Draw the paper's figures from a fit.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--published", choices=[*DATASETS, "all"], help="the paper's published losses (default: all)")
    source.add_argument("--results", type=Path, metavar="TABLE",
                        help="a results table (.csv or .parquet), with or without a dataset column")
    parser.add_argument("--dataset", help="draw only this data set of the table")
    parser.add_argument("--out", type=output_folder, default=Path("outputs/figures"),
                        help="output folder (default outputs/figures)")
    parser.add_argument("--format", default=["png"], type=figure_formats,
                        help="comma-separated file formats, e.g. png,pdf (default png)")
    parser.add_argument("--bootstrap", type=resamples, default=1000, metavar="N",
                        help="resamples for intervals and bands; 0 for none (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost-sizes", default=",".join(FIGURE4_SIZES),
                        help="model sizes of the inference-cost figure (default 1.6B,2.8B,4.4B)")
    parser.add_argument("--gpu", default=cost.PAPER_GPU, type=gpu_name, help=f"one of {', '.join(cost.gpu_names())}")
    args = parser.parse_args(argv)
    formats = args.format
    try:
        if args.bootstrap:
            warn_if_few_resamples(args.bootstrap)
        table = read_results(args.results) if args.results else load_published(args.published or "all")
        if "P" in table.columns and pd.to_numeric(table["P"], errors="coerce").nunique() == 1:
            raise ValueError("every run has the same P, so the figures of the P effect do not apply; draw a one-P "
                             "law's figures with python -m analysis.scaling")
        written = draw_all(table, args.out, formats, args.bootstrap, args.seed, args.dataset,
                           args.cost_sizes.split(","), args.gpu)
    except ValueError as error:  # bad table, unknown data set or size: one line, what to change
        return report_error(error)
    for path in written:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
