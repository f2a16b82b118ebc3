"""The training-budget side of the planner: for C training FLOPs, per P, the compute-optimal (N, D) of a fitted
law with a tokens term (``parscale_law.compute_optimal``, C = 6 N D P) and what that model costs to serve.

    python -m analysis.plan --published chinchilla --flops 1e21,1e22 --gpu H100-80GB

Each N* becomes the narrowest model of its size family reaching it (``analysis.cost.shape_for_params``), whose
inference memory and latency come from ``analysis.cost``, as for a target loss (``analysis.plan``).
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from parscale_law import FitResult, compute_optimal

from . import cost
from .gpus import get_gpu


def budget_plan(result: FitResult, flops: Sequence[float], P_values: Sequence[int] = (1,), gpu: str = "A100-80GB",
                batch: int = 1, input_tokens: int = 64, output_tokens: int = 64,
                family: str | None = None) -> pd.DataFrame:
    """One row per (budget, P): the optimum's params, tokens, tokens per parameter and loss, the model chosen
    for it (width), its inference memory (GB) and latency (s) on ``gpu``, and whether it fits there."""
    from .plan import family_for

    spec = get_gpu(gpu)
    family = family or family_for(result.residuals)
    largest = result.residuals[["params", "P"]].max() if len(result.residuals) else None
    table = compute_optimal(result, flops, sorted({int(P) for P in P_values}))
    rows = []
    for _, optimum in table.iterrows():
        P = int(optimum["P"])
        shape = cost.shape_for_params(float(optimum["params"]), P, family)
        serving = cost.inference_cost(shape, P, batch, input_tokens, output_tokens, gpu=spec)
        rows.append({"hidden_size": shape.hidden_size, "memory_gb": serving.memory_gb,
                     "latency_s": serving.latency_s, "fits_gpu": serving.memory_gb * cost.GIB <= spec.memory_bytes,
                     "extrapolates_N": largest is not None and optimum["params"] > largest["params"],
                     "extrapolates_P": largest is not None and P > largest["P"]})
    return pd.concat([table, pd.DataFrame(rows)], axis=1)


def print_budget_plan(table: pd.DataFrame, gpu: str, batch: int) -> None:
    print(f"compute-optimal models per training budget (C = 6 N D P), served on {gpu} at batch {batch}:")
    for _, row in table.iterrows():
        notes = [note for note, on in (("does not fit the GPU", not row["fits_gpu"]),
                                       ("N beyond the runs", row["extrapolates_N"]),
                                       ("P beyond the runs", row["extrapolates_P"])) if on]
        print(f"  C={row['flops']:.3g} P={int(row['P']):<2} N*={row['params']:.3g} D*={row['tokens']:.3g} "
              f"({row['tokens_per_param']:.1f} tokens/param)  loss {row['loss']:.4f}  width {row['hidden_size']}  "
              f"memory {row['memory_gb']:.3f} GB  latency {row['latency_s']:.4f} s"
              + (f"  ({'; '.join(notes)})" if notes else ""))
