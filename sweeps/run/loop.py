"""One ParScale training run, from a config to one row of the results table (`python -m sweeps.train`).

In Python: `train(load_config([..., "run_dir=PATH"]))` returns the row. On SLURM with submitit, submit
`TrainJob()` with the config, one task per GPU. Read `_train` top to bottom: the run dir is claimed, the run is
built (sweeps/run/build.py: model, FSDP2 layout, optimiser; sweeps/run/state.py), resumed or started
(sweeps/run/resume.py), trained step by step (saving when due: sweeps/run/checkpoint.py), and finished (weights,
then the result row). The learning rate: sweeps/run/schedule.py; the loss: sweeps/run/loss.py.

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
from submitit.helpers import Checkpointable
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from models import count_parameters
from sweeps.data.batches import eval_batch, load_tokenizer, training_batches
from sweeps.errors import ConfigError
from sweeps.files import atomic_write_text, replace_directory
from sweeps.run import distributed, parallelize, stages
from sweeps.run.build import build_optimizer, build_trained, model_config, resolve_strategy
from sweeps.run.checkpoint import Checkpointer, PreemptionGuard, latest_checkpoint
from sweeps.run.config import TrainConfig, run_id
from sweeps.run.evaluation import evaluate_run, evaluate_start
from sweeps.run.resume import open_run_dir, rank_state, resume_or_start, training_state
from sweeps.run.schedule import step_learning_rate
from sweeps.run.state import Run, TrainState
from sweeps.run.tracking import MetricsLog, WandbLogger, git_revision, progress_line

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def train(config: TrainConfig) -> dict:
    """Trains one run to its token budget and returns its results-table row (also run_dir/result.json).
    Resumes from the run dir's newest checkpoint if there is one; a finished run returns its row at once."""
    config.check()
    env = distributed.init(config.distributed_timeout_min, single_process_group=config.precision == "bf16")
    try:
        return _train(config, env)
    finally:
        distributed.shutdown()


def _train(config: TrainConfig, env: distributed.Environment) -> dict:
    finished = open_run_dir(Path(config.run_dir), config, env)
    if finished is not None:
        return finished
    run = _build(config, env)
    state = resume_or_start(run)
    start = evaluate_start(run, fresh=latest_checkpoint(Path(config.run_dir)) is None)
    metrics, wandb = _open_logs(run, state)
    state.start_attempt()
    row = {}
    with PreemptionGuard() as guard:
        while state.step < run.end_step:
            row = _step(run, state)
            signum = _save_if_due(run, state, guard, row)
            row["elapsed_s"] = state.elapsed_s()
            if env.is_main:
                _log_step(row, metrics, wandb, config, run.end_step, state)
            if signum and state.step < run.end_step:
                _stop_for_restart(guard, signum, state.step, env)
    return _finish_run(run, state, row, start, wandb)


def _build(config: TrainConfig, env: distributed.Environment) -> Run:
    """The model in its layout, the optimiser, the data and the checkpointers of this attempt."""
    accumulation = _accumulation(config, env)
    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.data)
    built = model_config(config, tokenizer.vocab_size)
    counts = count_parameters(built)
    strategy = resolve_strategy(config, counts.total)
    compile_blocks = env.device.type == "cuda" if config.compile is None else config.compile
    trained, lm = build_trained(config, built, env, strategy, compile_blocks)
    run_dir = Path(config.run_dir)
    return Run(
        config=config, env=env, run_id=run_id(config), counts=counts, strategy=strategy,
        layout="single" if not parallelize.uses_fsdp(env, config.precision) else strategy,
        compile_blocks=compile_blocks, trained=trained, lm=lm,
        optimizer=build_optimizer(trained, config.optim, fused=env.device.type == "cuda"),
        batches=training_batches(config.data, tokenizer, config.seq_len, config.global_batch_size, config.seed),
        shards=range(env.rank * accumulation, (env.rank + 1) * accumulation),
        eval_rows=eval_batch(config.data, tokenizer, config.seq_len, config.eval_sequences).to(env.device),
        end_step=stages.last_step(config),
        checkpointer=Checkpointer(run_dir, env, keep=config.checkpoints_keep, async_save=config.async_checkpoint),
        branches=(Checkpointer(run_dir, env, keep=None, async_save=False, folder=stages.BRANCHES)
                  if config.stage == 1 else None),
    )


def _accumulation(config: TrainConfig, env: distributed.Environment) -> int:
    """Micro-batches per step on each process."""
    num_shards = config.global_batch_size // config.micro_batch_size
    if num_shards % env.world_size or config.eval_sequences % env.world_size:
        raise ConfigError(
            f"{num_shards} micro-batches per step and eval_sequences={config.eval_sequences} must both split evenly "
            f"over {env.world_size} processes; change micro_batch_size, eval_sequences or the process count"
        )
    return num_shards // env.world_size


