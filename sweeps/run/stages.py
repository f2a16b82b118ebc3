"""Two-stage training (Chen et al. 2025, Sec. 5): stage 1 trains a P = 1 backbone on the first 1 - F of a
run's tokens; stage 2 adds P streams (their prefixes and the aggregator) and trains on the last F.

One learning-rate schedule spans both stages: it warms up, holds its peak through stage 1 (the paper's stage
1: constant after warm-up) and decays over stage 2 in the shape `optim.schedule` names (cosine, or linear for
wsd). Stage 2 starts at the rate stage 1 ended with, with stage 1's AdamW moments for the backbone, at stage
1's data position: a P = 1 stage 2 is exactly the continuation of its stage 1, the paired control of the
stage-2 runs, and every stage 2 of one stage 1 reads the same rows at every step.

A run's part in this is its config (S = the steps of `tokens`, s(F) = max(1, int(F * S))):
    stage=0                       one stage from scratch; stage2_fraction is 0
    stage=1 stage2_fraction=F     P = 1; trains steps [0, S - s(F)) and keeps a checkpoint (weights, AdamW
            [branch_fractions=..] moments, data position) in branches/step-N at S - s(f) for f = F and every
                                  branch fraction (each > F): one stage 1 feeds stage 2s of several lengths
    stage=2 stage2_fraction=F     any P; init_from=<the stage-1 run dir>; trains steps [S - s(F), S) from
                                  that run's branch, the new parameters initialised as `stage2` says
The grid launcher makes the stage-1 cells and the dependencies from `stage2_fraction=F` alone
(sweeps/grid/two_stage.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

BRANCHES = "branches"
STAGES = (0, 1, 2)
PREFIX_INITS = ("normal", "zero-values", "activations")
AGGREGATOR_INITS = ("uniform", "normal")
OPTIMIZER_STATES = ("carry", "reset")


class StageError(ValueError):
    """A two-stage setting that cannot train; one line saying what to change (a ConfigError to callers)."""


@dataclass
class Stage2Config:
    """How a stage-2 run starts (the defaults and why: docs/two-stage.md); other runs ignore it."""

    # normal: keys and values drawn from N(0, model.parscale_prefix_init_std^2), independently per stream;
    # zero-values: keys drawn so, values 0, so the prefix adds nothing to a layer's output at step 0;
    # activations: the backbone's own keys and values (before the rotary embedding) of the last tokens of a
    # training row, another row per stream: each stream starts as if it had read a different context.
    prefix_init: str = "normal"
    # uniform: the aggregator's output layer starts at 0, every stream weighing exactly 1 / P at step 0;
    # normal: like every Linear of the backbone, N(0, initializer_range^2).
    aggregator_init: str = "uniform"
    warmup_fraction: float = 0.0  # of stage 2's steps: the learning rate rises linearly from 0 to the schedule's
    optimizer_state: str = "carry"  # carry: the backbone's AdamW moments from stage 1; reset: fresh moments

    def check(self) -> None:
        choices = {"stage2.prefix_init": (self.prefix_init, PREFIX_INITS),
                   "stage2.aggregator_init": (self.aggregator_init, AGGREGATOR_INITS),
                   "stage2.optimizer_state": (self.optimizer_state, OPTIMIZER_STATES)}
        for key, (value, allowed) in choices.items():
            if value not in allowed:
                raise StageError(f"{key}={value!r} is unknown; use one of {', '.join(allowed)}")
        if not 0 <= self.warmup_fraction < 1:
            raise StageError(f"stage2.warmup_fraction={self.warmup_fraction} must lie in [0, 1) (of stage 2's steps)")


def stage2_steps(total_steps: int, fraction: float) -> int:
    """The steps of a stage 2 that is `fraction` of a run of `total_steps` (0 for one stage)."""
    return max(1, int(fraction * total_steps)) if fraction > 0 else 0


def first_step(config) -> int:
    """The step a fresh run starts at: stage 2 starts where its stage 1 branched off."""
    if config.stage == 2:
        return config.total_steps - stage2_steps(config.total_steps, config.stage2_fraction)
    return 0


def last_step(config) -> int:
    """The step a run ends at: stage 1 stops where its longest stage 2 starts."""
    if config.stage == 1:
        return config.total_steps - stage2_steps(config.total_steps, config.stage2_fraction)
    return config.total_steps


def branch_steps(config) -> list[int]:
    """Stage 1: the steps at which it keeps a checkpoint for a stage 2, one per stage-2 fraction it feeds."""
    if config.stage != 1:
        return []
    fractions = {config.stage2_fraction, *config.branch_fractions}
    return sorted({config.total_steps - stage2_steps(config.total_steps, f) for f in fractions})


def decay_steps(config) -> int:
    """Steps of the learning rate's decay when it is stage 2 (0: the schedule's own decay, one stage)."""
    return stage2_steps(config.total_steps, config.stage2_fraction) if config.stage else 0


def branch_dir(stage1_run_dir: str | Path, step: int) -> Path:
    return Path(stage1_run_dir) / BRANCHES / f"step-{step:08d}"


def stage2_branch(config) -> Path:
    """The stage-1 checkpoint a stage-2 run starts from."""
    return branch_dir(config.init_from, first_step(config))


def branch_ready(config) -> bool:
    """Whether a stage-2 run's stage-1 checkpoint is complete (its meta.json is written last)."""
    return (stage2_branch(config) / "meta.json").exists()


