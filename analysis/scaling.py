"""Figures of laws at one P, the data most scaling-law studies have (a P = 1 ladder, an (N, D) grid such as
Chinchilla's), and of how far a law's predictions carry:

    python -m analysis.scaling --published chinchilla --out outputs/scaling --bootstrap 200
    python -m analysis.scaling --results runs.csv --form log --rollout 3

- ``compute_optimal_frontier(result, boot)``: the compute-optimal params and tokens against the training
  budget (``parscale_law.compute_optimal``), with bootstrap bands, and the tokens per parameter;
- ``rollout_figure(rolled)``: per rollout step (fit on the smallest sizes), predicted against measured loss
  of every larger run, the next size marked.

Nothing here fits that a figure draws from: curves are ``compute_optimal`` of given results.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from parscale_law import PUBLISHED, bootstrap, compute_optimal, fit, load_published, read_results, rollout
from parscale_law.arguments import CommandParser, count, output_folder, resamples, warn_if_few_resamples
from parscale_law.errors import report_error

from .style import SAVE_DPI, new_figure, paper_style

PARAMS_COLOUR, TOKENS_COLOUR = "#2b7bba", "#d6191b"


def compute_optimal_frontier(result, boot=None, flops=None, P=1):
    """Left: N* and D* against the budget C (log-log), bands from ``boot``; right: D*/N* against C."""
    if flops is None:
        flops = np.geomspace(1e18, 1e25, 36)
    table = compute_optimal(result, flops, P, bootstrap=boot)
    with paper_style():
        figure, (sizes, ratio) = new_figure(ncols=2)
        for column, colour, label in (("params", PARAMS_COLOUR, "params N*"), ("tokens", TOKENS_COLOUR, "tokens D*")):
            sizes.loglog(table["flops"], table[column], color=colour, label=label, gid=f"optimal {column}")
            if boot is not None:
                sizes.fill_between(table["flops"], table[column + "_low"], table[column + "_high"], color=colour,
                                   alpha=0.2, linewidth=0, gid=f"band {column}")
        sizes.set(xlabel="training FLOPs C = 6 N D P", ylabel="compute-optimal N*, D*")
        sizes.legend()
        ratio.semilogx(table["flops"], table["tokens_per_param"], color="k", gid="optimal tokens_per_param")
        if boot is not None:
            ratio.fill_between(table["flops"], table["tokens_per_param_low"], table["tokens_per_param_high"],
                               color="k", alpha=0.15, linewidth=0, gid="band tokens_per_param")
        ratio.set(xlabel="training FLOPs C", ylabel="tokens per parameter D*/N*")
        figure.suptitle(f"compute-optimal allocation ({result.form} form, P = {P})")
    return figure


def rollout_figure(rolled):
    """Predicted against measured loss of the held-out runs, one colour per rollout step."""
    predictions = rolled.predictions
    steps = sorted(predictions["train_sizes"].unique())
    with paper_style():
        figure, (ax,) = new_figure()
        colours = [_step_colour(i, len(steps)) for i in range(len(steps))]
        for step, colour in zip(steps, colours, strict=True):
            rows = predictions[predictions["train_sizes"] == step]
            nxt = rows["next_size"].to_numpy(bool)
            ax.scatter(rows["loss"][~nxt], rows["predicted"][~nxt], s=6, color=colour, alpha=0.5,
                       gid=f"larger sizes step {step}")
            ax.scatter(rows["loss"][nxt], rows["predicted"][nxt], s=18, color=colour, edgecolor="k",
                       linewidth=0.4, label=f"fit on {step} sizes", gid=f"next size step {step}")
        low = float(min(predictions["loss"].min(), predictions["predicted"].min()))
        high = float(max(predictions["loss"].max(), predictions["predicted"].max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=0.8, linestyle="--", gid="y = x")
        ax.set(xlabel="measured loss", ylabel="predicted loss", title="rollout: fit on the smallest sizes")
        ax.legend(fontsize=6, ncol=2 if len(steps) > 6 else 1)
    return figure


def _step_colour(index: int, count: int) -> tuple:
    """The rollout step's colour, from viridis's first to last."""
    from matplotlib import colormaps

    return colormaps["viridis"](index / max(1, count - 1))


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m analysis.scaling",
                           description="Compute-optimal frontier and rollout figures of a fitted law.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--published", choices=[*PUBLISHED, "all"], help="a published data set")
    source.add_argument("--results", type=Path, metavar="TABLE", help="a results table (.csv or .parquet)")
    parser.add_argument("--dataset", help="the data set of the table to use")
    parser.add_argument("--form", default="log-tokens", help="the law's form (default log-tokens)")
    parser.add_argument("--rollout", type=count, default=3, metavar="MIN_SIZES",
                        help="sizes of the first rollout fit (default 3); 0 for no rollout figure")
    parser.add_argument("--bootstrap", type=resamples, default=0, metavar="N",
                        help="resamples for the frontier's bands")
    parser.add_argument("--out", type=output_folder, default=Path("outputs/scaling"), help="output folder")
    args = parser.parse_args(argv)
    if args.bootstrap:
        warn_if_few_resamples(args.bootstrap)
    try:
        table = read_results(args.results) if args.results else load_published(args.published)
        result = fit(table, form=args.form, dataset=args.dataset)
        figures = {}
        if result.law_form.uses_tokens:
            boot = bootstrap(table, n=args.bootstrap, form=args.form, dataset=args.dataset) if args.bootstrap else None
            figures["compute_optimal"] = compute_optimal_frontier(result, boot)
        if args.rollout:
            figures["rollout"] = rollout_figure(rollout(table, min_sizes=args.rollout, form=args.form,
                                                        dataset=args.dataset))
        if not figures:
            raise ValueError(f"nothing to draw: the {args.form!r} form has no tokens term and --rollout is 0")
        args.out.mkdir(parents=True, exist_ok=True)
    except (ValueError, OSError) as error:
        return report_error(error)
    for name, figure in figures.items():
        path = args.out / f"{name}.png"
        figure.savefig(path, dpi=SAVE_DPI)
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
