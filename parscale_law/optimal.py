"""Compute-optimal allocation: for a training budget of C FLOPs, the model size N and tokens D that minimise a
fitted law's loss, with C = 6 N D P (Kaplan et al. 2020's 6 N D per token, times P: the backbone runs once per
stream). Hoffmann et al. 2022's question, answered for any law with a tokens term (``log-tokens``):

    L(N, D) = E + a N^-alpha + B D^-beta,   a = (A / (1 + k ln P))^alpha
    N* = G (C / 6P)^(beta / (alpha + beta)),   D* = (C / 6P) / N*,   G = (alpha a / (beta B))^(1 / (alpha + beta))

(setting dL/dN = 0 along D = C / (6 P N)). With a bootstrap, each resample's law gives its own optimum and the
intervals are their percentiles.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .forms import log_multiplier

# FLOPs per parameter per token of a training step (forward and backward), per stream.
FLOPS_PER_PARAM_TOKEN = 6.0
OPTIMUM_COLUMNS = ("params", "tokens", "tokens_per_param", "loss")


def compute_optimal(result, flops, P=1, bootstrap=None, level: float | None = None) -> pd.DataFrame:
    """One row per (flops, P): the compute-optimal ``params``, ``tokens``, ``tokens_per_param`` and ``loss``
    of the fitted law ``result`` (a FitResult of the ``log-tokens`` form), and with a ``bootstrap``
    (BootstrapResult of the same form) each one's ``_low`` and ``_high`` at the bootstrap's level."""
    if not result.law_form.uses_tokens:
        raise ValueError(f"the {result.form!r} form has no tokens term, so no budget has an optimum (the loss "
                         "falls with N at any D); fit the log-tokens form to runs at several token counts")
    flops, P = _positive("flops", flops), _positive("P", P)
    if np.any(P < 1):
        raise ValueError(f"P={P.min():g}: a count of streams is at least 1")
    fitted_P = one_P_of(result)
    if fitted_P is not None and np.any(P != fitted_P):
        raise ValueError(f"the law was fitted at one P ({fitted_P:g}), so it says nothing about other P; "
                         f"ask for P={fitted_P:g} only")
    grid = pd.DataFrame([(c, p) for p in P for c in flops], columns=["flops", "P"])
    optimum = optimum_of(result.params, grid["flops"].to_numpy(), grid["P"].to_numpy())
    table = pd.concat([grid, pd.DataFrame(optimum)], axis=1)
    if bootstrap is None:
        return table
    tail = (1.0 - (level or bootstrap.level)) / 2.0 * 100.0
    per_sample = [optimum_of(row, grid["flops"].to_numpy(), grid["P"].to_numpy())
                  for row in bootstrap.samples.to_dict(orient="records")]
    for column in OPTIMUM_COLUMNS:
        values = np.array([sample[column] for sample in per_sample])  # (resamples, rows)
        table[column + "_low"] = np.nanpercentile(values, tail, axis=0)
        table[column + "_high"] = np.nanpercentile(values, 100.0 - tail, axis=0)
    return table


def one_P_of(result) -> float | None:
    """The single P a law was fitted at (its P effect not identified), or None for a law with a P effect."""
    if not result.not_identified:
        return None
    runs = result.residuals
    return float(runs["P"].iloc[0]) if len(runs) and "P" in runs else 1.0


def optimum_of(params: Mapping[str, float], flops, P) -> dict[str, np.ndarray]:
    """The closed-form optimum (module docstring) of one set of log-tokens parameters, elementwise."""
    flops, P = np.asarray(flops, dtype=float), np.asarray(P, dtype=float)
    alpha, beta, B = params["alpha"], params["beta"], params["B"]
    k = params.get("k", 0.0)
    k = 0.0 if k is None or not np.isfinite(k) else k
    with np.errstate(all="ignore"):
        a = (params["A"] / log_multiplier(P, k)) ** alpha
        per_stream = flops / (FLOPS_PER_PARAM_TOKEN * P)  # N * D
        G = (alpha * a / (beta * B)) ** (1.0 / (alpha + beta))
        N = G * per_stream ** (beta / (alpha + beta))
        D = per_stream / N
        loss = params["E"] + a * N**-alpha + B * D**-beta
    return {"params": N, "tokens": D, "tokens_per_param": D / N, "loss": loss}


def _positive(name: str, values: float | Sequence[float]) -> np.ndarray:
    array = np.atleast_1d(np.asarray(values, dtype=float))
    if array.size == 0 or not np.all(np.isfinite(array) & (array > 0)):
        raise ValueError(f"{name} must be finite and positive, got {values!r}")
    return array
