"""One ParScale training run, from a config to one row of the results table.

    python -m sweeps.train model=tiny-128 data=stdlib-code parscale_n=2 tokens=2000000
    torchrun --nproc_per_node 8 -m sweeps.train model=0.5B data=pile parscale_n=4 tokens=42000000000 \
        seq_len=2048 global_batch_size=1024 micro_batch_size=8 precision=bf16         # the paper's setup
    python -m sweeps.train model=tiny-128 parscale_n=4 init_from=runs/stdlib-code/tiny-128-P1-s0 \
        freeze_backbone=true tokens=200000 hydra.run.dir=runs/stage2/tiny-128-P4       # stage 2

In Python: `train(load_config([..., "run_dir=PATH"]))` returns the row. On SLURM with submitit, submit
`TrainJob()` with the config, one task per GPU.

The run dir (Hydra's `hydra.run.dir`, or `hydra.sweep.dir/subdir` per cell of a multirun; `run_dir` in
Python) is where everything is written and where a restart looks first:
    config.yaml      the resolved config (a restart with a different one is refused)
    metrics.jsonl    one row per step: loss, smoothed loss, eval loss (when evaluated), lr, tokens/s, memory
    checkpoint.pt    the latest checkpoint (removed once the run is done; the weights stay in model/)
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

from models import Qwen2ParScaleForCausalLM, config_from_mapping, count_parameters, is_parscale_parameter

from . import distributed
from .checkpoint import CHECKPOINT, PreemptionGuard, atomic_write_text, load_checkpoint, replace_directory, save_checkpoint
from .config import CONF_DIR, ConfigError, OptimConfig, TrainConfig, check, check_group_choices, differences, from_mapping, identity, run_id
from .data import eval_batch, load_tokenizer, training_batches
from .tracking import MetricsLog, WandbLogger, git_revision, progress_line

FULL_STATE = StateDictOptions(full_state_dict=True, cpu_offload=True)


def train(config: TrainConfig) -> dict:
    """Trains one run to its token budget and returns its results-table row (also run_dir/result.json).
    Resumes from the run dir's checkpoint if there is one; a finished run returns its row at once."""
    check(config)
    env = distributed.init()
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

    num_shards = config.global_batch_size // config.micro_batch_size
    if num_shards % env.world_size or config.eval_sequences % env.world_size:
        raise ConfigError(
            f"{num_shards} micro-batches per step and eval_sequences={config.eval_sequences} must both split evenly "
            f"over {env.world_size} processes; change micro_batch_size, eval_sequences or the process count"
        )
    accumulation = num_shards // env.world_size

    torch.manual_seed(config.seed)
    tokenizer = load_tokenizer(config.data)
    model = build_model(config, tokenizer.vocab_size)
    counts = count_parameters(model.config)
    strategy = config.strategy
    if strategy == "auto":
        strategy = "fsdp" if counts.total >= config.fsdp_min_params else "ddp"
    model.train()  # from_pretrained (two-stage) returns eval mode, in which HF skips activation checkpointing
    if config.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.to(env.device)
    trained = distributed.wrap(model, env, strategy)
    optimizer = build_optimizer(model, config.optim)
    autocast = torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16")

    shards = range(env.rank * accumulation, (env.rank + 1) * accumulation)
    batches = training_batches(config.data, tokenizer, config.seq_len, config.global_batch_size, config.seed)
    eval_rows = eval_batch(config.data, tokenizer, config.seq_len, config.eval_sequences).to(env.device)

    total_steps, the_run_id = config.total_steps, run_id(config)
    step, ema, elapsed_before = 0, 0.0, 0.0
    checkpoint = load_checkpoint(run_dir)
    if checkpoint is not None:
        if checkpoint["run_id"] != the_run_id:
            raise ConfigError(f"{run_dir / CHECKPOINT} belongs to another run ({checkpoint['run_id']}); use a new run dir")
        if checkpoint["world_size"] != env.world_size:
            raise ConfigError(
                f"{run_dir / CHECKPOINT} was written by {checkpoint['world_size']} processes; resume it with "
                f"{checkpoint['world_size']} (the data position is kept per process)"
            )
        set_state_dict(model, optimizer, model_state_dict=checkpoint["model"],
                       optim_state_dict=checkpoint["optimizer"], options=StateDictOptions(full_state_dict=True))
        batches.load_state_dict(checkpoint["data"][env.rank])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if env.device.type == "cuda" and "cuda" in checkpoint["rng"]:
            torch.cuda.set_rng_state(checkpoint["rng"]["cuda"], env.device)
        step, ema, elapsed_before = checkpoint["step"], checkpoint["ema"], checkpoint["elapsed_s"]
        del checkpoint

    metrics = wandb = None
    if env.is_main:
        metrics = MetricsLog(run_dir / "metrics.jsonl", resume_step=step)
        run_config = {**asdict(config), "run_id": the_run_id, "git_revision": git_revision(), "strategy": strategy,
                      "params": counts.non_embedding, "total_params": counts.total, "world_size": env.world_size}
        wandb = WandbLogger(config.wandb, run_dir, the_run_id, run_config)
        print(
            f"{'resuming at step ' + str(step) if step else 'starting'}: {config.size} P={config.parscale_n} "
            f"N={counts.non_embedding:,} on {config.data.name}, {total_steps} steps of {config.tokens_per_step:,} "
            f"tokens, {env.world_size} process(es) ({strategy if env.world_size > 1 else 'single'}) x {accumulation} "
            f"micro-batch(es), run dir {run_dir}",
            flush=True,
        )

    attempt_start, attempt_first_step = time.perf_counter(), step
    row = {}
    with PreemptionGuard() as guard:
        while step < total_steps:
            step_start = time.perf_counter()
            lr = learning_rate(step, total_steps, config.peak_lr, config.optim)
            loss_value, grad_norm = train_step(trained, optimizer, batches, step, shards, lr, config, autocast, env)
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
                row["eval_loss"] = evaluate(trained, eval_rows, config.micro_batch_size, autocast, env)
            row["elapsed_s"] = elapsed_before + time.perf_counter() - attempt_start
            if env.is_main:
                metrics.append(row)
                wandb.log(row, step)
                if step % config.log_interval == 0 or "eval_loss" in row or step == total_steps:
                    per_step = (time.perf_counter() - attempt_start) / (step - attempt_first_step)
                    print(progress_line(row, total_steps, per_step * (total_steps - step)), flush=True)

            signum = distributed.all_max(guard.signum, env)
            if step < total_steps and (signum or step % config.checkpoint_interval == 0):
                _save(run_dir, model, optimizer, batches, env, step, ema, row["elapsed_s"], the_run_id)
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
    _finish(run_dir, model, env, result)
    if env.is_main:
        wandb.finish(result)
        print(f"done: loss {result['loss']:.4f} (smoothed), eval loss {result['eval_loss']:.4f}; {run_dir / 'result.json'}",
              flush=True)
    return result


