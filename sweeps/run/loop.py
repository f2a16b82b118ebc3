"""One ParScale training run, from a config to one row of the results table (`python -m sweeps.train`).

In Python: `train(load_config([..., "run_dir=PATH"]))` returns the row. On SLURM with submitit, submit
`TrainJob()` with the config, one task per GPU. How the model is laid out (FSDP2, bf16, compile, activation
checkpointing) is sweeps/run/parallelize.py; the loss is sweeps/run/loss.py; checkpoints are sweeps/run/checkpoint.py.

The run dir (Hydra's `hydra.run.dir`, or `hydra.sweep.dir/subdir` per cell of a multirun; `run_dir` in
Python) is where everything is written and where a restart looks first:
    config.yaml      the resolved config (a restart with a different one is refused; settings that do not
                     change the run's math, such as the micro-batch, checkpointing, compile or the number of
                     processes, may change)
    metrics.jsonl    one row per step: loss, smoothed loss, eval loss (when evaluated), lr, tokens/s, memory
    checkpoints/     the newest sharded checkpoints (removed once the run is done; the weights stay in model/)
    model/           the final weights as a Hugging Face checkpoint (init_from of a stage-2 run)
    result.json      the run's row of the results table, written last
    wandb/           wandb's local files
So the same command with the same run dir resumes an interrupted run, and returns at once for a finished one.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import torch
import yaml
from submitit.helpers import Checkpointable
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)

from models import count_parameters
from models.stream_diversity import recording_stream_diversity
from sweeps.data.batches import eval_batch, load_tokenizer, training_batches
from sweeps.errors import ConfigError
from sweeps.files import atomic_write_text, replace_directory
from sweeps.run import distributed, parallelize, stages
from sweeps.run.build import build_optimizer, build_trained, model_config, resolve_strategy
from sweeps.run.checkpoint import Checkpointer, PreemptionGuard, latest_checkpoint, read_meta
from sweeps.run.config import OptimConfig, TrainConfig, changes_from_saved, check, run_id
from sweeps.run.tracking import MetricsLog, WandbLogger, git_revision, progress_line

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def train(config: TrainConfig) -> dict:
    """Trains one run to its token budget and returns its results-table row (also run_dir/result.json).
    Resumes from the run dir's newest checkpoint if there is one; a finished run returns its row at once."""
    check(config)
    env = distributed.init(config.distributed_timeout_min, single_process_group=config.precision == "bf16")
    try:
        return _train(config, env)
    finally:
        distributed.shutdown()


