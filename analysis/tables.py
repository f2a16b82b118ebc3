"""The fits as a table: parameters, the multiplier at P = 2, 4, 8, R^2; with bootstrap intervals when given.

    summary = fit_table({"pile": fit(pile)}, {"pile": bootstrap(pile, n=1000)})
    print(markdown(summary))      # or latex(summary) for a paper
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from parscale_law import BootstrapResult, FitResult

MULTIPLIER_P = (2, 4, 8)
SYMBOLS = {"alpha": ("alpha", r"\alpha"), "beta": ("beta", r"\beta"), "rho": ("rho", r"\rho")}


def fit_table(fits: Mapping[str, FitResult], boots: Mapping[str, BootstrapResult] | None = None) -> pd.DataFrame:
    """One row per fit. Columns: ``data set``, ``runs``, ``r2``, and for each quantity its estimate, plus
    ``<quantity> low`` / ``<quantity> high`` where a bootstrap gives an interval."""
    boots = boots or {}
    rows = []
    for name, result in fits.items():
        row = {"data set": name, "runs": result.n_points, **result.params}
        multipliers = result.multiplier([float(P) for P in MULTIPLIER_P])
        if multipliers is not None:
            row.update({f"multiplier@P={P}": float(m) for P, m in zip(MULTIPLIER_P, multipliers, strict=True)})
        row["r2"] = result.r2
        if name in boots:
            intervals = boots[name].intervals.set_index("name")
            for quantity in [q for q in row if q in intervals.index]:
                row[f"{quantity} low"] = float(intervals.loc[quantity, "low"])
                row[f"{quantity} high"] = float(intervals.loc[quantity, "high"])
        rows.append(row)
    return pd.DataFrame(rows)


def _quantities(table: pd.DataFrame) -> list[str]:
    return [c for c in table.columns if c not in ("data set", "runs", "r2") and not c.endswith((" low", " high"))]


def _number(value: float, latex: bool) -> str:
    if not math.isfinite(value):
        return "--"
    if abs(value) >= 1e4:
        mantissa, exponent = f"{value:.3e}".split("e")
        return rf"{mantissa}\times10^{{{int(exponent)}}}" if latex else f"{mantissa}e{int(exponent)}"
    return f"{value:#.4g}"


def _cell(row: pd.Series, quantity: str, latex: bool) -> str:
    text = _number(row[quantity], latex)
    low, high = row.get(f"{quantity} low"), row.get(f"{quantity} high")
    if low is not None and not pd.isna(low):
        text += f" [{_number(low, latex)}, {_number(high, latex)}]"
    return f"${text}$" if latex else text


def _header(quantity: str, latex: bool) -> str:
    if quantity.startswith("multiplier@P="):
        P = quantity.split("=")[1]
        return rf"$1 + k \ln {P}$" if latex else f"1 + k ln {P}"
    plain, tex = SYMBOLS.get(quantity, (quantity, quantity))
    return f"${tex}$" if latex else plain


def markdown(table: pd.DataFrame) -> str:
    """A GitHub Markdown table; intervals (when present) in brackets after each estimate."""
    quantities = _quantities(table)
    header = ["data set", "runs", *(_header(q, False) for q in quantities), "R^2"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [str(row["data set"]), str(row["runs"]), *(_cell(row, q, False) for q in quantities),
                 f"{row['r2']:.4f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def latex(table: pd.DataFrame) -> str:
    """A booktabs LaTeX tabular (needs \\usepackage{booktabs}); intervals in brackets after each estimate."""
    quantities = _quantities(table)
    header = ["Data set", "Runs", *(_header(q, True) for q in quantities), "$R^2$"]
    lines = [r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}", r"\toprule", " & ".join(header) + r" \\",
             r"\midrule"]
    for _, row in table.iterrows():
        name = str(row["data set"]).replace("_", r"\_")
        cells = [name, str(row["runs"]), *(_cell(row, q, True) for q in quantities), f"{row['r2']:.4f}"]
        lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"