def train_step(trained, optimizer, batches, step, shards, lr, config, autocast, env) -> tuple[float, float]:
    """One optimiser step over this process's micro-batches; returns the loss averaged over all processes
    and the gradient norm before clipping."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    loss_sum = torch.zeros((), device=env.device)
    for index, shard in enumerate(shards):
        input_ids = batches.batch(step, shard * config.micro_batch_size, config.micro_batch_size).to(env.device)
        with distributed.gradient_sync(trained, sync=index == len(shards) - 1):
            with autocast:
                loss = trained(input_ids=input_ids, labels=input_ids, use_cache=False).loss
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


def build_model(config: TrainConfig, vocab_size: int) -> Qwen2ParScaleForCausalLM:
    """The model to train: newly initialised from conf/model, or (two-stage) a P = 1 backbone from
    `init_from` with newly initialised prefixes and aggregator for parscale_n streams."""
    try:
        model_config = config_from_mapping({**config.model, "parscale_n": config.parscale_n})
    except ValueError as error:
        raise ConfigError(f"model={config.size}: {error}") from None
    if vocab_size > model_config.vocab_size:
        raise ConfigError(
            f"data={config.data.name} tokenizes into {vocab_size} ids but model={config.size} has vocab_size "
            f"{model_config.vocab_size}; pair byte-level data (stdlib-*) with tiny sizes and hub data with paper sizes"
        )
    if config.init_from is None:
        return Qwen2ParScaleForCausalLM(model_config)
    source = _stage_one_checkpoint(Path(config.init_from))
    prefix_settings = {key: getattr(model_config, key) for key in
                       ("parscale_n_tokens", "parscale_attn_smooth", "parscale_prefix_init_std")}
    model = Qwen2ParScaleForCausalLM.from_qwen2(str(source), parscale_n=config.parscale_n, **prefix_settings)
    for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_key_value_heads"):
        if getattr(model.config, key) != getattr(model_config, key):
            raise ConfigError(
                f"init_from={config.init_from} has {key}={getattr(model.config, key)} but model={config.size} has "
                f"{getattr(model_config, key)}; choose the model=<size> the checkpoint was trained as"
            )
    model = model.float()  # hub checkpoints are often bf16; AdamW keeps fp32 weights
    if config.freeze_backbone:
        model.freeze_backbone()
    return model


def _stage_one_checkpoint(path: Path) -> Path:
    if (path / "model" / "config.json").exists():
        return path / "model"  # a finished run dir of this toolkit
    if (path / "config.json").exists():
        return path  # a Hugging Face Qwen2 (or P = 1 ParScale) checkpoint dir
    hint = " (that run has not finished)" if (path / "config.yaml").exists() else ""
    raise ConfigError(f"init_from={path} holds no model{hint}; point it at a finished P = 1 run dir or a Qwen2 checkpoint dir")


def build_optimizer(model: torch.nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on the backbone's matrices, none on norms and biases; the ParScale parameters
    (prefixes and aggregator) in groups of their own, with `optim.parscale_lr_scale` times the learning rate
    and `optim.parscale_weight_decay` (default: the backbone's) on their matrices."""
    parscale_decay = optim.weight_decay if optim.parscale_weight_decay is None else optim.parscale_weight_decay
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    groups = []
    for is_parscale, lr_scale, decay in ((False, 1.0, optim.weight_decay), (True, optim.parscale_lr_scale, parscale_decay)):
        chosen = [p for name, p in named if is_parscale_parameter(name) == is_parscale]
        for matrices, weight_decay in ((True, decay), (False, 0.0)):
            params = [p for p in chosen if (p.ndim >= 2) == matrices]
            if params:
                groups.append({"params": params, "weight_decay": weight_decay, "lr_scale": lr_scale})
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps)


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
def evaluate(trained, rows: torch.Tensor, micro_batch_size: int, autocast, env) -> float:
    """Mean held-out loss per token; each process evaluates its slice of the same rows."""
    per_process = rows.shape[0] // env.world_size
    mine = rows[env.rank * per_process:(env.rank + 1) * per_process]
    trained.eval()
    total = 0.0
    for batch in mine.split(micro_batch_size):
        with autocast:
            total += trained(input_ids=batch, labels=batch, use_cache=False).loss.item() * batch.shape[0]
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


def _save(run_dir, model, optimizer, batches, env, step, ema, elapsed_s, the_run_id) -> None:
    model_state, optimizer_state = get_state_dict(model, optimizer, options=FULL_STATE)
    data_states = distributed.gather(batches.state_dict(), env)
    if env.is_main:
        rng = {"torch": torch.get_rng_state()}
        if env.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(env.device)
        save_checkpoint(run_dir, {
            "step": step, "ema": ema, "elapsed_s": elapsed_s, "run_id": the_run_id, "world_size": env.world_size,
            "model": model_state, "optimizer": optimizer_state, "data": data_states, "rng": rng,
        })
    distributed.barrier(env)


def _finish(run_dir: Path, model, env, result: dict) -> None:
    """Writes model/ and then result.json (the mark of a finished run), then drops the checkpoint."""
    state = get_model_state_dict(model, options=FULL_STATE)
    if env.is_main:
        temporary = run_dir / ".model.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        model.save_pretrained(temporary, state_dict=state)
        replace_directory(temporary, run_dir / "model")
        atomic_write_text(run_dir / "result.json", json.dumps(result, indent=1) + "\n")
        (run_dir / CHECKPOINT).unlink(missing_ok=True)
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
