"""The typed configuration of one training run (one cell of a sweep).

conf/config.yaml composes it from the groups conf/model (the backbone, owned by `models`), conf/data and
conf/optim plus run-level keys; `load_config(["model=tiny-128", "parscale_n=2", "run_dir=..."])` does the
same composition from Python. Either way the result is merged onto the dataclasses below, so a misspelt
key or a wrong type fails at once, and each settings class's `check` refuses values that cannot train, each
with a one-line `ConfigError` saying what to change."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sweeps.data.config import DataConfig
from sweeps.errors import ConfigError, one_line
from sweeps.run import stages
from sweeps.run.stages import Stage2Config

# The `conf` package: the checkout's conf/, or its copy in an installed wheel. A Path, since Hydra reads a directory.
try:
    CONF_DIR = Path(resources.files("conf"))
except ModuleNotFoundError:  # an editable install made before conf/ became a package does not map it
    raise ImportError("no `conf` package of Hydra configs: "
                      "reinstall the toolkit (pip install -e . in the checkout)") from None
# `${stage_suffix:${stage},${stage2_fraction}}` in conf/: what a run directory's name adds for its stage.
OmegaConf.register_new_resolver("stage_suffix", stages.suffix, replace=True)

SCHEDULES = ("cosine", "wsd", "constant")
PRECISIONS = ("fp32", "bf16")
ATTENTION = ("sdpa", "flash_attention_2", "eager")
STRATEGIES = ("auto", "ddp", "fsdp")
WANDB_MODES = ("offline", "online", "disabled")

# The decoder family of a model mapping without a `backbone` key: the released Qwen2 layout (models/presets.py).
DEFAULT_BACKBONE = "qwen2"

# Keys a restarted run may change without becoming a different run: where and how often it reports, and how
# the same computation is laid out on the hardware. Everything else defines the run (see `identity`).
RESUMABLE_CHANGES = (
    "run_dir",
    "wandb",
    "log_interval",
    "eval_interval",
    "checkpoint_interval",
    "checkpoint_interval_min",
    "checkpoints_keep",
    "async_checkpoint",
    "distributed_timeout_min",
    "strategy",
    "fsdp_min_params",
    "micro_batch_size",
    "activation_checkpointing",
    "compile",
    "attn_implementation",
    "loss_chunk_tokens",
)


@dataclass
class OptimConfig:
    lr: float = 3e-3  # peak learning rate, unless lr_by_size names the model's size
    lr_by_size: dict[str, float] = field(default_factory=dict)
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    grad_clip: float = 1.0  # max global grad norm; 0 disables clipping
    schedule: str = "cosine"  # one of SCHEDULES
    warmup_fraction: float = 0.05  # of all steps, linear from 0
    decay_fraction: float = 0.2  # wsd only: the final fraction of steps decays linearly to min_lr_ratio
    min_lr_ratio: float = 0.1  # final learning rate / peak
    parscale_lr_scale: float = 1.0  # the prefixes' and aggregator's learning rate / the backbone's
    parscale_weight_decay: float | None = None  # on the prefixes and aggregator's matrices; None: weight_decay

    def check(self) -> None:
        for name, rate in [("lr", self.lr), *((f"lr_by_size.{size}", lr) for size, lr in self.lr_by_size.items())]:
            if not 0 < rate < math.inf:
                raise ConfigError(f"optim.{name}={rate} must be a learning rate > 0, e.g. 3e-3")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1 and self.eps > 0):
            raise ConfigError("optim.beta1 and optim.beta2 must lie in [0, 1) and optim.eps be > 0")
        if not (self.weight_decay >= 0 and self.grad_clip >= 0 and 0 <= self.min_lr_ratio <= 1):
            raise ConfigError("optim.weight_decay and optim.grad_clip must be >= 0 (0: off) and optim.min_lr_ratio "
                              "lie in [0, 1]")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"optim.schedule={self.schedule!r} is unknown; use one of {', '.join(SCHEDULES)}")
        if not 0 <= self.warmup_fraction < 1 or not 0 < self.decay_fraction <= 1:
            raise ConfigError("optim.warmup_fraction must lie in [0, 1) and optim.decay_fraction in (0, 1]")
        if self.parscale_lr_scale <= 0:
            raise ConfigError(f"optim.parscale_lr_scale={self.parscale_lr_scale} must be positive "
                              "(1 = the backbone's rate)")


@dataclass
class WandbConfig:
    mode: str = "offline"  # one of WANDB_MODES
    project: str = "parscale"
    group: str | None = None  # the grid
    name: str | None = None  # the cell
    init_timeout_s: float = 60.0

    def check(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"wandb.mode={self.mode!r} is unknown; use one of {', '.join(WANDB_MODES)}")


@dataclass
class TrainConfig:
    model: dict[str, Any]  # a conf/model/*.yaml mapping (see models.config_from_mapping)
    data: DataConfig
    run_dir: str  # everything is written here; a restart resumes from the checkpoint here
    optim: OptimConfig = field(default_factory=OptimConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    parscale_n: int = 1  # P, the number of parallel streams
    seed: int = 0
    tokens: int = 1_228_800  # training budget; steps = tokens // (global_batch_size * seq_len)
    seq_len: int = 128
    global_batch_size: int = 16  # sequences per optimiser step, all processes together
    micro_batch_size: int = 16  # sequences per forward pass of one process
    eval_interval: int = 100  # steps; the last step is always evaluated
    eval_sequences: int = 64
    log_interval: int = 20
    checkpoint_interval: int = 100  # steps between checkpoints
    checkpoint_interval_min: float = 0.0  # also save when this many minutes have passed since the last save; 0: off
    checkpoints_keep: int = 2  # complete checkpoints kept (the newest)
    async_checkpoint: bool = True  # with a process group: write checkpoints in the background
    distributed_timeout_min: float = 30.0  # collectives (and checkpoint writes) slower than this fail the job
    loss_smoothing: float = 0.95  # EMA factor of the smoothed training loss (the `loss` of the results table)
    precision: str = "fp32"  # one of PRECISIONS; bf16: FSDP2 mixed precision (bf16 compute, fp32 master and reduce)
    strategy: str = "auto"  # one of STRATEGIES; auto: ddp below fsdp_min_params total parameters, else fsdp
    fsdp_min_params: float = 1e9
    activation_checkpointing: bool = False  # per decoder block
    compile: bool | None = None  # torch.compile per decoder block; None: on CUDA only
    attn_implementation: str = "sdpa"  # one of ATTENTION
    loss_chunk_tokens: int = 4096  # tokens per chunk of the cross-entropy (the logits never exist whole)
    init_from: str | None = None  # stage 2: its stage-1 run dir; stage 0: a P = 1 run or model.backbone checkpoint
    freeze_backbone: bool = False  # two-stage: train only the prefixes and the aggregator
    stage: int = 0  # two-stage training (run/stages.py): 0 one stage; 1 the P = 1 backbone; 2 streams added to it
    stage2_fraction: float = 0.0  # the last fraction of `tokens` that is stage 2 (0: one stage)
    branch_fractions: list[float] = field(default_factory=list)  # stage 1: further stage2_fraction values it feeds
    stage2: Stage2Config = field(default_factory=Stage2Config)

    @property
    def size(self) -> str:
        return str(self.model["name"])

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch_size * self.seq_len

    @property
    def total_steps(self) -> int:
        return self.tokens // self.tokens_per_step

    @property
    def peak_lr(self) -> float:
        return self.optim.lr_by_size.get(self.size, self.optim.lr)

    def check(self) -> None:
        """Refuses, before anything is built, values that cannot train (the model's own fields are checked by
        `models` when the model config is built)."""
        self._check_model()
        self.data.check()
        self._check_counts()
        self._check_batches()
        self._check_choices()
        self.optim.check()
        self.wandb.check()
        self._check_run_settings()
        try:
            stages.check(self)
        except stages.StageError as error:
            raise ConfigError(str(error)) from None

    def _check_model(self) -> None:
        """The model mapping and P."""
        if "name" not in self.model:
            raise ConfigError("the model mapping has no `name`; compose it with model=<size> (conf/model/*.yaml)")
        if self.parscale_n < 1:
            raise ConfigError(f"parscale_n={self.parscale_n}: P must be at least 1 (1 = the plain backbone); "
                              "set parscale_n=1, 2, 4 or 8")
        backbone = self.model.get("backbone", DEFAULT_BACKBONE)
        if backbone != DEFAULT_BACKBONE:
            from models.presets import backbone_config_class  # transformers: only for another family

            try:
                backbone_config_class(backbone)
            except ValueError as error:
                raise ConfigError(f"model.backbone={backbone}: {error}") from None
        model_p = self.model.get("parscale_n", self.parscale_n)
        if model_p != self.parscale_n:
            raise ConfigError(
                f"model.parscale_n={model_p} but parscale_n={self.parscale_n}: set P once, with parscale_n={model_p}"
            )

    def _check_counts(self) -> None:
        """Lengths, batch sizes and intervals are at least 1; the seed is not negative."""
        for key in ("seq_len", "global_batch_size", "micro_batch_size", "eval_sequences", "eval_interval",
                    "log_interval", "checkpoint_interval", "checkpoints_keep", "loss_chunk_tokens"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}={getattr(self, key)} must be at least 1")
        if self.seed < 0:
            raise ConfigError(f"seed={self.seed} must be 0 or more (it seeds numpy's generator too)")

    def _check_batches(self) -> None:
        """Micro batches add up to the global batch, the budget holds a batch, and a row fits the model."""
        if self.global_batch_size % self.micro_batch_size:
            raise ConfigError(
                f"global_batch_size={self.global_batch_size} is not a multiple of micro_batch_size="
                f"{self.micro_batch_size}; choose a micro batch that divides it"
            )
        if self.total_steps < 1:
            raise ConfigError(
                f"tokens={self.tokens} is less than one batch (global_batch_size * seq_len = {self.tokens_per_step}); "
                f"raise tokens to at least {self.tokens_per_step}"
            )
        max_positions = self.model.get("max_position_embeddings")
        if max_positions is not None and self.seq_len > max_positions:
            raise ConfigError(
                f"seq_len={self.seq_len} exceeds the model's max_position_embeddings={max_positions}; lower seq_len"
            )

    def _check_choices(self) -> None:
        choices = {"precision": (self.precision, PRECISIONS), "strategy": (self.strategy, STRATEGIES),
                   "attn_implementation": (self.attn_implementation, ATTENTION)}
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise ConfigError(f"{key}={value!r} is unknown; use one of {', '.join(allowed)}")

    def _check_run_settings(self) -> None:
        """Checkpoint timing, the collectives' timeout and the loss smoothing."""
        if self.checkpoint_interval_min < 0 or self.distributed_timeout_min <= 0:
            raise ConfigError("checkpoint_interval_min must be >= 0 (0: off) and distributed_timeout_min > 0 (minutes)")
        if not 0 <= self.loss_smoothing < 1:
            raise ConfigError(f"loss_smoothing={self.loss_smoothing} must lie in [0, 1)")


