"""Plans every cell of a GPU grid before submission, from the memory and time model (sweeps/grid/resources.py):

- GPUs: the fewest (1, 2, 4, 8 on one node, then whole nodes, up to `max_nodes`; a power of two, so that the
  global batch splits evenly) with which the cell fits and finishes within `target_hours`; if none finishes
  in time, the most;
- micro-batch: the largest that fits without activation checkpointing; only where none does, the largest
  that fits with it; the global batch (1024 sequences in the paper) is kept by gradient accumulation;
- strategy: the run's own (ZeRO-2 `ddp` below `fsdp_min_params`, ZeRO-3 `fsdp` above), or `fsdp` where ZeRO-2
  does not fit;
- SLURM: the warning-signal delay covers a step and a blocking checkpoint (the predicted one, or 1.5 x the
  longest the cell has measured, whichever is longer) plus the 60 s SLURM may signal early, and a margin;
  the attempts are the training time over what an attempt leaves after start-up and that delay; the requeues
  allowed are those attempts plus room for preemptions.
A cell that fits nowhere stops the grid before anything is submitted, with one line naming the cell and what
to change. The plan's choices are settings that do not change a run's math (micro-batch, checkpointing,
strategy, GPU count), so a relaunch with another plan resumes the cells."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from sweeps.grid import resources
from sweeps.run import stages
from sweeps.run.checkpoint import complete_checkpoints, read_meta
from sweeps.run.config import TrainConfig

PLAN_JSON, PLAN_MD = "plan.json", "plan.md"
SIGNAL_MARGIN_S = 90  # SLURM may send the warning signal up to 60 s early, plus slack


class ResourcePlanError(ValueError):
    """A cell the hardware cannot run; the message is one line that says what to change."""


# The planner's settings (hydra.launcher.*) and what each must be: (test, what it means).
PLANNER_RANGES = {
    "gpus_per_node": (lambda v: v >= 0 and float(v).is_integer(), "a whole number >= 0 (0: CPU-only cells)"),
    "max_nodes": (lambda v: v >= 1 and float(v).is_integer(), "a whole number of nodes >= 1"),
    "mfu": (lambda v: 0 < v <= 1, "a fraction of the GPU's peak in (0, 1], e.g. 0.4"),
    "target_hours": (lambda v: v > 0, "a number of hours > 0"),
    "startup_min": (lambda v: v >= 0, "a number of minutes >= 0"),
    "checkpoint_write_gbps": (lambda v: v > 0, "a bandwidth in GB/s > 0"),
    "filesystem_gbps": (lambda v: v > 0, "a bandwidth in GB/s > 0"),
    "gpu_mem_gb": (lambda v: v > 0, "a memory in GB > 0, or null for the GPU's own"),
}


def check_planner_settings(settings: dict) -> None:
    """One line naming the first planner setting outside its meaning, or the unknown GPU with the known ones."""
    from analysis.gpus import get_gpu, gpu_names

    try:
        get_gpu(settings["gpu"])
    except ValueError:
        raise ResourcePlanError(f"hydra.launcher.gpu={settings['gpu']}: unknown GPU; choose one of "
                                f"{', '.join(gpu_names())} (analysis/gpus.py)") from None
    for key, (holds, meaning) in PLANNER_RANGES.items():
        value = settings.get(key)
        if value is None:
            continue
        try:
            ok = math.isfinite(float(value)) and holds(float(value))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ResourcePlanError(f"hydra.launcher.{key}={value}: must be {meaning}")


@dataclass(frozen=True)
class Hardware:
    """The cluster as the launcher settings describe it."""

    gpu: str
    gpu_memory_bytes: float
    peak_flops: float
    gpus_per_node: int
    max_nodes: int
    mfu: float
    target_hours: float
    timeout_min: float
    startup_min: float
    checkpoint_write_gbps: float
    filesystem_gbps: float

    @classmethod
    def from_settings(cls, settings: dict, timeout_min: float) -> Hardware:
        from analysis.gpus import get_gpu

        check_planner_settings(settings)
        spec = get_gpu(settings["gpu"])
        memory = settings.get("gpu_mem_gb")
        return cls(
            gpu=settings["gpu"], gpu_memory_bytes=float(memory) * 1e9 if memory else spec.memory_bytes,
            peak_flops=spec.peak_bf16_flops, gpus_per_node=int(settings["gpus_per_node"]),
            max_nodes=int(settings["max_nodes"]), mfu=float(settings["mfu"]),
            target_hours=float(settings["target_hours"]), timeout_min=float(timeout_min),
            startup_min=float(settings["startup_min"]), checkpoint_write_gbps=float(settings["checkpoint_write_gbps"]),
            filesystem_gbps=float(settings["filesystem_gbps"]),
        )

    def gpu_counts(self) -> list[int]:
        counts = [count for count in (1, 2, 4, 8) if count <= self.gpus_per_node]
        nodes = 2
        while nodes <= self.max_nodes:
            if nodes & (nodes - 1) == 0:
                counts.append(nodes * self.gpus_per_node)
            nodes += 1
        return counts


@dataclass(frozen=True)
class ResourcePlan:
    cell: str
    size: str
    P: int
    micro_batch_size: int
    accumulation: int
    activation_checkpointing: bool
    strategy: str
    gpus: int
    nodes: int
    gpus_per_node: int
    gpu: str
    predicted_peak_gb: float
    gpu_mem_gb: float
    memory_gb: dict
    assumed_mfu: float
    tokens_per_s: float
    step_s: float
    checkpoint_s: float
    total_steps: int  # the steps this cell trains (a stage-2 cell: its stage 2)
    wall_hours: float
    gpu_hours: float
    attempts: int
    timeout_min: float
    signal_delay_s: int
    max_num_timeout: int

    def overrides(self) -> list[str]:
        """The cell's settings from the plan, as overrides of its training config."""
        return [f"micro_batch_size={self.micro_batch_size}",
                f"activation_checkpointing={str(self.activation_checkpointing).lower()}", f"strategy={self.strategy}"]

    @property
    def resources(self) -> tuple:
        """What one SLURM job array shares: the cells with the same key go out together."""
        return self.nodes, self.gpus_per_node, self.timeout_min, self.signal_delay_s, self.max_num_timeout


