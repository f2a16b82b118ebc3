"""Functional forms L(N, P) the fitter knows, and how to add your own.

Built-in forms (all from Chen et al. 2025, arXiv 2505.10475) share the shape

    L = E + (A / N)**alpha * m(P)

which is *separable*: for fixed (alpha, extra) the loss is linear in (E, A**alpha). The fast method
searches (alpha, extra) on a grid, solves the linear part in closed form, then polishes.

- ``log``   (the paper's law, Eq. 5):      m(P) = (1 + k ln P)**-alpha
- ``rho``   (its theoretical form, Sec. 2): m(P) = rho + (1 - rho) / P  (constant stream correlation rho)
- ``power`` (a power law in P):             m(P) = P**(-beta * alpha), i.e. L = (A / (N P**beta))**alpha + E

``custom_form`` wraps any function of (N, P, **params) with named parameters, bounds and starting values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import UnknownNameError

# The released fitting script bounds every parameter below by 1e-8, in its own units (A in units of 1e9).
# The forms' own bounds are the natural domain (k = 0 means "no P effect", a value the fast method may
# return); the paper method raises every lower bound to this.
PAPER_LOWER_BOUND = 1e-8
A_UNIT = 1e9
# alpha = 0 would make the law flat in N and A undefined.
ALPHA_LOWER_BOUND = 1e-8

# The paper's 300 starting points (3 x 5 x 5 x 4), in canonical units.
PAPER_STARTS = {
    "E": tuple(np.exp([-1.0, -0.5, 0.0])),
    "A": tuple(A_UNIT * np.exp([-4.0, -2.0, 0.0, 2.0, 4.0])),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
}


@dataclass(frozen=True, kw_only=True)
class Form:
    """A loss law with named parameters, their bounds, and the starting grid of the paper recipe.

    ``scale`` gives each parameter's unit inside the optimiser (the released script fits A / 1e9).
    """

    name: str
    param_names: tuple[str, ...]
    bounds: Mapping[str, tuple[float, float]]
    starts: Mapping[str, Sequence[float]]
    scale: Mapping[str, float] = field(default_factory=dict)
    uses_P: bool = True
    description: str = ""

    def predict(self, params: Mapping[str, float], N, P) -> np.ndarray:
        raise NotImplementedError

    def multiplier(self, params: Mapping[str, float], P) -> np.ndarray | None:
        """Effective-parameter multiplier of P streams, where the form defines one (None otherwise)."""
        return None


@dataclass(frozen=True, kw_only=True)
class CustomForm(Form):
    """A user's law: ``predict_fn(N, P, **params)``."""

    predict_fn: Callable[..., np.ndarray]

    def predict(self, params, N, P):
        N = np.asarray(N, dtype=float)
        P = np.asarray(P, dtype=float)
        with np.errstate(all="ignore"):
            return np.asarray(self.predict_fn(N, P, **{name: params[name] for name in self.param_names}), dtype=float)


Basis = Callable[[np.ndarray, np.ndarray, float, float], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True, kw_only=True)
class SeparableForm(Form):
    """L = E + b * G(N / N0, P; alpha, extra) with b = (A / N0)**alpha.

    ``basis`` returns G and its derivatives with respect to alpha and the extra parameter;
    ``extra_grid`` is where the fast method looks for the extra parameter.
    """

    extra: str
    extra_grid: tuple[float, ...]
    basis: Basis

    def predict(self, params, N, P):
        N = np.asarray(N, dtype=float)
        P = np.asarray(P, dtype=float)
        with np.errstate(all="ignore"):
            G, _, _ = self.basis(N / params["A"], P, params["alpha"], params[self.extra])
            return params["E"] + G

    def multiplier(self, params, P):
        # m such that L(N * m, 1) = L(N, P); G scales as n**-alpha, so m = (G(1, 1) / G(1, P))**(1/alpha).
        P = np.asarray(P, dtype=float)
        alpha, extra = params["alpha"], params[self.extra]
        with np.errstate(all="ignore"):
            G1, _, _ = self.basis(np.ones_like(P), np.ones_like(P), alpha, extra)
            GP, _, _ = self.basis(np.ones_like(P), P, alpha, extra)
            return (G1 / GP) ** (1.0 / alpha)


