"""What a run trains, built from its config: the language model (on the meta device, then laid out and
materialised by sweeps/run/parallelize.py) wrapped in its loss, and the optimiser."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

from models import (
    ParScaleConfig,
    ParScaleForCausalLM,
    Qwen2ParScaleForCausalLM,
    config_from_mapping,
    is_parscale_parameter,
)
from models.presets import backbone_of, new_model, set_attention
from sweeps.errors import ConfigError
from sweeps.run import parallelize, stages
from sweeps.run.config import DEFAULT_BACKBONE, OptimConfig, TrainConfig
from sweeps.run.distributed import Environment
from sweeps.run.loss import CausalLMLoss


def model_config(config: TrainConfig, vocab_size: int):
    """The model's config (Qwen2ParScaleConfig, or ParScaleConfig for another backbone family) from conf/model and
    the run's P and attention implementation."""
    try:
        built = config_from_mapping({**config.model, "parscale_n": config.parscale_n})
    except ValueError as error:
        raise ConfigError(f"model={config.size}: {error}") from None
    model_vocab = backbone_of(built).vocab_size
    if vocab_size > model_vocab:
        raise ConfigError(
            f"data={config.data.name} tokenizes into {vocab_size} ids but model={config.size} has vocab_size "
            f"{model_vocab}; pair byte-level data (stdlib-*) with tiny sizes and hub data with paper sizes"
        )
    set_attention(built, config.attn_implementation)
    return built


def resolve_strategy(config: TrainConfig, total_params: int) -> str:
    if config.strategy != "auto":
        return config.strategy
    return "fsdp" if total_params >= config.fsdp_min_params else "ddp"


def build_trained(config: TrainConfig, built, env: Environment, strategy: str, compile_blocks: bool,
                  model_class=None) -> tuple[CausalLMLoss, Qwen2ParScaleForCausalLM | ParScaleForCausalLM]:
    """The module the loop trains (the loss over the model) and the model itself, laid out on this process's
    device: built on the meta device, checkpointed, compiled and sharded as configured, then materialised
    with fresh weights, or (two-stage) the stage-one backbone's. `model_class`: another causal LM class with
    the same layout (the GPU check's plain backbone)."""
    try:
        with torch.device("meta"):
            lm = model_class(built) if model_class else new_model(built)
    except ImportError as error:  # e.g. flash_attention_2 without the flash-attn package
        raise ConfigError(f"attn_implementation={config.attn_implementation}: {str(error).splitlines()[0]}; "
                          "choose sdpa or install that kernel") from None
    except ValueError as error:  # a backbone family the streams cannot wrap (check_wrappable)
        raise ConfigError(f"model.backbone={config.model.get('backbone', DEFAULT_BACKBONE)}: {error}") from None
    # Stage 2 of a two-stage grid loads its backbone from the stage-1 checkpoint later (sweeps/run/stages.py).
    backbone = _stage_one_backbone(config, built) if config.init_from and config.stage == 0 else None
    if config.freeze_backbone and config.parscale_n == 1:
        lm.requires_grad_(False)  # a frozen P = 1 stage 2: the paired control, which trains nothing
    elif config.freeze_backbone:
        lm.freeze_backbone()
    trained = CausalLMLoss(lm, config.loss_chunk_tokens)
    trained.train()
    if config.activation_checkpointing:
        parallelize.apply_activation_checkpointing(lm)
    if compile_blocks:
        parallelize.apply_compile(lm)
    if parallelize.uses_fsdp(env, config.precision):
        parallelize.apply_fsdp(trained, lm, env, strategy, config.precision)
    parallelize.materialize(trained, lm, env.device, config.seed)
    if config.stage == 2:
        stages.init_new_parameters(lm, config.stage2)
    if backbone is not None:
        set_model_state_dict(trained, backbone, options=StateDictOptions(full_state_dict=True, strict=False))
    return trained, lm


def _stage_one_backbone(config: TrainConfig, built) -> dict[str, torch.Tensor]:
    """Two-stage training: the backbone weights (float32, full) of a finished P = 1 run or a checkpoint of the
    run's family (a plain Qwen2ForCausalLM, Qwen3ForCausalLM, ... saved with save_pretrained); the new streams'
    prefixes and aggregator keep their fresh initialisation."""
    source = str(_stage_one_checkpoint(Path(config.init_from)))
    prefix_settings = {key: getattr(built, key) for key in
                       ("parscale_n_tokens", "parscale_attn_smooth", "parscale_prefix_init_std")}
    try:
        if isinstance(built, ParScaleConfig):
            model = ParScaleForCausalLM.from_backbone(source, parscale_n=config.parscale_n, **prefix_settings)
        else:
            model = Qwen2ParScaleForCausalLM.from_qwen2(source, parscale_n=config.parscale_n, **prefix_settings)
    except ValueError as error:  # another family's checkpoint: its weights' names do not match
        backbone = config.model.get("backbone", DEFAULT_BACKBONE)
        raise ConfigError(f"init_from={config.init_from}: {str(error).splitlines()[0]} (model.backbone={backbone}); "
                          "choose the backbone it was trained as") from None
    _check_same_shape(config, backbone_of(model.config), backbone_of(built))
    return {name: value.float() for name, value in model.state_dict().items() if not is_parscale_parameter(name)}


def _check_same_shape(config: TrainConfig, loaded, wanted) -> None:
    """The checkpoint's backbone config against the run's: the same family and the shape its weights fix."""
    for key in ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_key_value_heads"):
        if getattr(loaded, key) != getattr(wanted, key):
            raise ConfigError(
                f"init_from={config.init_from} has {key}={getattr(loaded, key)} but model={config.size} has "
                f"{getattr(wanted, key)}; choose the model=<size> and model.backbone the checkpoint was trained as"
            )


def _stage_one_checkpoint(path: Path) -> Path:
    if (path / "model" / "config.json").exists():
        return path / "model"  # a finished run dir of this toolkit
    if (path / "config.json").exists():
        return path  # a Hugging Face checkpoint dir of the backbone family (or a P = 1 ParScale one)
    hint = " (that run has not finished)" if (path / "config.yaml").exists() else ""
    raise ConfigError(f"init_from={path} holds no model{hint}; "
                      "point it at a finished P = 1 run dir or a checkpoint dir of the backbone family")


def build_optimizer(model: torch.nn.Module, optim: OptimConfig, fused: bool = False) -> torch.optim.AdamW | None:
    """AdamW with weight decay on the backbone's matrices, none on norms and biases; the ParScale parameters
    (prefixes and aggregator) in groups of their own, with `optim.parscale_lr_scale` times the learning rate
    and `optim.parscale_weight_decay` (default: the backbone's) on their matrices. `fused`: one kernel for
    all parameters (CUDA). None when nothing trains (a frozen P = 1 stage 2)."""
    parscale_decay = optim.weight_decay if optim.parscale_weight_decay is None else optim.parscale_weight_decay
    named = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    if not named:
        return None
    groups = []
    for is_parscale, lr_scale, decay in ((False, 1.0, optim.weight_decay),
                                         (True, optim.parscale_lr_scale, parscale_decay)):
        chosen = [p for name, p in named if is_parscale_parameter(name) == is_parscale]
        for matrices, weight_decay in ((True, decay), (False, 0.0)):
            params = [p for p in chosen if (p.ndim >= 2) == matrices]
            if params:
                groups.append({"params": params, "weight_decay": weight_decay, "lr_scale": lr_scale})
    return torch.optim.AdamW(groups, lr=optim.lr, betas=(optim.beta1, optim.beta2), eps=optim.eps,
                             fused=fused or None)