def _layouts(config: TrainConfig, gpus: int, strategies: list[str]):
    """Candidate layouts at `gpus` processes, in order of preference."""
    per_process = config.global_batch_size // gpus
    micro_batches = [m for m in range(per_process, 0, -1) if per_process % m == 0]
    for checkpointing in (False, True):
        for strategy in strategies:
            for micro in micro_batches:
                yield resources.Layout(
                    seq_len=config.seq_len, micro_batch_size=micro, global_batch_size=config.global_batch_size,
                    processes=gpus, activation_checkpointing=checkpointing, strategy=strategy,
                    precision=config.precision, loss_chunk_tokens=config.loss_chunk_tokens,
                )


def _measured_save_s(run_dir: Path) -> float:
    """The longest save the cell's checkpoints recorded so far (0 if none)."""
    return max((read_meta(path).get("save_s", 0.0) for path in complete_checkpoints(run_dir)), default=0.0)


def plan_resources(name: str, config: TrainConfig, hardware: Hardware) -> ResourcePlan:
    shape = resources.shape_of_model(config.model, config.parscale_n)
    preferred = ("fsdp" if config.strategy == "fsdp"
                 or (config.strategy == "auto" and shape.total_params >= config.fsdp_min_params) else "ddp")
    strategies = [preferred] if preferred == "fsdp" else ["ddp", "fsdp"]
    best = None
    for gpus in hardware.gpu_counts():
        if config.global_batch_size % gpus:
            continue
        layout = next((lay for lay in _layouts(config, gpus, strategies)
                       if resources.memory(config.size, shape, lay).peak <= hardware.gpu_memory_bytes), None)
        if layout is None:
            continue
        candidate = _timed(name, config, shape, layout, hardware)
        best = candidate
        if candidate.wall_hours <= hardware.target_hours:
            break
    if best is None:
        most = hardware.gpu_counts()[-1]
        smallest = resources.Layout(config.seq_len, 1, config.global_batch_size, most, True, "fsdp", config.precision,
                                    config.loss_chunk_tokens)
        need = resources.memory(config.size, shape, smallest).peak / 1e9
        raise ResourcePlanError(
            f"cell {name} does not fit a {hardware.gpu} ({hardware.gpu_memory_bytes / 1e9:.0f} GB) "
            f"even at micro-batch 1 with activation checkpointing on {most} GPUs (needs {need:.0f} GB): "
            "raise hydra.launcher.max_nodes, choose a larger GPU with hydra.launcher.gpu=NAME, or lower seq_len"
        )
    return best


