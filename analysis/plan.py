"""Deployment planner: for a target loss, which (N, P) to train and serve, on the fitted law.

    python -m analysis.plan --published pile --target-loss 1.85 --gpu A100-80GB --batch 1 [--json]
    python -m analysis.plan --results results.csv --target-loss 1.7 --bootstrap 200 --figure frontier.png
    python -m analysis.plan --fit fit.json --target-loss 1.85 --P 1,2,4,8,16,32
    python -m analysis.plan --published chinchilla --flops 1e21,1e22 --P 1   (a training budget: analysis.budget)

For each P the law gives the parameters that reach the target, N(P) = A / (1 + k ln P) (L - E)**(-1/alpha);
each becomes the narrowest model of its size family reaching it (``analysis.cost.shape_for_params``: the
paper's 36-layer family widened or narrowed, or the tiny one), whose inference memory and latency come
from ``analysis.cost`` and whose training FLOPs from ``analysis.cost.training_flops``. The options are
ranked by memory and by latency (among those that fit on the GPU). With a bootstrap every option carries
95% intervals: of the N needed (over the resampled laws), of its memory and latency (the cost of those
N), and of the chosen model's loss. The paper's Figure 4 comparison is the case target = the loss of
1.6B at P = 8, options P = 1 and P = 8 (``tests/test_analysis_plan.py`` checks it).
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from parscale_law import (
    PUBLISHED,
    BootstrapResult,
    FitResult,
    ParScaleLaw,
    bootstrap,
    fit,
    load_published,
    read_results,
)
from parscale_law.arguments import (
    CommandParser,
    output_file,
    positive_float,
    positive_floats,
    positive_int,
    positive_ints,
    resamples,
    stream_counts,
    warn_if_few_resamples,
)
from parscale_law.errors import report_error, warn_if_degenerate
from parscale_law.optimal import one_P_of

from . import cost
from .gpus import GPUSpec, get_gpu, gpu_name, gpu_names
from .style import (
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

DEFAULT_P = (1, 2, 4, 8, 16)
DEFAULT_GPU = "A100-80GB"


@dataclass
class PlanOption:
    """One (N, P) on the iso-loss frontier and what it costs. ``*_interval`` are (low, high) at the
    bootstrap's level, absent without one."""

    P: int
    params: float  # N of the model chosen (at least the law's N for the target)
    params_needed: float  # the law's N for the target
    hidden_size: int
    intermediate_size: int
    loss: float  # the chosen model's predicted loss (at most the target)
    memory_gb: float
    latency_s: float
    training_flops: float | None  # None when the training tokens are not known
    fits_gpu: bool
    extrapolates_P: bool
    extrapolates_N: bool
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        """As JSON-ready values: an unreachable end of an interval (a resampled law that never reaches the
        target) is None."""
        out = asdict(self)
        out["intervals"] = {name: [v if math.isfinite(v) else None for v in bounds]
                            for name, bounds in self.intervals.items()}
        return out


@dataclass
class Plan:
    target_loss: float
    gpu: str
    batch: int
    lengths: tuple[tuple[int, int], ...]  # (input, output) tokens; costs are averaged over them
    tokens: float | None  # training tokens behind training_flops
    family: str
    law: dict[str, float]
    options: list[PlanOption]
    skipped: dict[int, str]  # P: why no option
    largest_P: float  # of the runs behind the fit: beyond it the plan extrapolates
    level: float | None = None

    def _best(self, key: str) -> PlanOption | None:
        fitting = [o for o in self.options if o.fits_gpu]
        return min(fitting, key=lambda o: getattr(o, key)) if fitting else None

    @property
    def best_by_memory(self) -> PlanOption | None:
        return self._best("memory_gb")

    @property
    def best_by_latency(self) -> PlanOption | None:
        return self._best("latency_s")

    def option(self, P: int) -> PlanOption:
        for candidate in self.options:
            if candidate.P == P:
                return candidate
        raise KeyError(f"no option at P={P}; there are {[o.P for o in self.options]} "
                       f"({self.skipped.get(P, 'not asked for')})")

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([o.to_dict() for o in self.options]).drop(columns="intervals")

    def to_dict(self) -> dict:
        best_memory, best_latency = self.best_by_memory, self.best_by_latency
        return {
            "target_loss": self.target_loss, "gpu": self.gpu, "batch": self.batch,
            "lengths": [list(pair) for pair in self.lengths], "tokens": self.tokens, "family": self.family,
            "law": self.law, "level": self.level, "largest_P": self.largest_P,
            "options": [o.to_dict() for o in self.options],
            "best_by_memory": best_memory.to_dict() if best_memory else None,
            "best_by_latency": best_latency.to_dict() if best_latency else None,
            "skipped": {str(P): why for P, why in self.skipped.items()},
        }

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).write_text(text)
        return text