def check(config) -> None:
    """Refuses stage settings that cannot train, each with one line saying what to change."""
    fraction, stage = config.stage2_fraction, config.stage
    if stage not in STAGES:
        raise StageError(f"stage={stage} is unknown: 0 trains in one stage, 1 is the P = 1 backbone, 2 adds streams")
    if not 0 <= fraction < 1:
        raise StageError(f"stage2_fraction={fraction} must lie in [0, 1): "
                         "the last fraction of `tokens` that is stage 2")
    config.stage2.check()
    if stage == 0:
        _check_one_stage(config)
        return
    _check_stage_split(config)
    if stage == 1:
        _check_stage1(config)
    else:
        _check_stage2(config)


def _check_one_stage(config) -> None:
    fraction = config.stage2_fraction
    if fraction or config.branch_fractions:
        raise StageError(
            f"stage2_fraction={fraction:g} trains in two stages: a grid (python -m sweeps.launch) makes them itself; "
            "for one run set stage=1 (the P = 1 backbone), then stage=2 init_from=<its run dir>"
        )
    if config.freeze_backbone and not config.init_from:
        raise StageError("freeze_backbone=true needs init_from=<a P = 1 run or backbone checkpoint dir> (stage 2 only)")
    if config.init_from and config.parscale_n == 1:
        raise StageError("init_from is two-stage training, which adds streams: set parscale_n > 1")


def _check_stage_split(config) -> None:
    """Stage 1 or 2: the fraction must leave both stages at least one step."""
    fraction = config.stage2_fraction
    if not fraction:
        raise StageError(f"stage={config.stage} needs stage2_fraction in (0, 1), "
                         "the last fraction of `tokens` that is stage 2")
    if stage2_steps(config.total_steps, max([fraction, *config.branch_fractions])) >= config.total_steps:
        raise StageError(f"stage2_fraction={fraction:g} of {config.total_steps} steps leaves stage 1 no step; "
                         "lower it or raise tokens")


def _check_stage1(config) -> None:
    if config.parscale_n != 1 or config.init_from or config.freeze_backbone:
        raise StageError("stage=1 trains the P = 1 backbone: set parscale_n=1, no init_from and no freeze_backbone")
    fraction = config.stage2_fraction
    if any(not fraction < f < 1 for f in config.branch_fractions):
        raise StageError(f"branch_fractions={list(config.branch_fractions)} must each lie in "
                         f"(stage2_fraction={fraction:g}, 1)")


def _check_stage2(config) -> None:
    if not config.init_from:
        raise StageError("stage=2 starts from a stage-1 run: set init_from=<its run dir> (trained with stage=1)")
    if config.branch_fractions:
        raise StageError("branch_fractions is a stage-1 setting; a stage-2 run has only its stage2_fraction")




def check_stage1_run(config) -> None:
    """A stage-2 run's init_from must be a stage-1 run of the same schedule with a checkpoint where it starts."""
    from omegaconf import OmegaConf

    saved = Path(config.init_from) / "config.yaml"
    if not saved.exists():
        raise StageError(f"init_from={config.init_from} holds no run (no config.yaml); point it at the stage-1 run dir")
    stage1 = OmegaConf.load(saved)
    if stage1.get("stage") != 1 or stage1.get("tokens") != config.tokens:
        raise StageError(
            f"init_from={config.init_from} is not a stage-1 run of tokens={config.tokens} "
            f"(stage={stage1.get('stage')}, tokens={stage1.get('tokens')}); train it with stage=1 and the same tokens"
        )
    if not branch_ready(config):
        raise StageError(
            f"{config.init_from} has no checkpoint at step {first_step(config)} "
            f"(stage2_fraction={config.stage2_fraction:g}): wait for it to get there, "
            "or train it with this fraction in branch_fractions"
        )


