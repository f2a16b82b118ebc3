"""Where a run starts: the run dir claimed for one config, and the newest checkpoint (or a stage 2's branch of its
stage-1 run) loaded into the built run (sweeps/run/state.py). The checkpoint files: sweeps/run/checkpoint.py."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from sweeps.errors import ConfigError
from sweeps.files import atomic_write_text
from sweeps.run import distributed, stages
from sweeps.run.checkpoint import read_meta, resumable_checkpoint
from sweeps.run.config import TrainConfig, changes_from_saved
from sweeps.run.state import Run, TrainState


def open_run_dir(run_dir: Path, config: TrainConfig, env: distributed.Environment) -> dict | None:
    """Claims the run dir for this config; returns the row of a run that already finished there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _claim(run_dir, config, env)
    if (run_dir / "result.json").exists():
        return json.loads((run_dir / "result.json").read_text())
    if (run_dir / "checkpoint.pt").exists():
        raise ConfigError(f"{run_dir} holds a checkpoint.pt of an older version of this toolkit; "
                          "start the run in a new run dir")
    return None


def _claim(run_dir: Path, config: TrainConfig, env: distributed.Environment) -> None:
    """Refuses a run dir that holds a different run; records this config in it."""
    changed = changes_from_saved(run_dir, config)
    if changed:
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({'; '.join(changed[:3])}); use a new run dir "
            "(hydra.run.dir=... or run_dir=...) or restore those settings"
        )
    distributed.barrier(env)  # everyone has read the old config before it is replaced
    if env.is_main:
        atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(asdict(config), sort_keys=False))


def resume_or_start(run: Run) -> TrainState:
    """Loads the run's newest checkpoint, or a stage 2's start from its stage-1 run, into `run`; returns where
    the run stands (step 0 for a new one)."""
    config = run.config
    latest, damaged = resumable_checkpoint(Path(config.run_dir))
    if run.env.is_main:
        for path, problem in damaged:
            print(f"warning: checkpoint {path} cannot be read ({problem}); resuming from "
                  f"{latest.name if latest else 'the start'} instead", file=sys.stderr, flush=True)
    if latest is not None:
        meta = read_meta(latest)
        if meta["run_id"] != run.run_id:
            raise ConfigError(f"{latest} belongs to another run ({meta['run_id']}); use a new run dir")
        state = training_state(run)
        rank_state = run.checkpointer.load(latest, state)
        if run.optimizer is None:
            set_model_state_dict(run.trained, state["model"])
        else:
            set_state_dict(run.trained, run.optimizer, model_state_dict=state["model"],
                           optim_state_dict=state["optimizer"])
        elapsed_before = meta["elapsed_s"]
    elif config.stage == 2:
        meta, rank_state = _start_stage2(run)
        elapsed_before = 0.0  # the stage-2 run's own time; stage 1's is in its row
    else:
        return TrainState()
    _restore_rank_state(run, rank_state, same_world_size=meta["world_size"] == run.env.world_size)
    return TrainState(step=meta["step"], ema=meta["ema"], elapsed_before_s=elapsed_before)


def _start_stage2(run: Run) -> tuple[dict, dict]:
    """Loads the stage-1 run's branch and initialises the new parameters; returns the branch's meta and the
    process state saved with it."""
    config = run.config
    try:
        stages.check_stage1_run(config)
    except stages.StageError as error:
        raise ConfigError(str(error)) from None
    branch = stages.stage2_branch(config)
    rank_state = stages.load_branch(run.trained, run.optimizer, run.checkpointer, branch,
                                    config.stage2.optimizer_state)
    if config.stage2.prefix_init == "activations" and config.parscale_n > 1:
        # Rows from the start of the run's order (stage 1 trained on them), read before the data position
        # is set, so that streamed data is still read in order.
        steps = -(-config.parscale_n // config.global_batch_size)
        rows = torch.cat([run.batches.batch(step, 0, config.global_batch_size) for step in range(steps)])
        stages.init_prefixes_from_activations(run.trained, run.lm, rows.to(run.env.device))
    return read_meta(branch), rank_state


def _restore_rank_state(run: Run, rank_state: dict, same_world_size: bool) -> None:
    """The data position is the same on every process (the step, or a streamed position at a step boundary),
    so any process count resumes from it; each process's RNG only where the process count is the same."""
    run.batches.load_state_dict(rank_state["data"])
    if same_world_size:
        torch.set_rng_state(rank_state["rng"]["torch"])
        if run.env.device.type == "cuda" and "cuda" in rank_state["rng"]:
            torch.cuda.set_rng_state(rank_state["rng"]["cuda"], run.env.device)


def training_state(run: Run) -> dict:
    """The model and optimiser state as DCP saves and loads it: sharded tensors with their global shapes."""
    if run.optimizer is None:
        return {"model": get_model_state_dict(run.trained)}
    model_state, optimizer_state = get_state_dict(run.trained, run.optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def rank_state(run: Run) -> dict:
    """This process's own state: its RNG and the data position."""
    rng = {"torch": torch.get_rng_state()}
    if run.env.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(run.env.device)
    return {"rng": rng, "data": run.batches.state_dict()}