def law_of(result: FitResult, tokens: float | None = None) -> ParScaleLaw:
    """The paper's law of a fit (``log``, or ``log-tokens`` at the given training tokens)."""
    if result.form == "log-tokens":
        if tokens is None:
            raise ValueError("a log-tokens law needs the training tokens to plan with: pass tokens=")
        return result.law_at(tokens)
    return result.law


def plan(
    result: FitResult,
    target_loss: float,
    gpu: str | GPUSpec = DEFAULT_GPU,
    batch: int = 1,
    input_tokens: int = 64,
    output_tokens: int = 64,
    P_values: Sequence[int] = DEFAULT_P,
    family: str | None = None,
    tokens: float | None = None,
    boot: BootstrapResult | None = None,
    lengths: Sequence[int] | None = None,
    flop_efficiency: float = cost.PAPER_FLOP_EFFICIENCY,
    memory_efficiency: float = cost.PAPER_MEMORY_EFFICIENCY,
) -> Plan:
    """The options for reaching ``target_loss`` at each of ``P_values``, costed for serving ``batch``
    sequences of ``input_tokens`` + ``output_tokens`` on ``gpu`` (or averaged over input = output length
    in ``lengths``, as the paper's Figure 4), and for training on ``tokens`` (default: the fit's runs')."""
    spec = get_gpu(gpu)
    fitted_P = one_P_of(result)
    if fitted_P is not None and {float(P) for P in P_values} != {fitted_P}:
        raise ValueError(f"the law was fitted at one P ({fitted_P:g}), so it says nothing about other P; "
                         f"plan with --P {fitted_P:g}")
    runs = result.residuals
    if tokens is None and "tokens" in runs:
        tokens = float(runs["tokens"].median())
    law = law_of(result, tokens)
    if not target_loss > law.E:
        raise ValueError(f"target loss {target_loss:g} is at or below the fitted irreducible loss E = {law.E:.4g}: "
                         "no model reaches it")
    family = family or family_for(runs)
    pairs = tuple((n, n) for n in lengths) if lengths else ((input_tokens, output_tokens),)
    settings = {"gpu": spec, "flop_efficiency": flop_efficiency, "memory_efficiency": memory_efficiency}
    largest_P = float(runs["P"].max()) if "P" in runs else math.inf
    largest_N = float(runs["params"].max()) if "params" in runs else math.inf
    smallest_N = float(runs["params"].min()) if "params" in runs else 0.0
    resampled = _resampled_laws(boot, result, tokens) if boot is not None else []
    options, skipped = [], {}
    for P in sorted({int(P) for P in P_values}):
        needed = float(law.params_for_loss(target_loss, P))
        if not math.isfinite(needed):
            skipped[P] = "1 + k ln P <= 0: these streams make every model worse than none"
            continue
        shape = cost.shape_for_params(needed, P, family)
        N = shape.non_embedding_params(P)
        memory, latency = _serving_cost(shape, P, batch, pairs, settings)
        option = PlanOption(
            P=P, params=float(N), params_needed=needed, hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size, loss=float(law.predict(N, P)), memory_gb=memory,
            latency_s=latency, training_flops=cost.training_flops(shape, P, tokens) if tokens else None,
            fits_gpu=memory * cost.GIB <= spec.memory_bytes, extrapolates_P=P > largest_P,
            extrapolates_N=not smallest_N <= N <= largest_N,
        )
        if resampled:
            option.intervals = _intervals(resampled, boot.level, target_loss, P, N, family, batch, pairs, settings)
        options.append(option)
    if not options:
        raise ValueError(f"no P in {list(P_values)} reaches loss {target_loss:g} under this law (k = {law.k:.3g})")
    return Plan(float(target_loss), spec.name, batch, pairs, tokens, family,
                {"E": law.E, "A": law.A, "alpha": law.alpha, "k": law.k}, options, skipped, largest_P,
                boot.level if boot is not None else None)