def _timed(name: str, config: TrainConfig, shape, layout, hardware: Hardware) -> ResourcePlan:
    step = resources.step_time(shape, layout, hardware.peak_flops, hardware.mfu)
    save_s = resources.checkpoint_seconds(shape, layout.processes, hardware.checkpoint_write_gbps,
                                          hardware.filesystem_gbps)
    save_s = max(save_s, 1.5 * _measured_save_s(Path(config.run_dir)))
    signal_delay = int(math.ceil(step.seconds + save_s + SIGNAL_MARGIN_S))
    attempt_s = 60 * (hardware.timeout_min - hardware.startup_min) - signal_delay
    if attempt_s < max(3 * step.seconds, 600):
        raise ResourcePlanError(
            f"cell {name}: a step ({step.seconds:.0f} s) and a checkpoint ({save_s:.0f} s) "
            f"leave no time to train within timeout_min={hardware.timeout_min:g}; "
            "raise hydra.launcher.timeout_min or hydra.launcher.max_nodes"
        )
    steps = stages.last_step(config) - stages.first_step(config)  # a two-stage cell trains its stage only
    checkpoints = steps / config.checkpoint_interval
    train_s = steps * step.seconds + checkpoints * save_s * 0.05  # async: ~5% of a save blocks
    attempts = max(1, math.ceil(train_s / attempt_s))
    wall_s = train_s + attempts * 60 * hardware.startup_min
    gpus_per_node = min(layout.processes, hardware.gpus_per_node)
    peak = resources.memory(config.size, shape, layout)
    return ResourcePlan(
        cell=name, size=config.size, P=config.parscale_n, micro_batch_size=layout.micro_batch_size,
        accumulation=layout.accumulation, activation_checkpointing=layout.activation_checkpointing,
        strategy=layout.strategy, gpus=layout.processes, nodes=layout.processes // gpus_per_node,
        gpus_per_node=gpus_per_node, gpu=hardware.gpu, predicted_peak_gb=round(peak.peak / 1e9, 2),
        gpu_mem_gb=round(hardware.gpu_memory_bytes / 1e9, 1),
        memory_gb={k: round(v * resources.GIB / 1e9, 3) for k, v in peak.gib().items()}, assumed_mfu=round(step.mfu, 3),
        tokens_per_s=round(step.tokens_per_s), step_s=round(step.seconds, 2), checkpoint_s=round(save_s, 1),
        total_steps=steps, wall_hours=round(wall_s / 3600, 1), gpu_hours=round(wall_s / 3600 * layout.processes),
        attempts=attempts, timeout_min=hardware.timeout_min, signal_delay_s=signal_delay,
        max_num_timeout=attempts - 1 + max(3, attempts // 2),
    )


COLUMNS = ("cell", "micro_batch_size", "accumulation", "activation_checkpointing", "strategy", "gpus",
           "predicted_peak_gb", "gpu_mem_gb", "assumed_mfu", "tokens_per_s", "gpu_hours", "wall_hours", "attempts")
HEADERS = ("cell", "micro-batch", "accum.", "act. ckpt", "strategy", "GPUs", "peak GB", "GPU GB", "MFU",
           "tokens/s", "GPU-hours", "wall h", "attempts")


def format_table(plans: list[ResourcePlan], markdown: bool = False) -> str:
    rows = [[_cell_text(plan, key) for key in COLUMNS] for plan in plans]
    total = sum(plan.gpu_hours for plan in plans)
    if markdown:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines) + f"\n\nTotal: {total:,.0f} GPU-hours on {plans[0].gpu} at the assumed MFU.\n"
    widths = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(HEADERS)]
    lines = ["  ".join(header.ljust(width) for header, width in zip(HEADERS, widths, strict=True))]
    lines += ["  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines) + f"\ntotal: {total:,.0f} GPU-hours on {plans[0].gpu}"


def _cell_text(plan: ResourcePlan, key: str) -> str:
    value = getattr(plan, key)
    if key == "activation_checkpointing":
        return "yes" if value else "no"
    if key == "gpus":
        return f"{value} ({plan.nodes}x{plan.gpus_per_node})"
    if key in ("tokens_per_s", "gpu_hours"):
        return f"{value:,.0f}"
    return str(value)


def write_resource_plans(plans: list[ResourcePlan], sweep_dir: Path, note: str = "") -> None:
    """plan.json (one object per cell) and plan.md (the table, then `note`: a two-stage grid's comparison)."""
    from sweeps.files import atomic_write_text

    sweep_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(sweep_dir / PLAN_JSON, json.dumps([asdict(plan) for plan in plans], indent=1) + "\n")
    text = (f"# Plan of {sweep_dir.name}\n\n" + format_table(plans, markdown=True)
            + (f"\n{note.strip()}\n" if note else ""))
    atomic_write_text(sweep_dir / PLAN_MD, text)
