"""The learning rate of every step, a pure function of the step so that a resumed run needs no scheduler state."""

from __future__ import annotations

import math

from sweeps.run import stages
from sweeps.run.config import OptimConfig, TrainConfig


def step_learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of optimiser step `step` of this run (both stages of a two-stage run share it)."""
    stage2_warmup = int(config.stage2.warmup_fraction * stages.decay_steps(config)) if config.stage == 2 else 0
    return learning_rate(step, config.total_steps, config.peak_lr, config.optim, stages.decay_steps(config),
                         stage2_warmup)


def learning_rate(step: int, total_steps: int, peak: float, optim: OptimConfig, decay_steps: int = 0,
                  stage2_warmup_steps: int = 0) -> float:
    """The learning rate of optimiser step `step` (0-based): linear warmup from 0, then cosine to
    min_lr_ratio * peak, or WSD (constant, then linear decay over the last decay_fraction of the steps), or
    constant. Two-stage runs (`decay_steps` > 0, sweeps/run/stages.py) hold the peak until the last
    `decay_steps`, stage 2, which decay in the schedule's shape, the first `stage2_warmup_steps` of them
    scaled up linearly from 0."""
    warmup = int(optim.warmup_fraction * total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    if optim.schedule == "constant":
        rate, decay_start = peak, total_steps - decay_steps
    else:
        if decay_steps:
            decay_start = total_steps - decay_steps
        elif optim.schedule == "cosine":
            decay_start = warmup
        else:
            decay_start = total_steps - max(1, int(optim.decay_fraction * total_steps))
        rate = _decayed(step, decay_start, total_steps, peak, optim)
    if 0 <= step - decay_start < stage2_warmup_steps:
        rate *= (step - decay_start + 1) / stage2_warmup_steps
    return rate


def _decayed(step: int, decay_start: int, total_steps: int, peak: float, optim: OptimConfig) -> float:
    if step < decay_start:
        return peak
    floor = peak * optim.min_lr_ratio
    progress = (step - decay_start) / max(1, total_steps - 1 - decay_start)
    if optim.schedule == "cosine":
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    return peak - (peak - floor) * progress
