"""Two-stage grids: `python -m sweeps.launch +grid=pile stage2_fraction=F` (or a list, 'F1,F2,...').

Every cell of the grid (size x P x seed x F) becomes a stage-2 run, P = 1 included as the paired control,
and the cells that share everything but P, F and the stage-2-only settings share one stage-1 cell: P = 1,
trained up to the start of the longest of their stage 2s, keeping a checkpoint where each starts
(sweeps/run/stages.py). The stage-1 cell is named after its cells with `-stage1` (tiny-64-P1-s0-stage1); a
stage-2 cell ends in `-F<F>` (tiny-64-P8-s0-F0.1). Both launchers run a stage-2 cell only after its stage 1
has passed its start: on SLURM its job depends on the stage-1 job (afterok); locally the scheduler starts
it once the stage-1 checkpoint exists. A stage-1 cell that fails leaves its stage-2 cells blocked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

# Settings a stage 1 does not have: its own stage, P and the stage-2 start. A stage-1 cell is made from its
# stage-2 cells' overrides without them, so that cells differing only here share it.
STAGE_KEYS = ("parscale_n", "stage", "stage2_fraction", "branch_fractions", "init_from", "freeze_backbone")
STAGE2_ONLY = ("stage2", "model.parscale_n_tokens", "model.parscale_attn_smooth", "model.parscale_prefix_init_std",
               "optim.parscale_lr_scale", "optim.parscale_weight_decay")


@dataclass
class StagedJob:
    """One cell's Hydra overrides, its stage, and (stage 2) the name of the stage-1 cell it starts from."""

    overrides: list[str]
    stage: int = 0
    after: str | None = None


@dataclass
class _Stage1:
    base: list[str]
    fractions: set[float] = field(default_factory=set)
    name: str = ""
    run_dir: Path | None = None


def override_key(item: str) -> str:
    return item.lstrip("+~").partition("=")[0]


def _stage1_base(overrides: list[str]) -> list[str]:
    kept = [item for item in overrides
            if override_key(item) not in STAGE_KEYS and not override_key(item).startswith(STAGE2_ONLY)]
    return [*kept, "parscale_n=1", "stage=1"]


def expand(jobs: list[list[str]], compose: Callable, sweep_dir: Path) -> list[StagedJob]:
    """The cells of a grid, stage-1 cells first. `compose(overrides)` gives a job's composed config (with its
    `hydra` node); jobs with stage2_fraction > 0 and no stage of their own become stage-2 cells."""
    staged, stage1s = [], {}
    for overrides in jobs:
        cfg = compose(list(overrides))
        fraction = float(cfg.get("stage2_fraction", 0) or 0)
        if fraction <= 0 or int(cfg.get("stage", 0)) != 0:
            staged.append(StagedJob(list(overrides)))
            continue
        base = _stage1_base(list(overrides))
        group = stage1s.setdefault(tuple(base), _Stage1(base))
        group.fractions.add(fraction)
        staged.append(StagedJob(list(overrides), stage=2, after=tuple(base)))
    first = []
    for group in stage1s.values():
        group.name = str(compose(_stage1_overrides(group.base, group.fractions)).hydra.sweep.subdir)
        group.run_dir = (Path(sweep_dir) / group.name).resolve()
        fractions = _kept_fractions(group.run_dir, group.fractions)
        first.append(StagedJob(_stage1_overrides(group.base, fractions), stage=1))
    names = [group.name for group in stage1s.values()]
    if len(set(names)) < len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise ValueError(f"two different stage-1 runs would share the cell {duplicate}: a setting swept besides "
                         "size, P, seed and stage2_fraction must be part of hydra.sweep.subdir")
    for job in staged:
        if job.stage == 2:
            group = stage1s[job.after]
            job.overrides = [*job.overrides, "stage=2", f"init_from={group.run_dir}"]
            job.after = group.name
    return first + staged


def _stage1_overrides(base: list[str], fractions) -> list[str]:
    fractions = sorted(fractions)
    return [*base, f"stage2_fraction={fractions[0]}", f"branch_fractions=[{','.join(map(str, fractions[1:]))}]"]


def _kept_fractions(run_dir: Path, wanted: set[float]) -> set[float]:
    """The stage-2 fractions of the stage-1 run already in `run_dir` if it feeds every one wanted now (a
    relaunch with fewer, or with more P at the same fractions, reuses it), else the ones wanted."""
    from omegaconf import OmegaConf

    saved = run_dir / "config.yaml"
    if not saved.exists():
        return wanted
    config = OmegaConf.load(saved)
    kept = {float(config.stage2_fraction), *map(float, config.branch_fractions)}
    if not wanted <= kept:
        raise ValueError(
            f"the stage-1 cell {run_dir.name} keeps checkpoints for stage2_fraction {sorted(kept)}, not "
            f"{sorted(wanted - kept)}; launch those fractions in a new sweep directory (hydra.sweep.dir=...)"
        )
    return kept


def from_scratch(config):
    """The one-stage run a stage-2 cell stands for: the same cell trained from scratch on all its tokens."""
    return replace(config, stage=0, stage2_fraction=0.0, branch_fractions=[], init_from=None, freeze_backbone=False)


def backbone_passes(config) -> float:
    """What a cell costs in passes of its backbone over one token: P x the tokens it trains."""
    from sweeps.run import stages

    return config.parscale_n * (stages.last_step(config) - stages.first_step(config)) * config.tokens_per_step
