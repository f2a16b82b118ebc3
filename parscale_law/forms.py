"""Functional forms L(N, P[, D]) the fitter knows, and how to add your own.

Built-in forms (Chen et al. 2025, arXiv 2505.10475) are *separable*: a constant plus power-law terms,

    L = E + (A / N)**alpha * m(P)            [+ B / D**beta for "log-tokens"]

so for fixed exponents the loss is linear in E and each term's size. The fast method searches the
exponents on a grid, solves the linear part in closed form, then polishes.

- ``log``   (the paper's law, Eq. 5):      m(P) = (1 + k ln P)**-alpha
- ``rho``   (its theoretical form, Sec. 2): m(P) = rho + (1 - rho) / P  (constant stream correlation rho)
- ``power`` (a power law in P):             m(P) = P**(-beta * alpha), i.e. L = (A / (N P**beta))**alpha + E
- ``log-tokens``: the paper's law plus a data term, L = E + (A / (N (1 + k ln P)))**alpha + B / D**beta,
  D the ``tokens`` column (Hoffmann et al. 2022's form, with the streams' multiplier on N)
- ``N-only``: L = E + (A / N)**alpha, a law in N alone (one P, one training length)

At one P the parameters that act only through P (``Form.p_neutral``: k, rho, the power's beta) drop out: a
fit holds them at the value where they have no effect and reports them as not identified, so the ``log`` form
on a P = 1 ladder is L = E + (A / N)**alpha and ``log-tokens`` is Chinchilla's E + (A / N)**alpha + B / D**beta.

k may be negative ("P hurts"): the log forms' domain is wherever 1 + k ln P stays positive for the largest
P in the data (``Form.bounds_for``). ``custom_form`` wraps any function of (N, P[, D], **params).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from .errors import UnknownNameError

# The released fitting script bounds every parameter below by 1e-8, in its own units (A in units of 1e9).
# The forms' own bounds are the natural domain (k = 0 means "no P effect", k < 0 "P hurts"); the paper
# method raises every lower bound to this.
PAPER_LOWER_BOUND = 1e-8
A_UNIT = 1e9
# alpha = 0 would make the law flat in N and A undefined.
ALPHA_LOWER_BOUND = 1e-8
# How far k may go below zero: to where P_max streams are worth this fraction of one (1 + k ln P_max).
MIN_MULTIPLIER = 1e-3

# The paper's 300 starting points (3 x 5 x 5 x 4), in canonical units.
PAPER_STARTS = {
    "E": tuple(np.exp([-1.0, -0.5, 0.0])),
    "A": tuple(A_UNIT * np.exp([-4.0, -2.0, 0.0, 2.0, 4.0])),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
}


def log_multiplier(P, k):
    """1 + k ln P: how many times the parameters P streams are worth under the paper's law."""
    return 1.0 + k * np.log(P)


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
    uses_tokens: bool = False
    description: str = ""
    # Parameters that act only through P, with the value at which they have no effect: what a fit to data at a
    # single P holds them at (they are not identified there).
    p_neutral: Mapping[str, float] = field(default_factory=dict)

    def predict(self, params: Mapping[str, float], N, P, D=None) -> np.ndarray:
        raise NotImplementedError

    def multiplier(self, params: Mapping[str, float], P) -> np.ndarray | None:
        """Effective-parameter multiplier of P streams, where the form defines one (None otherwise)."""
        return None

    def bounds_for(self, P_max: float) -> dict[str, tuple[float, float]]:
        """The bounds a fit to data whose largest P is ``P_max`` uses (the static ones by default)."""
        return dict(self.bounds)


@dataclass(frozen=True, kw_only=True)
class CustomForm(Form):
    """A user's law: ``predict_fn(N, P, **params)``, or ``predict_fn(N, P, D, **params)`` with tokens."""

    predict_fn: Callable[..., np.ndarray]

    def predict(self, params, N, P, D=None):
        inputs = [np.asarray(N, dtype=float), np.asarray(P, dtype=float)]
        if self.uses_tokens:
            inputs.append(np.asarray(D, dtype=float))
        with np.errstate(all="ignore"):
            return np.asarray(self.predict_fn(*inputs, **{name: params[name] for name in self.param_names}),
                              dtype=float)


# basis(x, P, *nonlinear) -> (G, (dG/d nonlinear_1, ...)); x is N or D over a reference.
Basis = Callable[..., tuple[np.ndarray, tuple[np.ndarray, ...]]]