def _train(config: TrainConfig, env: distributed.Environment) -> dict:
    run_dir = Path(config.run_dir)
    finished = _open_run_dir(run_dir, config, env)
    if finished is not None:
        return finished
    accumulation = _accumulation(config, env)

    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.data)
    built = model_config(config, tokenizer.vocab_size)
    counts = count_parameters(built)
    strategy = resolve_strategy(config, counts.total)
    compile_blocks = env.device.type == "cuda" if config.compile is None else config.compile
    trained, lm = build_trained(config, built, env, strategy, compile_blocks)
    optimizer = build_optimizer(trained, config.optim, fused=env.device.type == "cuda")
    layout = "single" if not parallelize.uses_fsdp(env, config.precision) else strategy

    shards = range(env.rank * accumulation, (env.rank + 1) * accumulation)
    batches = training_batches(config.data, tokenizer, config.seq_len, config.global_batch_size, config.seed)
    eval_rows = eval_batch(config.data, tokenizer, config.seq_len, config.eval_sequences).to(env.device)

    end_step, the_run_id = stages.last_step(config), run_id(config)
    checkpointer = Checkpointer(run_dir, env, keep=config.checkpoints_keep, async_save=config.async_checkpoint)
    branches = (Checkpointer(run_dir, env, keep=None, async_save=False, folder=stages.BRANCHES)
                if config.stage == 1 else None)
    step, ema, elapsed_before = _resume_or_start(config, trained, optimizer, checkpointer, batches, env, the_run_id)
    start = _evaluate_start(run_dir, trained, eval_rows, config, env, fresh=latest_checkpoint(run_dir) is None)

    metrics = wandb = None
    if env.is_main:
        metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=step)
        run_config = {**asdict(config), "run_id": the_run_id, "git_revision": git_revision(), "strategy": layout,
                      "params": counts.non_embedding, "total_params": counts.total, "world_size": env.world_size}
        wandb = WandbLogger(config.wandb, run_dir, the_run_id, run_config)
        print(_start_banner(config, env, step, counts, layout, accumulation, compile_blocks), flush=True)

    attempt_start, attempt_first_step = time.perf_counter(), step
    last_save = time.perf_counter()
    row = {}
    with PreemptionGuard() as guard:
        while step < end_step:
            step_start = time.perf_counter()
            lr = learning_rate(step, config.total_steps, config.peak_lr, config.optim, stages.decay_steps(config),
                               _stage2_warmup(config))
            loss_value, grad_norm = train_step(trained, optimizer, batches, step, shards, lr, config, strategy, env)
            step += 1
            _check_finite(loss_value, step, config)
            ema = config.loss_smoothing * ema + (1 - config.loss_smoothing) * loss_value
            row = _step_row(config, env, step, loss_value, ema, lr, grad_norm, time.perf_counter() - step_start)
            if step % config.eval_interval == 0 or step == end_step:
                row.update(evaluate(trained, eval_rows, config.micro_batch_size, env))
            checkpointer.poll()
            signum, timer_due = _signal_and_timer(config, env, guard, last_save)
            meta = {"ema": ema, "elapsed_s": elapsed_before + time.perf_counter() - attempt_start, "run_id": the_run_id,
                    "world_size": env.world_size, "micro_batch_size": config.micro_batch_size}
            if branches is not None and step in stages.branch_steps(config):
                # Before the periodic save: a resumed run never starts past a branch it has not kept.
                branches.save(step, _training_state(trained, optimizer), _rank_state(batches, env), meta, blocking=True)
            if _checkpoint_due(config, step, end_step, signum, timer_due):
                row["checkpoint_s"] = checkpointer.save(step, _training_state(trained, optimizer),
                                                        _rank_state(batches, env), meta, blocking=bool(signum))
                last_save = time.perf_counter()
            row["elapsed_s"] = elapsed_before + time.perf_counter() - attempt_start
            if env.is_main:
                _log_step(row, metrics, wandb, config, end_step, attempt_start, attempt_first_step)
            if signum and step < end_step:
                _stop_for_restart(guard, signum, step, env)

    result = _result_row(config, counts, the_run_id, step, row, start)
    checkpointer.wait()
    _finish(run_dir, trained, lm, env, result)
    checkpointer.remove_all()
    if env.is_main:
        wandb.finish(result)
        print(f"done: loss {result['loss']:.4f} (smoothed), eval loss {result['eval_loss']:.4f}; "
              f"{run_dir / 'result.json'}", flush=True)
    return result


def _open_run_dir(run_dir: Path, config: TrainConfig, env) -> dict | None:
    """Claims the run dir; returns the row of a run that already finished there."""
    run_dir.mkdir(parents=True, exist_ok=True)
    _claim(run_dir, config, env)
    if (run_dir / "result.json").exists():
        return json.loads((run_dir / "result.json").read_text())
    if (run_dir / "checkpoint.pt").exists():
        raise ConfigError(f"{run_dir} holds a checkpoint.pt of an older version of this toolkit; "
                          "start the run in a new run dir")
    return None


def _accumulation(config: TrainConfig, env) -> int:
    """Micro-batches per step on each process."""
    num_shards = config.global_batch_size // config.micro_batch_size
    if num_shards % env.world_size or config.eval_sequences % env.world_size:
        raise ConfigError(
            f"{num_shards} micro-batches per step and eval_sequences={config.eval_sequences} must both split evenly "
            f"over {env.world_size} processes; change micro_batch_size, eval_sequences or the process count"
        )
    return num_shards // env.world_size


