"""parscale_law: fit, check and compare parallel scaling laws (Chen et al. 2025, arXiv 2505.10475).

    >>> from parscale_law import load_published, fit, bootstrap
    >>> result = fit(load_published("pile"))
    >>> result.params["k"], result.law.multiplier(8)
    >>> bootstrap(load_published("pile"), predict_at=[(1.1e10, 8)]).p_effect   # "helps"
"""

from .bootstrap import P_EFFECTS, BootstrapResult, bootstrap, prediction_name
from .compare import compare_forms
from .errors import InvalidTableError, UnknownNameError
from .fit import METHODS, FitResult, fit, huber_objective
from .forms import FORMS, Form, custom_form, get_form
from .holdout import STANDARD_SPLITS, HoldoutResult, RolloutResult, heldout_checks, heldout_metrics, holdout, rollout
from .law import ParScaleLaw
from .objective import DELTA
from .optimal import compute_optimal
from .published import DATASETS, EPOCH_FIT, PAPER_FITS, PUBLISHED, load_chinchilla, load_published
from .resample import SCHEMES
from .simulate import simulate
from .table import RESULT_COLUMNS, prepare, read_results, write_results

__all__ = [
    "BootstrapResult", "DATASETS", "DELTA", "EPOCH_FIT", "PUBLISHED", "RolloutResult", "compute_optimal",
    "load_chinchilla", "FORMS", "FitResult", "Form", "HoldoutResult", "InvalidTableError",
    "METHODS", "PAPER_FITS", "P_EFFECTS", "ParScaleLaw", "RESULT_COLUMNS", "SCHEMES", "STANDARD_SPLITS",
    "UnknownNameError", "bootstrap", "compare_forms", "custom_form", "fit", "get_form", "heldout_checks",
    "heldout_metrics", "holdout", "huber_objective", "load_published", "prediction_name", "prepare", "read_results",
    "rollout", "simulate", "write_results",
]