def _open_logs(run: Run, state: TrainState) -> tuple[MetricsLog | None, WandbLogger | None]:
    """Main process: metrics.jsonl and wandb, opened where the run stands, and the start banner."""
    if not run.env.is_main:
        return None, None
    config, counts = run.config, run.counts
    metrics = MetricsLog(Path(config.run_dir) / "metrics.jsonl", resume_step=state.step)
    run_config = {**asdict(config), "run_id": run.run_id, "git_revision": git_revision(), "strategy": run.layout,
                  "params": counts.non_embedding, "total_params": counts.total, "world_size": run.env.world_size}
    wandb = WandbLogger(config.wandb, Path(config.run_dir), run.run_id, run_config)
    print(_start_banner(run, state.step), flush=True)
    return metrics, wandb


def _start_banner(run: Run, step: int) -> str:
    config, first = run.config, stages.first_step(run.config)
    stage = f", stage {config.stage} (steps {first}-{run.end_step})" if config.stage else ""
    return (
        f"{'resuming at step ' + str(step) if step > first else 'starting'}: {config.size} "
        f"P={config.parscale_n} N={run.counts.non_embedding:,} on {config.data.name}, {config.total_steps} steps of "
        f"{config.tokens_per_step:,} tokens{stage}, {run.env.world_size} process(es) ({run.layout}) x "
        f"{len(run.shards)} micro-batch(es) of {config.micro_batch_size}, {config.precision}"
        f"{', compiled' if run.compile_blocks else ''}"
        f"{', activation checkpointing' if config.activation_checkpointing else ''}, run dir {Path(config.run_dir)}"
    )


def _step(run: Run, state: TrainState) -> dict:
    """One optimiser step; returns its row of metrics.jsonl (with the eval loss at eval steps)."""
    config = run.config
    step_start = time.perf_counter()
    lr = step_learning_rate(config, state.step)
    loss_value, grad_norm = train_step(run, state.step, lr)
    state.advance(loss_value, config.loss_smoothing)
    _check_finite(loss_value, state.step, config)
    row = {
        "step": state.step,
        "tokens": state.step * config.tokens_per_step,
        "loss": loss_value,
        "smoothed_loss": state.smoothed_loss(config.loss_smoothing),
        "lr": lr,
        "grad_norm": grad_norm,
        "tokens_per_s": config.tokens_per_step / (time.perf_counter() - step_start),
        "memory_gb": distributed.peak_memory_gb(run.env),
    }
    if state.step % config.eval_interval == 0 or state.step == run.end_step:
        row.update(evaluate_run(run))
    return row


def train_step(run: Run, step: int, lr: float) -> tuple[float, float]:
    """One optimiser step over this process's micro-batches; returns the loss averaged over all processes
    and the gradient norm before clipping. Without an optimizer (nothing trains: a frozen P = 1 stage 2) only
    the loss on the step's rows."""
    trained, optimizer, config = run.trained, run.optimizer, run.config
    learns = optimizer is not None
    if learns:
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
    loss_sum = torch.zeros((), device=run.env.device)
    for index, shard in enumerate(run.shards):
        rows = run.batches.batch(step, shard * config.micro_batch_size, config.micro_batch_size)
        with torch.set_grad_enabled(learns):
            # ZeRO-3 reduce-scatters every micro-batch's gradients (nothing unsharded is kept between them); the
            # DDP-like layout keeps them and reduces once per step.
            parallelize.set_gradient_sync(trained, run.strategy == "fsdp" or index == len(run.shards) - 1)
            loss = trained(_to_device(rows, run.env))
            if learns:
                (loss / len(run.shards)).backward()
        loss_sum += loss.detach()
    grad_norm = 0.0
    if learns:
        parameters = [p for p in trained.parameters() if p.requires_grad]
        grad_norm = torch.nn.utils.clip_grad_norm_(parameters, config.optim.grad_clip or math.inf)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if hasattr(grad_norm, "full_tensor"):  # FSDP2: a sharded (DTensor) norm
            grad_norm = grad_norm.full_tensor()
    loss_value = distributed.all_sum([loss_sum.item() / len(run.shards)], run.env)[0] / run.env.world_size
    return loss_value, float(grad_norm)


def _to_device(rows: torch.Tensor, env: distributed.Environment) -> torch.Tensor:
    if env.device.type == "cuda":
        return rows.pin_memory().to(env.device, non_blocking=True)
    return rows


def _check_finite(loss_value: float, step: int, config: TrainConfig) -> None:
    if not math.isfinite(loss_value):
        raise FloatingPointError(
            f"the training loss is {loss_value} at step {step}; lower optim.lr (now {config.peak_lr:g}) or "
            "use precision=fp32, then start again in a new run dir"
        )