def suffix(stage: int, fraction: float) -> str:
    """What a cell's directory name adds for its stage (Hydra resolver `stage_suffix`, conf/config.yaml)."""
    if int(stage) == 1:
        return "-stage1"
    return f"-F{float(fraction):g}" if float(fraction) > 0 else ""


def init_new_parameters(lm, stage2: Stage2Config) -> None:
    """After the model's own initialisation: the stage-2 starts of the prefixes' values and the aggregator
    (the `activations` start needs the trained backbone and data: `init_prefixes_from_activations`)."""
    import torch

    if lm.config.parscale_n == 1:
        return
    with torch.no_grad():
        if stage2.prefix_init == "zero-values":
            for layer in lm.model.layers:
                layer.self_attn.prefix_v.zero_()
        if stage2.aggregator_init == "uniform":
            for param in lm.model.aggregate_layer[-1].parameters():
                param.zero_()


def init_prefixes_from_activations(trained, lm, rows) -> None:
    """Stage 2's `activations` start: stream i's prefix in every layer becomes the keys and values the loaded
    backbone computes for the last n tokens of row i of `rows` (P rows, the same on every process), as stream 0
    sees them; keys after the family's key norm where it has one (Qwen3's k_norm), as the prefix joins them."""
    import torch

    from models import ParScaleForCausalLM
    from sweeps.run.parallelize import copy_full

    n_streams, n_tokens = lm.config.parscale_n, lm.config.parscale_n_tokens
    # Stream 0's rows: the released layout repeats the batch stream-major, a wrapped family batch-major.
    stream_zero = slice(None, None, n_streams) if isinstance(lm, ParScaleForCausalLM) else slice(None, n_streams)
    captured = {}

    def keep(name):
        def hook(module, inputs, output):
            captured[name] = output
        return hook

    attentions = [layer.self_attn for layer in lm.model.layers]
    handles = [projection.register_forward_hook(keep((index, kind))) for index, attention in enumerate(attentions)
               for kind, projection in (("k", getattr(attention, "k_norm", None) or attention.k_proj),
                                        ("v", attention.v_proj))]
    try:
        with torch.no_grad():
            was_training = trained.training
            trained.eval()
            trained(rows[:n_streams])
            trained.train(was_training)
    finally:
        for handle in handles:
            handle.remove()
    for index, attention in enumerate(attentions):
        for kind, param in (("k", attention.prefix_k), ("v", attention.prefix_v)):
            # (rows, T, kv_heads * d) or, after a key norm, (rows, T, kv_heads, d): row i of stream 0 for stream i.
            states = captured[(index, kind)][stream_zero, -n_tokens:]
            states = states.reshape(n_streams, n_tokens, param.shape[1], param.shape[3])
            copy_full(param, states.permute(0, 2, 1, 3).to(param.dtype).contiguous())


def load_branch(trained, optimizer, checkpointer, branch: Path, optimizer_state: str) -> dict:
    """Stage 2's start: the backbone's weights (and, with optimizer_state=carry, its AdamW moments) from the
    stage-1 checkpoint `branch`, into a model whose prefixes and aggregator keep their initialisation, with
    fresh moments. Returns the checkpoint's rank state (data position, RNG)."""
    import torch
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_state_dict,
        set_model_state_dict,
        set_state_dict,
    )

    from models import is_parscale_parameter

    if optimizer is None:  # nothing to train (a frozen P = 1 control): the weights only
        model_state = get_model_state_dict(trained)
        rank_state = checkpointer.load(branch, {"model": _backbone(model_state, is_parscale_parameter)})
        set_model_state_dict(trained, model_state)
        return rank_state
    model_state, optimizer_state_dict = get_state_dict(trained, optimizer)
    wanted = {"model": _backbone(model_state, is_parscale_parameter)}
    moments = optimizer_state_dict["state"]
    if optimizer_state == "carry":
        wanted["optimizer"] = {"state": _backbone(moments, is_parscale_parameter)}
    rank_state = checkpointer.load(branch, wanted)
    for name, entry in moments.items():
        if optimizer_state == "reset" or is_parscale_parameter(name):
            # get_state_dict made every entry with one zero-gradient step; a new parameter starts at step 0.
            entry["step"] = torch.zeros_like(entry["step"])
    set_state_dict(trained, optimizer, model_state_dict=model_state, optim_state_dict=optimizer_state_dict)
    return rank_state


def _backbone(state: dict, is_parscale_parameter) -> dict:
    return {name: value for name, value in state.items() if not is_parscale_parameter(name)}