def _start_banner(config: TrainConfig, env, step: int, counts, layout: str, accumulation: int,
                  compile_blocks: bool) -> str:
    first = stages.first_step(config)
    stage = f", stage {config.stage} (steps {first}-{stages.last_step(config)})" if config.stage else ""
    return (
        f"{'resuming at step ' + str(step) if step > first else 'starting'}: {config.size} "
        f"P={config.parscale_n} N={counts.non_embedding:,} on {config.data.name}, {config.total_steps} steps of "
        f"{config.tokens_per_step:,} tokens{stage}, {env.world_size} process(es) ({layout}) x {accumulation} "
        f"micro-batch(es) of {config.micro_batch_size}, {config.precision}{', compiled' if compile_blocks else ''}"
        f"{', activation checkpointing' if config.activation_checkpointing else ''}, run dir {Path(config.run_dir)}"
    )


def _check_finite(loss_value: float, step: int, config: TrainConfig) -> None:
    if not math.isfinite(loss_value):
        raise FloatingPointError(
            f"the training loss is {loss_value} at step {step}; lower optim.lr (now {config.peak_lr:g}) or "
            "use precision=fp32, then start again in a new run dir"
        )


def _step_row(config: TrainConfig, env, step: int, loss_value: float, ema: float, lr: float, grad_norm: float,
              step_s: float) -> dict:
    """The step's row of metrics.jsonl (evaluation, checkpoint and elapsed times are added to it)."""
    return {
        "step": step,
        "tokens": step * config.tokens_per_step,
        "loss": loss_value,
        "smoothed_loss": ema / (1 - config.loss_smoothing**step),  # bias-corrected EMA
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens_per_s": config.tokens_per_step / step_s,
        "memory_gb": distributed.peak_memory_gb(env),
    }


def _signal_and_timer(config: TrainConfig, env, guard: PreemptionGuard, last_save: float) -> list[int]:
    """What all processes agree on before saving: the signal any of them caught, and whether
    checkpoint_interval_min has passed on any of them."""
    minutes_due = (config.checkpoint_interval_min
                   and time.perf_counter() - last_save >= 60 * config.checkpoint_interval_min)
    return distributed.all_max([guard.signum, int(bool(minutes_due))], env)


def _checkpoint_due(config: TrainConfig, step: int, end_step: int, signum: int, timer_due: int) -> bool:
    """A checkpoint on a signal, when the minutes are up or every checkpoint_interval steps; none at the last
    step, whose weights the finished run writes."""
    return step < end_step and bool(signum or timer_due or step % config.checkpoint_interval == 0)


def _log_step(row: dict, metrics: MetricsLog, wandb: WandbLogger, config: TrainConfig, end_step: int,
              attempt_start: float, attempt_first_step: int) -> None:
    """Main process: the row to metrics.jsonl and wandb, and a progress line (with the time left at this
    attempt's pace) at log, eval and last steps."""
    step = row["step"]
    metrics.append(row)
    wandb.log(row, step)
    if step % config.log_interval == 0 or "eval_loss" in row or step == end_step:
        per_step = (time.perf_counter() - attempt_start) / (step - attempt_first_step)
        print(progress_line(row, end_step, per_step * (end_step - step)), flush=True)


def _stop_for_restart(guard: PreemptionGuard, signum: int, step: int, env) -> None:
    if env.is_main:
        print(f"signal {signum}: saved the checkpoint at step {step}; stopping for a restart", flush=True)
    guard.stop(signum)


