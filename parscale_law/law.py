"""The parallel scaling law as a small object (Chen et al. 2025, arXiv 2505.10475, Eq. 5):

    L(N, P) = (A / (N * (k * ln P + 1)))**alpha + E

P parallel streams act like multiplying the parameter count N by 1 + k ln P (k < 0: streams hurt). ``A``
is the paper's convention (its Figure 2 prints A = 1.131e7 for Stack-V2-Python); some write the same law
as A' / (N (k ln P + 1))**alpha + E with A' = A**alpha, exposed here as ``A_prime``. The formula itself
lives once, in ``parscale_law.forms`` (the ``log`` form); this object evaluates and inverts it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

from .forms import FORMS, log_multiplier


@dataclass(frozen=True)
class ParScaleLaw:
    E: float
    A: float
    alpha: float
    k: float

    @classmethod
    def from_A_prime(cls, E: float, A_prime: float, alpha: float, k: float) -> ParScaleLaw:
        return cls(E=E, A=A_prime ** (1.0 / alpha), alpha=alpha, k=k)

    @property
    def A_prime(self) -> float:
        return self.A**self.alpha

    def multiplier(self, P):
        """How many times more parameters P streams are worth: 1 + k ln P (below 1 when k < 0)."""
        return log_multiplier(P, self.k)

    def effective_params(self, N, P):
        """N * (1 + k ln P): the parameter count a single-stream model would need for the same loss."""
        return np.asarray(N, dtype=float) * self.multiplier(P)

    def predict(self, N, P):
        """Predicted loss at N non-embedding parameters and P streams (NaN where 1 + k ln P <= 0)."""
        return FORMS["log"].predict(asdict(self), N, P)

    def streams_for_multiplier(self, multiplier):
        """The P whose streams are worth ``multiplier`` times the parameters (inverse of ``multiplier``)."""
        if self.k <= 0:
            raise ValueError(f"k <= 0 (k = {self.k:.3g}): streams add nothing under this law, "
                             "so no P reaches a multiplier above 1")
        return np.exp((np.asarray(multiplier, dtype=float) - 1.0) / self.k)

    def params_for_loss(self, loss, P=1):
        """The N that reaches ``loss`` with P streams; infinite for a loss at or below E, or where
        1 + k ln P <= 0 (streams that hurt that much make every N worthless)."""
        reducible = np.asarray(loss, dtype=float) - self.E
        multiplier = np.asarray(self.multiplier(P), dtype=float)
        reachable = (reducible > 0) & (multiplier > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            N = (self.A / np.where(multiplier > 0, multiplier, np.nan)
                 * np.where(reducible > 0, reducible, np.nan) ** (-1.0 / self.alpha))
        return np.where(reachable, N, math.inf)

    def to_dict(self) -> dict:
        return {**asdict(self), "A_prime": self.A_prime}