def _save_if_due(run: Run, state: TrainState, guard: PreemptionGuard, row: dict) -> int:
    """Saves a stage 1's branch point, and a checkpoint on a signal, when the minutes are up or every
    checkpoint_interval steps (none at the last step, whose weights the finished run writes). Returns the
    signal any process caught (0 for none)."""
    config, step = run.config, state.step
    run.checkpointer.poll()
    # What all processes agree on before saving: the signal any of them caught, and whether
    # checkpoint_interval_min has passed on any of them.
    minutes_due = config.checkpoint_interval_min and state.minutes_since_save() >= config.checkpoint_interval_min
    signum, timer_due = distributed.all_max([guard.signum, int(bool(minutes_due))], run.env)
    meta = {"ema": state.ema, "elapsed_s": state.elapsed_s(), "run_id": run.run_id,
            "world_size": run.env.world_size, "micro_batch_size": config.micro_batch_size}
    if run.branches is not None and step in stages.branch_steps(config):
        # Before the periodic save: a resumed run never starts past a branch it has not kept.
        run.branches.save(step, training_state(run), rank_state(run), meta, blocking=True)
    if step < run.end_step and (signum or timer_due or step % config.checkpoint_interval == 0):
        row["checkpoint_s"] = run.checkpointer.save(step, training_state(run), rank_state(run), meta,
                                                    blocking=bool(signum))
        state.last_save = time.perf_counter()
    return signum


def _log_step(row: dict, metrics: MetricsLog, wandb: WandbLogger, config: TrainConfig, end_step: int,
              state: TrainState) -> None:
    """Main process: the row to metrics.jsonl and wandb, and a progress line (with the time left at this
    attempt's pace) at log, eval and last steps."""
    step = row["step"]
    metrics.append(row)
    wandb.log(row, step)
    if step % config.log_interval == 0 or "eval_loss" in row or step == end_step:
        print(progress_line(row, end_step, state.seconds_left(end_step)), flush=True)


def _stop_for_restart(guard: PreemptionGuard, signum: int, step: int, env: distributed.Environment) -> None:
    if env.is_main:
        print(f"signal {signum}: saved the checkpoint at step {step}; stopping for a restart", flush=True)
    guard.stop(signum)


def _finish_run(run: Run, state: TrainState, row: dict, start: dict, wandb: WandbLogger | None) -> dict:
    """Writes model/ and result.json, removes the checkpoints and returns the result row."""
    result = _result_row(run, state.step, row, start)
    run.checkpointer.wait()
    _write_weights_and_row(run, result)
    run.checkpointer.remove_all()
    if run.env.is_main:
        wandb.finish(result)
        print(f"done: loss {result['loss']:.4f} (smoothed), eval loss {result['eval_loss']:.4f}; "
              f"{Path(run.config.run_dir) / 'result.json'}", flush=True)
    return result


def _result_row(run: Run, step: int, row: dict, start: dict) -> dict:
    """The run's row of the results table (parscale_law/table.py); `tokens` counts the backbone's whole
    training, both stages for a stage 2."""
    config = run.config
    diversity = {key: row[key] for key in ("stream_distance", "weight_entropy") if key in row}
    return {
        "dataset": config.data.name,
        "size": config.size,
        "params": run.counts.non_embedding,
        "P": config.parscale_n,
        "loss": row["smoothed_loss"],
        "tokens": step * config.tokens_per_step,
        "run_id": run.run_id,
        "seed": config.seed,
        "eval_loss": row["eval_loss"],
        "status": "done",
        "wall_time_s": row["elapsed_s"],
        "total_params": run.counts.total,
        "steps": step,
        "final_train_loss": row["loss"],
        "stage": config.stage,
        "stage2_fraction": config.stage2_fraction,
        "stage2_tokens": (step - stages.first_step(config)) * config.tokens_per_step if config.stage == 2 else 0,
        **start,
        **diversity,
    }


def _write_weights_and_row(run: Run, result: dict) -> None:
    """Writes model/ (gathered on rank 0) and then result.json, the mark of a finished run."""
    state = get_model_state_dict(run.trained, options=FULL_STATE)
    run_dir = Path(run.config.run_dir)
    if run.env.is_main:
        temporary = run_dir / ".model.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        run.lm.save_pretrained(temporary, state_dict=state)
        replace_directory(temporary, run_dir / "model")
        atomic_write_text(run_dir / "result.json", json.dumps(result, indent=1) + "\n")
    distributed.barrier(run.env)


class TrainJob(Checkpointable):
    """The submitit callable of one cell: `executor.submit(TrainJob(), config)`, one task per GPU. On
    timeout or preemption submitit calls `checkpoint`, which (by Checkpointable's default) resubmits the
    same call; `train` then resumes from the checkpoint saved at the step boundary after the signal."""

    def __call__(self, config: TrainConfig) -> dict:
        return train(config)