@dataclass(frozen=True)
class PowerTerm:
    """One additive term of a separable law, homogeneous in its input x (N or D):
    G(c x) = c**-exponent G(x).

    ``inside``: the term is G(N / A) (A inside the power, as the paper writes its law); otherwise it is
    B * G(D). Either way, with x0 a reference value, the term is b * G(x / x0), b >= 0 linear.
    """

    scale: str  # "A" or "B"
    variable: str  # "N" or "D"
    nonlinear: tuple[str, ...]  # parameters inside G, in basis order
    exponent: str  # the one of them G is homogeneous with
    basis: Basis
    inside: bool

    def evaluate(self, params, N, P, D):
        x = np.asarray(N if self.variable == "N" else D, dtype=float)
        theta = [params[name] for name in self.nonlinear]
        if self.inside:
            G, _ = self.basis(x / params[self.scale], P, *theta)
            return G
        G, _ = self.basis(x, P, *theta)
        return params[self.scale] * G

    def scale_from(self, log_b: float, exponent_value: float, x0: float) -> float:
        """The scale parameter (A or B) for ln b; inf where the exponent is too small to invert."""
        if self.inside:
            if exponent_value <= 0:
                return math.inf
            return x0 * math.exp(min(log_b / exponent_value, 700.0))
        return math.exp(min(log_b + exponent_value * math.log(x0), 700.0))


@dataclass(frozen=True, kw_only=True)
class SeparableForm(Form):
    """L = E + sum of PowerTerms. ``grids`` says where the fast method looks for each nonlinear parameter;
    ``k_domain`` lets k go as far below zero as keeps 1 + k ln P_max >= MIN_MULTIPLIER."""

    terms: tuple[PowerTerm, ...]
    grids: Mapping[str, tuple[float, ...]]
    k_domain: bool = False

    @property
    def nonlinear(self) -> tuple[str, ...]:
        names = []
        for term in self.terms:
            names += [name for name in term.nonlinear if name not in names]
        return tuple(names)

    def predict(self, params, N, P, D=None):
        P = np.asarray(P, dtype=float)
        with np.errstate(all="ignore"):
            return params["E"] + sum(term.evaluate(params, N, P, D) for term in self.terms)

    def multiplier(self, params, P):
        if not self.uses_P:
            return None
        # m such that L(N * m, 1) = L(N, P); the N term scales as N**-exponent, so
        # m = (G(1, 1) / G(1, P))**(1/exponent).
        term = next(t for t in self.terms if t.variable == "N")
        P = np.asarray(P, dtype=float)
        theta = [params[name] for name in term.nonlinear]
        with np.errstate(all="ignore"):
            G1, _ = term.basis(np.ones_like(P), np.ones_like(P), *theta)
            GP, _ = term.basis(np.ones_like(P), P, *theta)
            return (G1 / GP) ** (1.0 / params[term.exponent])

    def bounds_for(self, P_max: float) -> dict[str, tuple[float, float]]:
        bounds = dict(self.bounds)
        if self.k_domain and P_max > 1:
            low, high = bounds["k"]
            bounds["k"] = (max(low, -(1.0 - MIN_MULTIPLIER) / math.log(P_max)), high)
        return bounds


def _log_basis(n, P, alpha, k):
    lnP = np.log(P)
    inner = log_multiplier(P, k)
    G = (n * inner) ** -alpha
    return G, (-G * np.log(n * inner), -alpha * G * lnP / inner)


def _rho_basis(n, P, alpha, rho):
    base = n**-alpha
    share = rho + (1.0 - rho) / P
    return base * share, (-np.log(n) * base * share, base * (1.0 - 1.0 / P))


def _power_basis(n, P, alpha, beta):
    lnP = np.log(P)
    G = n**-alpha * np.exp(-alpha * beta * lnP)
    return G, (-G * (np.log(n) + beta * lnP), -alpha * lnP * G)


def _n_basis(n, P, alpha):
    G = n**-alpha
    return G, (-G * np.log(n),)


def _tokens_basis(d, P, beta):
    G = d**-beta
    return G, (-G * np.log(d),)


ALPHA_GRID = tuple(np.geomspace(0.01, 3.0, 40))
# k: zero, 35 positive values, and negative ones down to the smallest domain (P_max = 2); each fit keeps
# those inside its own domain.
K_GRID = (*(-np.geomspace(0.005, 1.4, 14))[::-1], 0.0, *np.geomspace(0.005, 20.0, 35))
BETA_TOKENS_GRID = tuple(np.geomspace(0.02, 2.0, 24))


