"""The held-out loss (and, at P > 1, how far apart the streams are) of a run, at its start and as it trains."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from models.stream_diversity import recording_stream_diversity
from sweeps.files import atomic_write_text
from sweeps.run import distributed
from sweeps.run.state import Run

START_FILE = "start.json"


@torch.no_grad()
def evaluate(trained, lm, rows: torch.Tensor, micro_batch_size: int, env: distributed.Environment) -> dict:
    """The mean held-out loss per token (`eval_loss`) and, at P > 1, how far apart the streams are on those
    tokens (`stream_distance`, `weight_entropy`: models/stream_diversity.py); each process evaluates its slice
    of the same rows."""
    per_process = rows.shape[0] // env.world_size
    mine = rows[env.rank * per_process:(env.rank + 1) * per_process]
    trained.eval()
    total = 0.0
    with recording_stream_diversity(lm) as diversity:
        for batch in mine.split(micro_batch_size):
            total += trained(batch).item() * batch.shape[0]
    trained.train()
    if diversity is None:
        return {"eval_loss": distributed.all_sum([total], env)[0] / rows.shape[0]}
    total, distance, entropy, tokens = distributed.all_sum(
        [total, diversity.distance_sum, diversity.entropy_sum, diversity.tokens], env)
    return {"eval_loss": total / rows.shape[0], "stream_distance": distance / tokens,
            "weight_entropy": entropy / tokens}


def evaluate_run(run: Run) -> dict:
    return evaluate(run.trained, run.lm, run.eval_rows, run.config.micro_batch_size, run.env)


def evaluate_start(run: Run, fresh: bool) -> dict:
    """The held-out loss and the streams' diversity where the run starts (a stage 2: the moment the streams
    are added), measured once before the first step and kept in start.json for the result row."""
    path = Path(run.config.run_dir) / START_FILE
    if not fresh and path.exists():
        return json.loads(path.read_text())
    start = {f"{key}_start": value for key, value in evaluate_run(run).items()}
    if run.env.is_main:
        atomic_write_text(path, json.dumps(start, indent=1) + "\n")
    return start