def from_mapping(mapping) -> TrainConfig:
    """A TrainConfig from a (resolved or not) mapping such as Hydra's cfg; unknown keys and bad types fail."""
    mapping = mapping if OmegaConf.is_config(mapping) else OmegaConf.create(mapping)
    missing = sorted(OmegaConf.missing_keys(mapping))  # a merge would silently replace "???" by the default
    if missing:
        raise ConfigError(f"{missing[0]} is required (it is ??? in conf/); set it, e.g. {missing[0]}=...")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(TrainConfig), mapping)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(one_line(error)) from None
    config.check()
    return config


def load_config(overrides: list[str] = ()) -> TrainConfig:
    """The config that `python -m sweeps.train OVERRIDES` would run, for notebooks and tests. `run_dir=PATH`
    is required here (the app takes it from Hydra's run dir)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    check_group_choices(overrides)
    if not any(item.startswith("run_dir=") for item in overrides):
        raise ConfigError("load_config needs run_dir=PATH among the overrides (the app takes it from hydra.run.dir)")
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except HydraException as error:
        raise ConfigError(one_line(error)) from None
    return from_mapping(cfg)




def identity(config: TrainConfig) -> dict:
    """The settings that make a run what it is: a checkpoint only resumes a run with the same identity."""
    values = asdict(config)
    for key in RESUMABLE_CHANGES:
        values.pop(key)
    if values["model"].get("backbone") == DEFAULT_BACKBONE:  # runs from before the key existed keep their id
        values["model"] = {key: value for key, value in values["model"].items() if key != "backbone"}
    return values


def run_id(config: TrainConfig) -> str:
    """A stable id of the cell: the same config gives the same id on every requeue (also the wandb run id)."""
    text = json.dumps(identity(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def changes_from_saved(run_dir: Path, config: TrainConfig) -> list[str]:
    """What makes `config` another run than the one whose config.yaml `run_dir` holds ([] if it holds none): the
    one "same run?" check, for the run that claims its directory and for the launcher that relaunches a cell."""
    saved = Path(run_dir) / "config.yaml"
    if not saved.exists():
        return []
    return differences(identity(from_mapping(OmegaConf.load(saved))), identity(config))


def differences(saved: dict, current: dict, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested identity dicts."""
    keys = sorted(set(saved) | set(current))
    found = []
    for key in keys:
        left, right = saved.get(key), current.get(key)
        if isinstance(left, dict) and isinstance(right, dict):
            found += differences(left, right, f"{prefix}{key}.")
        elif left != right:
            found.append(f"{prefix}{key}: {left!r} -> {right!r}")
    return found


def check_group_choices(overrides) -> None:
    """One-line errors for `group=choice` overrides naming no conf/<group>/<choice>.yaml (Hydra's own message
    spans a dozen lines). Sweep syntax other than comma lists is left to Hydra."""
    for item in overrides:
        group, _, value = item.partition("=")
        if group not in ("model", "data", "optim") or any(mark in value for mark in "()[]*"):
            continue
        known = sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
        for choice in value.split(","):
            if choice not in known:
                raise ConfigError(f"unknown {group} {choice!r}: choose one of {', '.join(known)} (conf/{group}/*.yaml)")
