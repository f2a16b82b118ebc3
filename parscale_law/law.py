"""The parallel scaling law as a small object (Chen et al. 2025, arXiv 2505.10475, Eq. 5):

    L(N, P) = (A / (N * (k * ln P + 1)))**alpha + E

P parallel streams act like multiplying the parameter count N by 1 + k ln P. ``A`` is the paper's
convention (its Figure 2 prints A = 1.131e7 for Stack-V2-Python); some write the same law as
A' / (N (k ln P + 1))**alpha + E with A' = A**alpha, exposed here as ``A_prime``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ParScaleLaw:
    E: float
    A: float
    alpha: float
    k: float

    @classmethod
    def from_A_prime(cls, E: float, A_prime: float, alpha: float, k: float) -> "ParScaleLaw":
        return cls(E=E, A=A_prime ** (1.0 / alpha), alpha=alpha, k=k)

    @property
    def A_prime(self) -> float:
        return self.A**self.alpha

    def multiplier(self, P):
        """How many times more parameters P streams are worth: 1 + k ln P."""
        return 1.0 + self.k * np.log(P)

    def effective_params(self, N, P):
        """N * (1 + k ln P): the parameter count a single-stream model would need for the same loss."""
        return np.asarray(N, dtype=float) * self.multiplier(P)

    def predict(self, N, P):
        """Predicted loss at N non-embedding parameters and P streams."""
        return (self.A / self.effective_params(N, P)) ** self.alpha + self.E

    def streams_for_multiplier(self, multiplier):
        """The P whose streams are worth ``multiplier`` times the parameters (inverse of ``multiplier``)."""
        if self.k <= 0:
            raise ValueError("k <= 0: streams add nothing under this law, so no P reaches a multiplier above 1")
        return np.exp((np.asarray(multiplier, dtype=float) - 1.0) / self.k)

    def params_for_loss(self, loss, P=1):
        """The N that reaches ``loss`` with P streams; infinite for a loss at or below E."""
        reducible = np.asarray(loss, dtype=float) - self.E
        with np.errstate(divide="ignore", invalid="ignore"):
            N = self.A / self.multiplier(P) * np.where(reducible > 0, reducible, np.nan) ** (-1.0 / self.alpha)
        return np.where(reducible > 0, N, math.inf)

    def to_dict(self) -> dict:
        return {**asdict(self), "A_prime": self.A_prime}