def _resume_or_start(config, trained, optimizer, checkpointer, batches, env, the_run_id) -> tuple[int, float, float]:
    """Loads the run's newest checkpoint, or a stage 2's start from its stage-1 run; returns the step, the
    loss EMA and the seconds trained before."""
    latest = latest_checkpoint(Path(config.run_dir))
    if latest is not None:
        meta = read_meta(latest)
        if meta["run_id"] != the_run_id:
            raise ConfigError(f"{latest} belongs to another run ({meta['run_id']}); use a new run dir")
        state = _training_state(trained, optimizer)
        rank_state = checkpointer.load(latest, state)
        if optimizer is None:
            set_model_state_dict(trained, state["model"])
        else:
            set_state_dict(trained, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        elapsed_before = meta["elapsed_s"]
    elif config.stage == 2:
        try:
            stages.check_stage1_run(config)
        except stages.StageError as error:
            raise ConfigError(str(error)) from None
        latest = stages.stage2_branch(config)
        meta = read_meta(latest)
        rank_state = stages.load_branch(trained, optimizer, checkpointer, latest, config.stage2.optimizer_state)
        if config.stage2.prefix_init == "activations" and config.parscale_n > 1:
            # Rows from the start of the run's order (stage 1 trained on them), read before the data position
            # is set, so that streamed data is still read in order.
            steps = -(-config.parscale_n // config.global_batch_size)
            rows = torch.cat([batches.batch(step, 0, config.global_batch_size) for step in range(steps)])
            stages.init_prefixes_from_activations(trained, rows.to(env.device))
        elapsed_before = 0.0  # the stage-2 run's own time; stage 1's is in its row
    else:
        return 0, 0.0, 0.0
    # The data position is the same on every process (the step, or a streamed position at a step boundary),
    # so any process count resumes from it; each process's RNG only where the process count is the same.
    batches.load_state_dict(rank_state["data"])
    if meta["world_size"] == env.world_size:
        torch.set_rng_state(rank_state["rng"]["torch"])
        if env.device.type == "cuda" and "cuda" in rank_state["rng"]:
            torch.cuda.set_rng_state(rank_state["rng"]["cuda"], env.device)
    return meta["step"], meta["ema"], elapsed_before


START_FILE = "start.json"


def _evaluate_start(run_dir: Path, trained, eval_rows, config, env, fresh: bool) -> dict:
    """The held-out loss and the streams' diversity where the run starts (a stage 2: the moment the streams
    are added), measured once before the first step and kept in start.json for the result row."""
    path = run_dir / START_FILE
    if not fresh and path.exists():
        return json.loads(path.read_text())
    start = {f"{key}_start": value for key, value in evaluate(trained, eval_rows, config.micro_batch_size, env).items()}
    if env.is_main:
        atomic_write_text(path, json.dumps(start, indent=1) + "\n")
    return start


def _result_row(config, counts, the_run_id, step, row, start) -> dict:
    """The run's row of the results table (parscale_law/table.py); `tokens` counts the backbone's whole
    training, both stages for a stage 2."""
    diversity = {key: row[key] for key in ("stream_distance", "weight_entropy") if key in row}
    return {
        "dataset": config.data.name,
        "size": config.size,
        "params": counts.non_embedding,
        "P": config.parscale_n,
        "loss": row["smoothed_loss"],
        "tokens": step * config.tokens_per_step,
        "run_id": the_run_id,
        "seed": config.seed,
        "eval_loss": row["eval_loss"],
        "status": "done",
        "wall_time_s": row["elapsed_s"],
        "total_params": counts.total,
        "steps": step,
        "final_train_loss": row["loss"],
        "stage": config.stage,
        "stage2_fraction": config.stage2_fraction,
        "stage2_tokens": (step - stages.first_step(config)) * config.tokens_per_step if config.stage == 2 else 0,
        **start,
        **diversity,
    }


def _stage2_warmup(config) -> int:
    return int(config.stage2.warmup_fraction * stages.decay_steps(config)) if config.stage == 2 else 0


def train_step(trained, optimizer, batches, step, shards, lr, config, strategy, env) -> tuple[float, float]:
    """One optimiser step over this process's micro-batches; returns the loss averaged over all processes
    and the gradient norm before clipping. Without an optimizer (nothing trains: a frozen P = 1 stage 2) only
    the loss on the step's rows."""
    learns = optimizer is not None
    if learns:
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
    loss_sum = torch.zeros((), device=env.device)
    for index, shard in enumerate(shards):
        rows = batches.batch(step, shard * config.micro_batch_size, config.micro_batch_size)
        input_ids = _to_device(rows, env)
        with torch.set_grad_enabled(learns):
            # ZeRO-3 reduce-scatters every micro-batch's gradients (nothing unsharded is kept between them); the
            # DDP-like layout keeps them and reduces once per step.
            parallelize.set_gradient_sync(trained, strategy == "fsdp" or index == len(shards) - 1)
            loss = trained(input_ids)
            if learns:
                (loss / len(shards)).backward()
        loss_sum += loss.detach()
    grad_norm = 0.0
    if learns:
        parameters = [p for p in trained.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.optim.grad_clip or math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a sharded (DTensor) norm
            grad_norm = grad_norm.full_tensor()
    loss_value = distributed.all_sum([loss_sum.item() / len(shards)], env)[0] / env.world_size
    return loss_value, float(grad_norm)


def _to_device(rows: torch.Tensor, env) -> torch.Tensor:
    if env.device.type == "cuda":
        return rows.pin_memory().to(env.device, non_blocking=True)
    return rows


def _training_state(trained, optimizer) -> dict:
    """The model and optimiser state as DCP saves and loads it: sharded tensors with their global shapes."""
    if optimizer is None:
        return {"model": get_model_state_dict(trained)}
    model_state, optimizer_state = get_state_dict(trained, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def _rank_state(batches, env) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if env.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(env.device)
    return {"rng": rng, "data": batches.state_dict()}


def learning_rate(step: int, total_steps: int, peak: float, optim: OptimConfig, decay_steps: int = 0,
                  stage2_warmup_steps: int = 0) -> float:
    """The learning rate of optimiser step `step` (0-based): linear warmup from 0, then cosine to
    min_lr_ratio * peak, or WSD (constant, then linear decay over the last decay_fraction of the steps), or
    constant. Two-stage runs (`decay_steps` > 0, sweeps/run/stages.py) hold the peak until the last
    `decay_steps`, stage 2, which decay in the schedule's shape, the first `stage2_warmup_steps` of them
    scaled up linearly from 0. A pure function of the step, so a resumed run needs no scheduler state."""
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


@torch.no_grad()
def evaluate(trained, rows: torch.Tensor, micro_batch_size: int, env) -> dict:
    """The mean held-out loss per token (`eval_loss`) and, at P > 1, how far apart the streams are on those
    tokens (`stream_distance`, `weight_entropy`: models/stream_diversity.py); each process evaluates its slice
    of the same rows."""
    per_process = rows.shape[0] // env.world_size
    mine = rows[env.rank * per_process:(env.rank + 1) * per_process]
    trained.eval()
    total = 0.0
    with recording_stream_diversity(trained) as diversity:
        for batch in mine.split(micro_batch_size):
            total += trained(batch).item() * batch.shape[0]
    trained.train()
    if diversity is None:
        return {"eval_loss": distributed.all_sum([total], env)[0] / rows.shape[0]}
    total, distance, entropy, tokens = distributed.all_sum(
        [total, diversity.distance_sum, diversity.entropy_sum, diversity.tokens], env)
    return {"eval_loss": total / rows.shape[0], "stream_distance": distance / tokens,
            "weight_entropy": entropy / tokens}


def _claim(run_dir: Path, config: TrainConfig, env) -> None:
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


def _finish(run_dir: Path, trained, lm, env, result: dict) -> None:
    """Writes model/ (gathered on rank 0) and then result.json, the mark of a finished run."""
    state = get_model_state_dict(trained, options=FULL_STATE)
    if env.is_main:
        temporary = run_dir / ".model.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        lm.save_pretrained(temporary, state_dict=state)
        replace_directory(temporary, run_dir / "model")
        atomic_write_text(run_dir / "result.json", json.dumps(result, indent=1) + "\n")
    distributed.barrier(env)


class TrainJob(Checkpointable):
    """The submitit callable of one cell: `executor.submit(TrainJob(), config)`, one task per GPU. On
    timeout or preemption submitit calls `checkpoint`, which (by Checkpointable's default) resubmits the
    same call; `train` then resumes from the checkpoint saved at the step boundary after the signal."""

    def __call__(self, config: TrainConfig) -> dict:
        return train(config)
