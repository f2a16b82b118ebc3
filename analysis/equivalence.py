"""How much P streams are worth in parameters, and whether the answer depends on N: the figures of the
law's central claim (Chen et al. 2025: P streams act like N (1 + k ln P) parameters, for every N).

- ``equivalence(result, boot)``: the multiplier against P with its band, and the runs drawn against
  their effective parameters on the P = 1 curve;
- ``multiplier_vs_params(result, boot)``: each run's implied multiplier (the P = 1 parameters that reach
  its loss, over its N) against N, one line per P, beside the fitted constant and its band: the check that
  the multiplier does not depend on N;
- ``streams_to_match(result, boot)``: the P whose streams are worth a 1.5x, 2x and 3x larger model, with
  intervals, marked where that P lies beyond the largest P measured;
- ``form_multipliers(fits, boots)``: the log, rho and power forms' multipliers side by side, beyond the
  measured P, where they part.

Every curve is the fit's, every band from bootstrap samples; artists carry a ``gid``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.ticker import FormatStrFormatter

from parscale_law import BootstrapResult, FitResult, prepare

from .style import P_colour, P_label, P_marker, P_marker_size, log_params_axis, new_figure, paper_style

MATCH_FACTORS = (1.5, 2.0, 3.0)
FORM_COLOURS = {"log": "black", "rho": "#1b9e77", "power": "#d95f02"}
# How far the P axis reaches when searching for the P a multiplier needs.
LARGEST_P_SEARCHED = 1e6


def runs_of(result: FitResult, table: pd.DataFrame | None = None) -> pd.DataFrame:
    """The runs to draw: ``table``'s usable rows (one data set), or else the runs the fit used."""
    if table is None:
        return result.residuals
    return prepare(table, need_several_N=False, need_several_P=False).rows.reset_index(drop=True)


def P_values(runs: pd.DataFrame) -> list[float]:
    return sorted(float(P) for P in runs["P"].unique())


def panels(ax, ncols=1):
    """The axes given, flattened, or those of a new paper-sized figure."""
    if ax is None:
        return new_figure(ncols)[1]
    return np.atleast_1d(ax).ravel()


def _band(boot: BootstrapResult, result: FitResult, function) -> tuple[np.ndarray, np.ndarray]:
    """Percentile band of ``function(params)`` over the bootstrap samples."""
    values = np.array([function(row) for row in boot.samples[list(result.params)].to_dict("records")])
    tail = (1 - boot.level) / 2 * 100
    return np.nanpercentile(values, [tail, 100 - tail], axis=0)


def _require_multiplier(result: FitResult) -> None:
    if result.multiplier(np.array([2.0])) is None:
        raise ValueError(f"the {result.form!r} form defines no effective-parameter multiplier; "
                         "draw loss_vs_params instead")


def implied_multipliers(result: FitResult, runs: pd.DataFrame) -> np.ndarray:
    """Each run's implied multiplier: the parameters the fit's P = 1 curve needs for the run's loss, over
    the run's N (NaN where the loss is at or below E). Built-in forms share the P = 1 curve E + (A/N)**alpha."""
    _require_multiplier(result)
    p = result.params
    reducible = runs["loss"].to_numpy(float) - p["E"]
    with np.errstate(all="ignore"):
        N_at_P1 = p["A"] * np.where(reducible > 0, reducible, np.nan) ** (-1.0 / p["alpha"])
    return N_at_P1 / runs["params"].to_numpy(float)


