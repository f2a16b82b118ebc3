"""parscale_law: fit, check and compare parallel scaling laws (Chen et al. 2025, arXiv 2505.10475).

    >>> from parscale_law import load_published, fit
    >>> result = fit(load_published("pile"))
    >>> result.params["k"], result.law.multiplier(8)
"""

from .bootstrap import BootstrapResult, bootstrap
from .compare import compare_forms
from .errors import InvalidTableError, UnknownNameError
from .fit import DELTA, METHODS, FitResult, fit, huber_objective
from .forms import FORMS, Form, custom_form, get_form
from .holdout import STANDARD_SPLITS, HoldoutResult, heldout_metrics, holdout, rollout
from .law import ParScaleLaw
from .published import DATASETS, PAPER_FITS, load_published
from .table import RESULT_COLUMNS, prepare, read_results, write_results

__all__ = [
    "BootstrapResult", "DATASETS", "DELTA", "FORMS", "FitResult", "Form", "HoldoutResult", "InvalidTableError",
    "METHODS", "PAPER_FITS", "ParScaleLaw", "RESULT_COLUMNS", "STANDARD_SPLITS", "UnknownNameError", "bootstrap",
    "compare_forms", "custom_form", "fit", "get_form", "heldout_metrics", "holdout", "huber_objective",
    "load_published", "prepare", "read_results", "rollout", "write_results",
]
