"""One ParScale training run, from a config to one row of the results table.

    python -m sweeps.train model=tiny-128 data=stdlib-code parscale_n=2 tokens=2000000
    torchrun --nproc_per_node 8 -m sweeps.train model=0.5B data=pile parscale_n=4 tokens=42000000000 \
        seq_len=2048 global_batch_size=1024 micro_batch_size=4 precision=bf16         # the paper's setup
    python -m sweeps.train model=tiny-128 parscale_n=4 init_from=runs/stdlib-code/tiny-128-P1-s0 \
        freeze_backbone=true tokens=200000 hydra.run.dir=runs/stage2/tiny-128-P4       # stage 2

In Python: `train(load_config([..., "run_dir=PATH"]))` returns the row. On SLURM with submitit, submit
`TrainJob()` with the config, one task per GPU. How the model is laid out (FSDP2, bf16, compile, activation
checkpointing) is sweeps/parallelize.py; the loss is sweeps/loss.py; checkpoints are sweeps/checkpoint.py.

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
import sys
import time
from dataclasses import asdict
from pathlib import Path

import hydra
import torch
import yaml
from submitit.helpers import Checkpointable
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict, set_state_dict

from models import count_parameters

from . import distributed, parallelize
from .build import build_optimizer, build_trained, model_config, resolve_strategy
from .checkpoint import Checkpointer, PreemptionGuard, atomic_write_text, latest_checkpoint, read_meta, replace_directory
from .config import CONF_DIR, ConfigError, OptimConfig, TrainConfig, check, check_group_choices, differences, from_mapping, identity, run_id
from .data import eval_batch, load_tokenizer, training_batches
from .tracking import MetricsLog, WandbLogger, git_revision, progress_line

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
    run_dir.mkdir(parents=True, exist_ok=True)
    _claim(run_dir, config, env)
    if (run_dir / "result.json").exists():
        return json.loads((run_dir / "result.json").read_text())
    if (run_dir / "checkpoint.pt").exists():
        raise ConfigError(f"{run_dir} holds a checkpoint.pt of an older version of this toolkit; start the run in a new run dir")

    num_shards = config.global_batch_size // config.micro_batch_size
    if num_shards % env.world_size or config.eval_sequences % env.world_size:
        raise ConfigError(
            f"{num_shards} micro-batches per step and eval_sequences={config.eval_sequences} must both split evenly "
            f"over {env.world_size} processes; change micro_batch_size, eval_sequences or the process count"
        )
    accumulation = num_shards // env.world_size

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

    total_steps, the_run_id = config.total_steps, run_id(config)
    step, ema, elapsed_before = 0, 0.0, 0.0
    checkpointer = Checkpointer(run_dir, env, keep=config.checkpoints_keep, async_save=config.async_checkpoint)
    latest = latest_checkpoint(run_dir)
    if latest is not None:
        meta = read_meta(latest)
        if meta["run_id"] != the_run_id:
            raise ConfigError(f"{latest} belongs to another run ({meta['run_id']}); use a new run dir")
        state = _training_state(trained, optimizer)
        rank_state = checkpointer.load(latest, state)
        set_state_dict(trained, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        # The data position is the same on every process (the step, or a streamed position at a step boundary),
        # so any process count resumes from it; each process's RNG only where the process count is the same.
        batches.load_state_dict(rank_state["data"])
        if meta["world_size"] == env.world_size:
            torch.set_rng_state(rank_state["rng"]["torch"])
            if env.device.type == "cuda" and "cuda" in rank_state["rng"]:
                torch.cuda.set_rng_state(rank_state["rng"]["cuda"], env.device)
        step, ema, elapsed_before = meta["step"], meta["ema"], meta["elapsed_s"]
        del state

    metrics = wandb = None
    if env.is_main:
        metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=step)
        run_config = {**asdict(config), "run_id": the_run_id, "git_revision": git_revision(), "strategy": layout,
                      "params": counts.non_embedding, "total_params": counts.total, "world_size": env.world_size}
        wandb = WandbLogger(config.wandb, run_dir, the_run_id, run_config)
        print(
            f"{'resuming at step ' + str(step) if step else 'starting'}: {config.size} P={config.parscale_n} "
            f"N={counts.non_embedding:,} on {config.data.name}, {total_steps} steps of {config.tokens_per_step:,} "
            f"tokens, {env.world_size} process(es) ({layout}) x {accumulation} micro-batch(es) of "
            f"{config.micro_batch_size}, {config.precision}{', compiled' if compile_blocks else ''}"
            f"{', activation checkpointing' if config.activation_checkpointing else ''}, run dir {run_dir}",
            flush=True,
        )

    attempt_start, attempt_first_step = time.perf_counter(), step
    last_save = time.perf_counter()
    row = {}
    with PreemptionGuard() as guard:
        while step < total_steps:
            step_start = time.perf_counter()
            lr = learning_rate(step, total_steps, config.peak_lr, config.optim)
            loss_value, grad_norm = train_step(trained, optimizer, batches, step, shards, lr, config, strategy, env)
            step += 1
            if not math.isfinite(loss_value):
                raise FloatingPointError(
                    f"the training loss is {loss_value} at step {step}; lower optim.lr (now {config.peak_lr:g}) or "
                    "use precision=fp32, then start again in a new run dir"
                )
            ema = config.loss_smoothing * ema + (1 - config.loss_smoothing) * loss_value
            step_s = time.perf_counter() - step_start
            row = {
                "step": step,
                "tokens": step * config.tokens_per_step,
                "loss": loss_value,
                "smoothed_loss": ema / (1 - config.loss_smoothing**step),  # bias-corrected EMA
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": config.tokens_per_step / step_s,
                "memory_gb": distributed.peak_memory_gb(env),
            }
            if step % config.eval_interval == 0 or step == total_steps:
                row["eval_loss"] = evaluate(trained, eval_rows, config.micro_batch_size, env)
            checkpointer.poll()
            minutes_due = config.checkpoint_interval_min and time.perf_counter() - last_save >= 60 * config.checkpoint_interval_min
            signum, due = distributed.all_max([guard.signum, int(bool(minutes_due))], env)
            if step < total_steps and (signum or due or step % config.checkpoint_interval == 0):
                row["checkpoint_s"] = checkpointer.save(
                    step, _training_state(trained, optimizer), _rank_state(batches, env),
                    {"ema": ema, "elapsed_s": elapsed_before + time.perf_counter() - attempt_start,
                     "run_id": the_run_id, "world_size": env.world_size, "micro_batch_size": config.micro_batch_size},
                    blocking=bool(signum),
                )
                last_save = time.perf_counter()
            row["elapsed_s"] = elapsed_before + time.perf_counter() - attempt_start
            if env.is_main:
                metrics.append(row)
                wandb.log(row, step)
                if step % config.log_interval == 0 or "eval_loss" in row or step == total_steps:
                    per_step = (time.perf_counter() - attempt_start) / (step - attempt_first_step)
                    print(progress_line(row, total_steps, per_step * (total_steps - step)), flush=True)
            if signum and step < total_steps:
                if env.is_main:
                    print(f"signal {signum}: saved the checkpoint at step {step}; stopping for a restart", flush=True)
                guard.stop(signum)

    result = {
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
    }
    checkpointer.wait()
    _finish(run_dir, trained, lm, env, result)
    checkpointer.remove_all()
    if env.is_main:
        wandb.finish(result)
        print(f"done: loss {result['loss']:.4f} (smoothed), eval loss {result['eval_loss']:.4f}; {run_dir / 'result.json'}",
              flush=True)
    return result


def train_step(trained, optimizer, batches, step, shards, lr, config, strategy, env) -> tuple[float, float]:
    """One optimiser step over this process's micro-batches; returns the loss averaged over all processes
    and the gradient norm before clipping."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    loss_sum = torch.zeros((), device=env.device)
    for index, shard in enumerate(shards):
        rows = batches.batch(step, shard * config.micro_batch_size, config.micro_batch_size)
        input_ids = _to_device(rows, env)
        # ZeRO-3 reduce-scatters every micro-batch's gradients (nothing unsharded is kept between them); the
        # DDP-like layout keeps them and reduces once per step.
        parallelize.set_gradient_sync(trained, strategy == "fsdp" or index == len(shards) - 1)
        loss = trained(input_ids)
        (loss / len(shards)).backward()
        loss_sum += loss.detach()
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
    model_state, optimizer_state = get_state_dict(trained, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def _rank_state(batches, env) -> dict:
    rng = {"torch": torch.get_rng_state()}
    if env.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(env.device)
    return {"rng": rng, "data": batches.state_dict()}


def learning_rate(step: int, total_steps: int, peak: float, optim: OptimConfig) -> float:
    """The learning rate of optimiser step `step` (0-based): linear warmup from 0, then cosine to
    min_lr_ratio * peak, or WSD (constant, then linear decay over the last decay_fraction of the steps), or
    constant. A pure function of the step, so a resumed run needs no scheduler state."""
    warmup = int(optim.warmup_fraction * total_steps)
    if step < warmup:
        return peak * (step + 1) / warmup
    floor = peak * optim.min_lr_ratio
    if optim.schedule == "constant":
        return peak
    if optim.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - 1 - warmup)
        return floor + (peak - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    decay_start = total_steps - max(1, int(optim.decay_fraction * total_steps))
    if step < decay_start:
        return peak
    return peak - (peak - floor) * (step - decay_start) / max(1, total_steps - 1 - decay_start)


@torch.no_grad()
def evaluate(trained, rows: torch.Tensor, micro_batch_size: int, env) -> float:
    """Mean held-out loss per token; each process evaluates its slice of the same rows."""
    per_process = rows.shape[0] // env.world_size
    mine = rows[env.rank * per_process:(env.rank + 1) * per_process]
    trained.eval()
    total = 0.0
    for batch in mine.split(micro_batch_size):
        total += trained(batch).item() * batch.shape[0]
    trained.train()
    return distributed.all_sum([total], env)[0] / rows.shape[0]


def _claim(run_dir: Path, config: TrainConfig, env) -> None:
    """Refuses a run dir that holds a different run; records this config in it."""
    saved_path = run_dir / "config.yaml"
    if saved_path.exists():
        saved = yaml.safe_load(saved_path.read_text())
        changed = differences(identity(from_mapping(saved)), identity(config))
        if changed:
            raise ConfigError(
                f"{run_dir} holds a run with a different config ({'; '.join(changed[:3])}); use a new run dir "
                "(hydra.run.dir=... or run_dir=...) or restore those settings"
            )
    distributed.barrier(env)  # everyone has read the old config before it is replaced
    if env.is_main:
        atomic_write_text(saved_path, yaml.safe_dump(asdict(config), sort_keys=False))


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


# An absolute path: a relative one would be resolved as a Python package when this module is imported.
@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _app(cfg) -> None:
    try:
        train(from_mapping(cfg))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def main() -> None:
    try:
        check_group_choices(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    _app()


if __name__ == "__main__":
    main()
