"""The look shared by every figure: sizes for a paper column, one colour and marker per P, parameter labels."""

from __future__ import annotations

import contextlib
import math

import matplotlib as mpl
import numpy as np
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

# Sized so that a 7-inch-wide figure (a paper's text width) prints its text at 7-9 pt. Figures use
# constrained layout rather than a tight bounding box, so a saved PNG is exactly figsize x dpi.
PAPER_RC = {
    "font.size": 8,
    "axes.titlesize": 9,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.framealpha": 0.9,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
SAVE_DPI = 200
PANEL_WIDTH_IN, PANEL_HEIGHT_IN = 3.5, 2.7
# The paper's palette: P = 1 blue through pale tones to P = 8 red.
_P_COLOURS = LinearSegmentedColormap.from_list("parscale_P", ["#2b7bba", "#9ecae1", "#f4a582", "#d6191b"])
PARAMETER_SCALING_COLOUR = "#2b7bba"
PARALLEL_SCALING_COLOUR = "#7f7f7f"


@contextlib.contextmanager
def paper_style():
    with mpl.rc_context(PAPER_RC):
        yield


def new_figure(ncols: int = 1, nrows: int = 1, width: float | None = None, height: float | None = None):
    """A figure of ``nrows x ncols`` panels at paper size; returns (figure, flat array of axes)."""
    # A bare Figure, not pyplot's: no global state to leak, and a notebook shows it once, as a value.
    figure = Figure(figsize=(width or PANEL_WIDTH_IN * ncols, height or PANEL_HEIGHT_IN * nrows), layout="constrained")
    return figure, figure.subplots(nrows, ncols, squeeze=False).ravel()


def P_colour(P: float, all_P) -> tuple:
    """P's colour on a scale from the smallest to the largest P drawn (the paper's blue-to-red for 1..8)."""
    logs = np.log(np.asarray(sorted(set(map(float, all_P)))))
    span = logs[-1] - logs[0]
    return _P_COLOURS(0.0 if span == 0 else (math.log(P) - logs[0]) / span)


def P_marker(P: float) -> str:
    return "o" if P == 1 else "*"


def P_marker_size(P: float) -> float:
    # A star's area reads smaller than a circle's of the same size.
    return 28 if P == 1 else 55


def P_label(P: float) -> str:
    return f"$P={P:g}$"


def format_params(n: float) -> str:
    """1.6e9 -> "1.6B", 9.6e7 -> "96M", with as few digits as tell sizes apart."""
    for scale, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= scale:
            value = n / scale
            return f"{value:.2g}{suffix}" if value < 10 else f"{value:.0f}{suffix}"
    return f"{n:g}"


PARAMS_FORMATTER = FuncFormatter(lambda value, _: format_params(value))


def log_params_axis(axis) -> None:
    """A log axis of parameter counts labelled 1B, 2B, 4B, 10B... (every tick would crowd the labels)."""
    axis.axes.set_xscale("log") if axis is axis.axes.xaxis else axis.axes.set_yscale("log")
    axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 4)))
    axis.set_major_formatter(PARAMS_FORMATTER)
    axis.set_minor_formatter(NullFormatter())
