"""What one training run holds while it trains: `Run`, the pieces built once (model, optimiser, data, checkpoints),
and `TrainState`, where it stands (step, loss EMA, time), which every checkpoint saves and a restart restores."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from models import ParameterCounts
from sweeps.data.batches import PreparedRows, StreamedRows
from sweeps.run.checkpoint import Checkpointer
from sweeps.run.config import TrainConfig
from sweeps.run.distributed import Environment


@dataclass
class Run:
    """The pieces of one run, built once per attempt (sweeps/run/loop.py `_build`)."""

    config: TrainConfig
    env: Environment
    run_id: str
    counts: ParameterCounts
    strategy: str  # "fsdp" (ZeRO-3) or "ddp" (replicated parameters), sweeps/run/parallelize.py
    layout: str  # the strategy as it applies here: "single" on one process
    compile_blocks: bool
    trained: torch.nn.Module  # the wrapped model that returns the loss
    lm: torch.nn.Module  # the Hugging Face model inside it, saved to model/
    optimizer: torch.optim.Optimizer | None  # None where nothing trains (a frozen P = 1 stage 2)
    batches: PreparedRows | StreamedRows
    shards: range  # this process's micro-batches of every step
    eval_rows: torch.Tensor
    end_step: int
    checkpointer: Checkpointer
    branches: Checkpointer | None  # a stage 1's branch points for its stage 2s


@dataclass
class TrainState:
    """Where the run stands. `step`, `ema` and the seconds trained are saved with every checkpoint; the attempt's
    start and last save are this process's clock, for the time left and checkpoint_interval_min."""

    step: int = 0
    ema: float = 0.0
    elapsed_before_s: float = 0.0  # trained by earlier attempts
    attempt_start: float = field(default_factory=time.perf_counter)
    attempt_first_step: int = 0
    last_save: float = field(default_factory=time.perf_counter)

    def start_attempt(self) -> None:
        self.attempt_start = self.last_save = time.perf_counter()
        self.attempt_first_step = self.step

    def advance(self, loss: float, smoothing: float) -> None:
        self.step += 1
        self.ema = smoothing * self.ema + (1 - smoothing) * loss

    def smoothed_loss(self, smoothing: float) -> float:
        return self.ema / (1 - smoothing**self.step)  # bias-corrected EMA

    def elapsed_s(self) -> float:
        return self.elapsed_before_s + time.perf_counter() - self.attempt_start

    def seconds_left(self, end_step: int) -> float:
        """At this attempt's pace."""
        per_step = (time.perf_counter() - self.attempt_start) / max(1, self.step - self.attempt_first_step)
        return per_step * (end_step - self.step)

    def minutes_since_save(self) -> float:
        return (time.perf_counter() - self.last_save) / 60