def family_for(runs: pd.DataFrame) -> str:
    """The size family the runs belong to: their ``size`` labels' if named, else by scale (tiny below 10M)."""
    if "size" in runs.columns and runs["size"].notna().all():
        names = set(map(str, runs["size"]))
        for family, sizes in cost.FAMILIES.items():
            if names <= set(sizes):
                return family
    return "tiny" if float(runs["params"].max()) < 1e7 else "paper"


def _serving_cost(shape, P, batch, pairs, settings) -> tuple[float, float]:
    costs = [cost.inference_cost(shape, P, batch, n_in, n_out, **settings) for n_in, n_out in pairs]
    return float(np.mean([c.memory_gb for c in costs])), float(np.mean([c.latency_s for c in costs]))


def _resampled_laws(boot: BootstrapResult, result: FitResult, tokens: float | None) -> list[ParScaleLaw]:
    return [law_of(replace(result, params=params), tokens)
            for params in boot.samples[list(result.params)].to_dict("records")]


def _intervals(laws, level, target, P, N, family, batch, pairs, settings) -> dict[str, tuple[float, float]]:
    tail = (1 - level) / 2 * 100
    needed = np.array([float(law.params_for_loss(target, P)) for law in laws])
    losses = np.array([float(law.predict(N, P)) for law in laws])
    low, high = np.percentile(needed, [tail, 100 - tail])  # inf where a resampled law cannot reach the target
    out = {"params_needed": (float(low), float(high)),
           "loss": tuple(float(v) for v in np.nanpercentile(losses, [tail, 100 - tail]))}
    ends = []
    for value in (low, high):
        ends.append(_serving_cost(cost.shape_for_params(value, P, family), P, batch, pairs, settings)
                    if math.isfinite(value) else (math.inf, math.inf))
    # Memory and latency grow with N, so the interval of N maps to theirs end to end.
    out["memory_gb"] = (ends[0][0], ends[1][0])
    out["latency_s"] = (ends[0][1], ends[1][1])
    return out


