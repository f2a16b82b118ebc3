"""The fitting objective, written once: sum over runs of w * Huber_delta(ln L_obs - ln L_pred).

The paper's (Chen et al. 2025, arXiv 2505.10475, after Hoffmann et al. 2022) with delta = 1e-3 and every
weight 1. Every method (the paper recipe, the fast method's grid and polish, custom forms) calls these.
"""

from __future__ import annotations

import numpy as np
from scipy.special import huber

DELTA = 1e-3


def log_residuals(loss, predicted) -> np.ndarray:
    """ln L_obs - ln L_pred; NaN where a prediction is not positive (outside a law's domain)."""
    with np.errstate(all="ignore"):
        return np.log(loss) - np.log(predicted)


def huber_sum(residuals, delta: float = DELTA, weights=None, axis=None):
    """sum of w * Huber_delta(r) over ``axis`` (every axis by default); NaN residuals give NaN."""
    terms = huber(delta, residuals)
    if weights is not None:
        terms = weights * terms
    return np.sum(terms, axis=axis)


def huber_slope(residuals, delta: float = DELTA) -> np.ndarray:
    """d Huber_delta(r) / dr."""
    return np.clip(residuals, -delta, delta)