def equivalence(result: FitResult, boot=None, table: pd.DataFrame | None = None, axes=None, title: str | None = None):
    """Left: the effective-parameter multiplier against P (log axis), with the bootstrap band and each
    run's own multiplier. Right: every run against its effective parameters N * multiplier(P), on the
    single P = 1 curve."""
    runs = runs_of(result, table)
    all_P = P_values(runs)
    _require_multiplier(result)
    with paper_style():
        left, right = panels(axes, ncols=2)
        grid = np.geomspace(1.0, max(all_P) * 2, 120)
        left.plot(grid, result.multiplier(grid), color="black", lw=1.5, label="fit", gid="multiplier")
        if boot is not None:
            low, high = _band(boot, result, lambda params: result.law_form.multiplier(params, grid))
            left.fill_between(grid, low, high, color="grey", alpha=0.3, lw=0, label=f"{boot.level:.0%} bootstrap",
                              gid="bootstrap band")
        own = implied_multipliers(result, runs)
        for P in all_P:
            mask = (runs["P"] == P).to_numpy()
            left.scatter(
                np.full(mask.sum(), P), own[mask], marker=P_marker(P), s=P_marker_size(P) * 0.6,
                color=P_colour(P, all_P), edgecolor="black", linewidth=0.4, zorder=3, gid=f"run multiplier P={P:g}",
                label="runs: $N_{P=1}$(same loss) / $N$" if P == all_P[-1] else None,
            )
        left.axvspan(max(all_P), grid[-1], color="grey", alpha=0.08, lw=0)
        left.text(max(all_P) * 1.05, 0.04, "extrapolated", transform=left.get_xaxis_transform(), fontsize=6,
                  color="grey")
        left.set_xscale("log", base=2)
        left.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        left.set_xlabel("Parallel streams $P$")
        left.set_ylabel(r"Parameter multiplier $1 + k\,\ln P$" if result.form == "log" else "Parameter multiplier")
        left.legend(loc="upper left")

        effective = runs["params"].to_numpy(float) * result.multiplier(runs["P"].to_numpy(float))
        curve = np.geomspace(effective.min() / 1.15, effective.max() * 1.15, 200)
        right.plot(curve, result.predict(curve, np.ones_like(curve)), color="black", lw=1.2, label="law at $P=1$",
                   gid="law at P=1")
        for P in all_P:
            mask = (runs["P"] == P).to_numpy()
            right.scatter(
                effective[mask], runs["loss"].to_numpy(float)[mask], marker=P_marker(P), s=P_marker_size(P),
                color=P_colour(P, all_P), edgecolor="black", linewidth=0.5, zorder=3, label=P_label(P),
                gid=f"collapsed P={P:g}",
            )
        log_params_axis(right.xaxis)
        right.set_xlabel(r"Effective parameters $N\,(1 + k\,\ln P)$" if result.form == "log"
                         else "Effective parameters")
        right.set_ylabel("Loss")
        right.legend(loc="upper right")
        if title:
            left.set_title(f"{title}: multiplier", fontweight="bold")
            right.set_title(f"{title}: runs collapse", fontweight="bold")
    return left.figure


def multiplier_vs_params(result: FitResult, boot=None, table: pd.DataFrame | None = None, ax=None,
                         title: str | None = None):
    """Each run's implied multiplier against its N (log axis), one line per P > 1 through the sizes, and
    the fit's constant multiplier of that P as a dashed line with its bootstrap band. Under the law the
    lines are flat; a slope says the streams are worth more (or less) at larger N."""
    runs = runs_of(result, table)
    all_P = P_values(runs)
    own = implied_multipliers(result, runs)
    with paper_style():
        (ax,) = panels(ax)
        N = runs["params"].to_numpy(float)
        span = np.array([N.min() / 1.1, N.max() * 1.1])
        for P in all_P[1:]:
            colour = P_colour(P, all_P)
            mask = (runs["P"] == P).to_numpy()
            # seeds averaged
            frame = pd.DataFrame({"N": N[mask], "m": own[mask]}).groupby("N", as_index=False)["m"].mean()
            ax.plot(frame["N"], frame["m"], marker=P_marker(P), ms=5 if P == 1 else 7, color=colour, mec="black",
                    mew=0.4, lw=1.2, label=f"{P_label(P)} runs", gid=f"implied P={P:g}")
            constant = float(result.multiplier(np.array([P]))[0])
            ax.plot(span, [constant, constant], color=colour, lw=1, ls="--", gid=f"fitted P={P:g}")
            if boot is not None:
                low, high = _band(boot, result,
                                  lambda params, P=P: float(result.law_form.multiplier(params, np.array([P]))[0]))
                ax.fill_between(span, [low, low], [high, high], color=colour, alpha=0.15, lw=0, gid=f"band P={P:g}")
        ax.axhline(1.0, color="grey", lw=0.6)
        log_params_axis(ax.xaxis)
        ax.set_xlabel("Parameters (non-embedding)")
        ax.set_ylabel("Implied multiplier $N_{P=1}$(same loss) / $N$")
        ax.legend(loc="best", fontsize=6,
                  title="dashed: fit" + (f", band {boot.level:.0%}" if boot is not None else ""), title_fontsize=6)
        if title:
            ax.set_title(f"{title}: multiplier against N", fontweight="bold")
    return ax.figure