def frontier_figure(plan_: Plan, result: FitResult | None = None, boot: BootstrapResult | None = None):
    """Left: the parameters that reach the target against P (the iso-loss frontier), its bootstrap band,
    the options marked, P beyond the measured ones shaded. Right: each option's memory against latency."""
    with paper_style():
        figure, (left, right) = new_figure(ncols=2)
        all_P = [o.P for o in plan_.options]
        law = ParScaleLaw(**plan_.law)
        grid = np.geomspace(1, max(all_P) * 1.3, 120)
        left.plot(grid, law.params_for_loss(plan_.target_loss, grid), color="black", lw=1.4,
                  label=f"loss {plan_.target_loss:g}", gid="frontier")
        if boot is not None and result is not None:
            laws = _resampled_laws(boot, result, plan_.tokens)
            curves = np.array([law_.params_for_loss(plan_.target_loss, grid) for law_ in laws])
            tail = (1 - boot.level) / 2 * 100
            low, high = np.percentile(curves, [tail, 100 - tail], axis=0)
            left.fill_between(grid, low, np.where(np.isfinite(high), high, np.nan), color="grey", alpha=0.3, lw=0,
                              label=f"{boot.level:.0%} bootstrap", gid="frontier band")
        for option in plan_.options:
            colour = P_colour(option.P, all_P)
            left.scatter([option.P], [option.params], marker=P_marker(option.P), s=P_marker_size(option.P),
                         color=colour, edgecolor="black", linewidth=0.5, zorder=3, gid=f"option P={option.P}")
            right.scatter([option.latency_s], [option.memory_gb], marker=P_marker(option.P), s=P_marker_size(option.P),
                          color=colour, edgecolor="black", linewidth=0.5, zorder=3, label=P_label(option.P),
                          gid=f"cost P={option.P}")
            right.annotate(format_params(option.params), (option.latency_s, option.memory_gb), xytext=(3, 3),
                           textcoords="offset points", fontsize=6)
        if plan_.largest_P < grid[-1]:
            left.axvspan(plan_.largest_P, grid[-1], color="grey", alpha=0.08, lw=0)
            left.text(plan_.largest_P * 1.05, 0.04, "beyond the runs' P", transform=left.get_xaxis_transform(),
                      fontsize=6, color="grey")
        left.set_xscale("log", base=2)
        left.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        log_params_axis(left.yaxis)
        left.set_xlabel("Parallel streams $P$")
        left.set_ylabel("Parameters that reach the target")
        left.legend(loc="upper right", fontsize=6)
        right.set_xlabel(f"Latency (s), batch {plan_.batch}")
        right.set_ylabel("Memory (GB)")
        right.legend(loc="best")
        right.set_title(f"on {plan_.gpu}", fontsize=8)
    return figure


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m analysis.plan", description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--published", choices=PUBLISHED, help="a fit to published losses")
    source.add_argument("--results", type=Path, metavar="TABLE", help="a results table (.csv or .parquet) to fit")
    source.add_argument("--fit", type=Path, metavar="FIT_JSON",
                        help="a saved fit (FitResult.to_json, or a sweep's fit.json)")
    parser.add_argument("--dataset", help="which data set of the table to fit")
    goal = parser.add_mutually_exclusive_group(required=True)
    goal.add_argument("--target-loss", type=positive_float,
                      help="the loss to reach: per P, the smallest model that does")
    goal.add_argument("--flops", type=positive_floats,
                      help="training budgets, e.g. 1e21,1e22: per P, the compute-optimal (N, D) of a "
                                      "log-tokens law")
    parser.add_argument("--gpu", default=DEFAULT_GPU, type=gpu_name,
                        help=f"one of {gpu_names()} (default {DEFAULT_GPU})")
    parser.add_argument("--batch", type=positive_int, default=1)
    parser.add_argument("--input-tokens", type=positive_int, default=64)
    parser.add_argument("--output-tokens", type=positive_int, default=64)
    parser.add_argument("--lengths", type=positive_ints,
                        help="average the cost over input = output length in these, e.g. "
                             "64,128,256,512 (the paper's Figure 4)")
    parser.add_argument("--P", default=list(DEFAULT_P), type=stream_counts,
                        help="stream counts to consider (default 1,2,4,8,16)")
    parser.add_argument("--family", choices=list(cost.FAMILIES), help="size family to widen (default: the runs')")
    parser.add_argument("--tokens", type=positive_float,
                        help="training tokens for the FLOPs (default: the runs' tokens column)")
    parser.add_argument("--bootstrap", type=resamples, default=1000, metavar="N",
                        help="resamples for intervals; 0 for none (default 1000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--figure", type=output_file, help="write the iso-loss frontier figure here (.png, .pdf)")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    args = parser.parse_args(argv)
    if args.flops:
        return _plan_budget(args)
    try:
        if args.bootstrap and not args.fit:
            warn_if_few_resamples(args.bootstrap)
        # A saved fit plans without intervals (its runs are not in it to resample).
        result, table, boot = (load_fit(args.fit), None, None) if args.fit else (None, None, None)
        if not args.fit:
            table = load_published(args.published) if args.published else read_results(args.results)
            dataset = args.dataset or (args.published if args.published else None)
            boot = bootstrap(table, n=args.bootstrap, seed=args.seed, dataset=dataset) if args.bootstrap else None
            result = boot.point if boot else fit(table, dataset=dataset)
        warn_if_degenerate(result)
        the_plan = plan(result, args.target_loss, args.gpu, args.batch, args.input_tokens, args.output_tokens,
                        args.P, args.family, args.tokens, boot, args.lengths)
        if args.figure:
            frontier_figure(the_plan, result, boot).savefig(args.figure, dpi=SAVE_DPI)
    except ValueError as error:
        return report_error(error)
    if args.json:
        print(the_plan.to_json())
    else:
        _print(the_plan)
        if args.figure:
            print(f"wrote {args.figure}")
    return 0