def _N_term(extra: str, basis: Basis) -> PowerTerm:
    return PowerTerm(scale="A", variable="N", nonlinear=("alpha", extra), exponent="alpha", basis=basis, inside=True)


TOKENS_TERM = PowerTerm(scale="B", variable="D", nonlinear=("beta",), exponent="beta",
                        basis=_tokens_basis, inside=False)


def _separable(name, extra, basis, extra_bounds, extra_starts, extra_grid, description, neutral,
               k_domain=False) -> SeparableForm:
    return SeparableForm(
        name=name,
        param_names=("E", "A", "alpha", extra),
        bounds={"E": (0.0, np.inf), "A": (0.0, np.inf), "alpha": (ALPHA_LOWER_BOUND, np.inf), extra: extra_bounds},
        starts={**PAPER_STARTS, extra: extra_starts},
        scale={"A": A_UNIT},
        description=description,
        terms=(_N_term(extra, basis),),
        grids={"alpha": ALPHA_GRID, extra: tuple(extra_grid)},
        k_domain=k_domain,
        p_neutral={extra: neutral},
    )


FORMS: dict[str, Form] = {
    "log": _separable(
        "log", "k", _log_basis, (-np.inf, np.inf), (0.2, 0.4, 0.6, 0.8), K_GRID,
        "L = (A / (N (k ln P + 1)))^alpha + E  (the paper's law)", 0.0, k_domain=True,
    ),
    "rho": _separable(
        "rho", "rho", _rho_basis, (0.0, 1.0), (0.2, 0.4, 0.6, 0.8),
        tuple(np.linspace(0.0, 1.0, 26)),
        "L = (A / N)^alpha (rho + (1 - rho) / P) + E  (constant stream correlation)", 1.0,
    ),
    "power": _separable(
        "power", "beta", _power_basis, (0.0, np.inf), (0.05, 0.1, 0.2, 0.4),
        (0.0, *np.geomspace(0.002, 5.0, 35)),
        "L = (A / (N P^beta))^alpha + E  (power law in P)", 0.0,
    ),
    "log-tokens": SeparableForm(
        name="log-tokens",
        param_names=("E", "A", "alpha", "k", "B", "beta"),
        bounds={"E": (0.0, np.inf), "A": (0.0, np.inf), "alpha": (ALPHA_LOWER_BOUND, np.inf), "k": (-np.inf, np.inf),
                "B": (0.0, np.inf), "beta": (ALPHA_LOWER_BOUND, np.inf)},
        starts={**PAPER_STARTS, "k": (0.2, 0.4, 0.6, 0.8), "B": (1e2, 1e4, 1e6), "beta": (0.1, 0.3, 0.6)},
        scale={"A": A_UNIT},
        uses_tokens=True,
        description="L = E + (A / (N (k ln P + 1)))^alpha + B / D^beta  (D = tokens)",
        terms=(_N_term("k", _log_basis), TOKENS_TERM),
        grids={"alpha": ALPHA_GRID, "k": K_GRID, "beta": BETA_TOKENS_GRID},
        k_domain=True,
        p_neutral={"k": 0.0},
    ),
    "N-only": SeparableForm(
        name="N-only",
        param_names=("E", "A", "alpha"),
        bounds={"E": (0.0, np.inf), "A": (0.0, np.inf), "alpha": (ALPHA_LOWER_BOUND, np.inf)},
        starts=dict(PAPER_STARTS),
        scale={"A": A_UNIT},
        uses_P=False,
        description="L = (A / N)^alpha + E  (one P, one training length)",
        terms=(PowerTerm(scale="A", variable="N", nonlinear=("alpha",), exponent="alpha", basis=_n_basis,
                         inside=True),),
        grids={"alpha": ALPHA_GRID},
    ),
}


def custom_form(
    name: str,
    predict: Callable[..., np.ndarray],
    bounds: Mapping[str, tuple[float, float]],
    starts: Mapping[str, Sequence[float]],
    scale: Mapping[str, float] | None = None,
    uses_P: bool = True,
    uses_tokens: bool = False,
    description: str = "",
) -> Form:
    """A user's law: ``predict(N, P, **params)`` (``predict(N, P, D, **params)`` with ``uses_tokens``);
    parameter names are the keys of ``bounds``.

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
        uses_tokens=uses_tokens,
        description=description,
    )


def get_form(form: str | Form) -> Form:
    if isinstance(form, Form):
        return form
    if form not in FORMS:
        raise UnknownNameError(f"unknown form {form!r}; choose one of {sorted(FORMS)} or build one with custom_form()")
    return FORMS[form]