def streams_for_multiplier(result: FitResult, factors: Sequence[float] = MATCH_FACTORS,
                           boot: BootstrapResult | None = None) -> pd.DataFrame:
    """Per factor m, the P whose streams are worth m times the parameters (inf where no P is), with the
    bootstrap interval when ``boot`` is given, and whether it lies beyond the largest P measured."""
    _require_multiplier(result)
    factors = np.asarray(factors, dtype=float)
    grid = np.geomspace(1.0, LARGEST_P_SEARCHED, 2000)

    def needed(params) -> np.ndarray:
        m = np.maximum.accumulate(np.nan_to_num(result.law_form.multiplier(params, grid), nan=0.0))
        reachable = factors <= m[-1]
        P = np.exp(np.interp(factors, m, np.log(grid)))  # m is non-decreasing; plateaus resolve to their start
        return np.where(reachable & (factors > 1), P, np.where(factors <= 1, 1.0, math.inf))

    out = pd.DataFrame({"factor": factors, "P": needed(result.params)})
    if boot is not None:
        samples = np.array([needed(params) for params in boot.samples[list(result.params)].to_dict("records")])
        tail = (1 - boot.level) / 2 * 100
        # Sample values, not interpolations between them: a P no resample reaches is inf, and inf - inf is not.
        out["low"], out["high"] = np.percentile(samples, [tail, 100 - tail], axis=0, method="inverted_cdf")
    largest = float(result.residuals["P"].max()) if "P" in result.residuals else math.inf
    out["extrapolated"] = out["P"] > largest
    return out


def streams_to_match(result: FitResult, boot=None, factors: Sequence[float] = MATCH_FACTORS, ax=None,
                     title: str | None = None):
    """The P needed to match a model ``factors`` times larger (log axis), with bootstrap intervals; P beyond
    the largest measured one is shaded and its markers hollow (an extrapolation of the law in P)."""
    table = streams_for_multiplier(result, factors, boot)
    largest = float(result.residuals["P"].max())
    with paper_style():
        (ax,) = panels(ax)
        x = np.arange(len(table))
        finite = np.isfinite(table["P"]).to_numpy()
        values = table[[c for c in ("P", "high") if c in table.columns]].to_numpy(float)
        top = 4 * max(largest, float(np.max(values[np.isfinite(values)], initial=largest)))
        for i, row in enumerate(table.itertuples()):
            inside = not row.extrapolated
            if finite[i]:
                ax.scatter([i], [row.P], s=40, marker="o", color="black" if inside else "white", edgecolor="black",
                           zorder=3, gid=f"P for {row.factor:g}x")
                ax.annotate(f"P = {row.P:.3g}", (i, row.P), xytext=(6, 0), textcoords="offset points", fontsize=6.5,
                            va="center")
            else:
                ax.annotate("no P", (i, largest), xytext=(0, 6), textcoords="offset points", fontsize=6.5, ha="center")
            if "low" in table.columns:
                high = row.high if math.isfinite(row.high) else top
                ax.plot([i, i], [max(row.low, 1.0), high], color="black", lw=1.2, gid=f"interval {row.factor:g}x")
        ax.axhspan(largest, top, color="grey", alpha=0.1, lw=0)
        ax.axhline(largest, color="grey", lw=0.8, ls="--")
        ax.text(len(table) - 0.5, largest * 1.1, f"beyond the largest P run ({largest:g})", fontsize=6, color="grey",
                ha="right", va="bottom")
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_ylim(1, top)
        ax.set_xticks(x, [f"{f:g}x larger" for f in table["factor"]])
        ax.set_xlim(-0.5, len(table) - 0.5)
        ax.set_ylabel("Streams $P$ worth it")
        if title:
            ax.set_title(f"{title}: P to match a larger model", fontweight="bold")
    return ax.figure


def form_multipliers(fits: Mapping[str, FitResult], boots: Mapping[str, BootstrapResult] | None = None, ax=None,
                     title: str | None = None, reach: float = 8.0):
    """Each form's multiplier against P, to ``reach`` times the largest measured P, with the bands of the
    forms that have a bootstrap; the measured range is unshaded. The legend gives each form's AIC gap."""
    boots = boots or {}
    largest = max(float(result.residuals["P"].max()) for result in fits.values())
    best_aic = min(result.aic for result in fits.values())
    with paper_style():
        (ax,) = panels(ax)
        grid = np.geomspace(1.0, largest * reach, 160)
        for name, result in fits.items():
            colour = FORM_COLOURS.get(name, "#7570b3")
            ax.plot(grid, result.multiplier(grid), color=colour, lw=1.5,
                    label=f"{name} ($\\Delta$AIC {result.aic - best_aic:.1f})", gid=f"multiplier {name}")
            if name in boots:
                low, high = _band(boots[name], result, lambda params, r=result: r.law_form.multiplier(params, grid))
                ax.fill_between(grid, low, high, color=colour, alpha=0.15, lw=0, gid=f"band {name}")
        ax.axvspan(largest, grid[-1], color="grey", alpha=0.08, lw=0)
        ax.text(largest * 1.08, 0.04, "beyond the runs", transform=ax.get_xaxis_transform(), fontsize=6, color="grey")
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.set_xlabel("Parallel streams $P$")
        ax.set_ylabel("Parameter multiplier")
        ax.legend(loc="upper left", fontsize=6)
        if title:
            ax.set_title(f"{title}: forms beyond the measured P", fontweight="bold")
    return ax.figure