def _plan_budget(args) -> int:
    """--flops: the compute-optimal models of a log-tokens law, per budget and P, and their serving cost."""
    from .budget import budget_plan, print_budget_plan

    try:
        if args.fit:
            result = load_fit(args.fit)
        else:
            table = load_published(args.published) if args.published else read_results(args.results)
            result = fit(table, form="log-tokens", dataset=args.dataset)
        warn_if_degenerate(result)
        table = budget_plan(result, args.flops, args.P, args.gpu, args.batch, args.input_tokens, args.output_tokens,
                            args.family)
    except ValueError as error:
        return report_error(error)
    if args.json:
        print(table.to_json(orient="records", indent=1))
    else:
        print_budget_plan(table, args.gpu, args.batch)
    return 0


def load_fit(path: Path) -> FitResult:
    """A saved fit, or one line saying what the file is not."""
    if not path.is_file():
        raise ValueError(f"--fit {path}: no such file; save a fit with python -m parscale_law fit ... --json {path}")
    try:
        return FitResult.from_json(path)
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"--fit {path} is not a saved fit ({type(error).__name__}: {str(error)[:80]}); pass the JSON "
                         "of python -m parscale_law fit --json, or a sweep's fit.json") from None


def _print(the_plan: Plan) -> None:
    lengths = ", ".join(f"{i}+{o}" for i, o in the_plan.lengths)
    print(f"target loss {the_plan.target_loss:g} on {the_plan.gpu}, batch {the_plan.batch}, {lengths} tokens; "
          f"law E={the_plan.law['E']:.4g} A={the_plan.law['A']:.4g} alpha={the_plan.law['alpha']:.4g} "
          f"k={the_plan.law['k']:.4g}")
    for o in the_plan.options:
        line = (f"  P={o.P:<3} N={format_params(o.params):>6} (width {o.hidden_size})  loss {o.loss:.4f}  "
                f"memory {o.memory_gb:7.3f} GB  latency {o.latency_s:.4f} s"
                + (f"  training {o.training_flops:.3g} FLOPs" if o.training_flops else ""))
        if "params_needed" in o.intervals:
            n_low, n_high = o.intervals["params_needed"]
            line += f"  [N {format_params(n_low)}-{format_params(n_high) if math.isfinite(n_high) else 'unreachable'}]"
        notes = [note for note, on in (("does not fit the GPU", not o.fits_gpu),
                                       ("P beyond the runs", o.extrapolates_P),
                                       ("N outside the runs", o.extrapolates_N)) if on]
        print(line + (f"  ({'; '.join(notes)})" if notes else ""))
    for P, why in the_plan.skipped.items():
        print(f"  P={P}: none ({why})")
    for label, best in (("memory", the_plan.best_by_memory), ("latency", the_plan.best_by_latency)):
        print(f"best by {label}: " + (f"P={best.P}, N={format_params(best.params)}" if best else "none fits the GPU"))


if __name__ == "__main__":
    sys.exit(main())
