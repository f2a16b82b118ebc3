"""Model selection across functional forms: fit quality, information criteria and held-out error."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from .fit import fit
from .forms import Form, get_form
from .holdout import holdout


def compare_forms(
    table: pd.DataFrame,
    forms: Sequence[str | Form] = ("log", "rho", "power"),
    split: str = "extrapolate-P",
    method: str = "fast",
    dataset: str | None = None,
    loss_column: str = "loss",
) -> pd.DataFrame:
    """One row per form: parameters, objective, R^2, AIC/BIC (Gaussian on ln L) and held-out MAPE on ``split``.

    Lower AIC/BIC is better; differences above ~2 are meaningful, above ~10 decisive.
    """
    rows = []
    for form in forms:
        law_form = get_form(form)
        result = fit(table, form=law_form, method=method, dataset=dataset, loss_column=loss_column)
        check = holdout(table, split=split, form=law_form, method=method, dataset=dataset, loss_column=loss_column)
        rows.append(
            {
                "form": law_form.name,
                "n_params": result.n_params,
                "objective": result.objective,
                "r2": result.r2,
                "aic": result.aic,
                "bic": result.bic,
                f"heldout_mape[{split}]": check.metrics["mape"],
                "status": result.status,
                "params": result.params,
            }
        )
    out = pd.DataFrame(rows)
    out["delta_aic"] = out["aic"] - out["aic"].min()
    return out