def _log_basis(n, P, alpha, k):
    lnP = np.log(P)
    inner = 1.0 + k * lnP
    G = (n * inner) ** -alpha
    return G, -G * np.log(n * inner), -alpha * G * lnP / inner


def _rho_basis(n, P, alpha, rho):
    base = n**-alpha
    share = rho + (1.0 - rho) / P
    return base * share, -np.log(n) * base * share, base * (1.0 - 1.0 / P)


def _power_basis(n, P, alpha, beta):
    lnP = np.log(P)
    G = n**-alpha * np.exp(-alpha * beta * lnP)
    return G, -G * (np.log(n) + beta * lnP), -alpha * lnP * G


def _separable(name, extra, basis, extra_bounds, extra_starts, extra_grid, description) -> SeparableForm:
    return SeparableForm(
        name=name,
        param_names=("E", "A", "alpha", extra),
        bounds={"E": (0.0, np.inf), "A": (0.0, np.inf), "alpha": (ALPHA_LOWER_BOUND, np.inf), extra: extra_bounds},
        starts={**PAPER_STARTS, extra: extra_starts},
        scale={"A": A_UNIT},
        description=description,
        extra=extra,
        extra_grid=extra_grid,
        basis=basis,
    )


FORMS: dict[str, Form] = {
    "log": _separable(
        "log", "k", _log_basis, (0.0, np.inf), (0.2, 0.4, 0.6, 0.8),
        (0.0, *np.geomspace(0.005, 20.0, 35)),
        "L = (A / (N (k ln P + 1)))^alpha + E  (the paper's law)",
    ),
    "rho": _separable(
        "rho", "rho", _rho_basis, (0.0, 1.0), (0.2, 0.4, 0.6, 0.8),
        tuple(np.linspace(0.0, 1.0, 26)),
        "L = (A / N)^alpha (rho + (1 - rho) / P) + E  (constant stream correlation)",
    ),
    "power": _separable(
        "power", "beta", _power_basis, (0.0, np.inf), (0.05, 0.1, 0.2, 0.4),
        (0.0, *np.geomspace(0.002, 5.0, 35)),
        "L = (A / (N P^beta))^alpha + E  (power law in P)",
    ),
}


def custom_form(
    name: str,
    predict: Callable[..., np.ndarray],
    bounds: Mapping[str, tuple[float, float]],
    starts: Mapping[str, Sequence[float]],
    scale: Mapping[str, float] | None = None,
    uses_P: bool = True,
    description: str = "",
) -> Form:
    """A user's law: ``predict(N, P, **params)``; parameter names are the keys of ``bounds``.

    ``starts`` lists starting values per parameter: the paper method tries their Cartesian product,
    the fast method draws starts from the box they span.
    """
    names = tuple(bounds)
    if set(starts) != set(names):
        raise ValueError(f"starts names {sorted(starts)} must match bounds names {sorted(names)}")
    for pname in names:
        lo, hi = bounds[pname]
        if not lo < hi:
            raise ValueError(f"bounds for {pname!r} are empty ({lo}, {hi}); give lower < upper")
        if len(starts[pname]) == 0:
            raise ValueError(f"starts for {pname!r} is empty; give at least one starting value")
    return CustomForm(
        name=name,
        param_names=names,
        predict_fn=predict,
        bounds=dict(bounds),
        starts={k: tuple(v) for k, v in starts.items()},
        scale=dict(scale or {}),
        uses_P=uses_P,
        description=description,
    )


def get_form(form: str | Form) -> Form:
    if isinstance(form, Form):
        return form
    if form not in FORMS:
        raise UnknownNameError(f"unknown form {form!r}; choose one of {sorted(FORMS)} or build one with custom_form()")
    return FORMS[form]
