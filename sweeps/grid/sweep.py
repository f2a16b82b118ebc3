"""A sweep composed before anything runs, by either launcher (sweeps/grid/slurm_launcher.py, local_launcher.py):
  - every cell's config is composed and checked (an unknown size, P < 1, a bad budget fail here, with one
    line, instead of in a job hours later);
  - `sweep.json` (the manifest) is written, or compared with the one already there: a sweep directory made
    by another grid or scale is refused, and so is a cell started with other settings;
  - finished cells (result.json) are skipped, so launching the same grid again runs only what is missing;
    unfinished ones resume from their checkpoints (the training job does that by itself).
A two-stage grid's stage-1 cells come first (sweeps/grid/two_stage.py)."""

from __future__ import annotations

import fcntl
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.types import HydraContext
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from parscale_law.errors import report_error
from sweeps.errors import ConfigError, first_line
from sweeps.files import atomic_write_text
from sweeps.grid import two_stage
from sweeps.grid.cells import MANIFEST, Cell, Manifest, cell_config, read_cell
from sweeps.run import stages
from sweeps.run.config import TrainConfig, changes_from_saved

CELL_CONFIGS = ".cells"  # each cell's resolved config, the file a worker or job starts from
LAUNCH_LOCK = ".launch.lock"  # held by the launcher running the sweep (hold_launch_lock)
_held_locks: dict[Path, object] = {}  # this process's open lock files: each lock lasts as long as the process


class LaunchError(ValueError):
    """A sweep that must not start; the message is one line saying what to change."""


@dataclass
class SweepCell:
    cell: Cell
    config: TrainConfig
    job_index: int


def compose_sweep(config: DictConfig, hydra_context: HydraContext, job_overrides: Sequence[Sequence[str]],
                  write_manifest: bool = True) -> tuple[list[SweepCell], list[SweepCell]]:
    """Composes and checks every cell (a two-stage grid's stage-1 cells first, sweeps/grid/two_stage.py), writes
    (or, for a dry run, only checks) the manifest, and returns all cells and the unfinished ones."""
    sweep_dir = Path(str(config.hydra.sweep.dir))

    def compose(overrides: list[str]) -> DictConfig:
        try:
            return hydra_context.config_loader.load_sweep_config(config, list(overrides))
        except (HydraException, OmegaConfBaseException) as error:
            raise LaunchError(f"cell [{' '.join(overrides)}]: {first_line(error)}") from None

    try:
        jobs = two_stage.expand([list(overrides) for overrides in job_overrides], compose, sweep_dir)
    except ValueError as error:
        raise LaunchError(str(error)) from None
    planned = []
    for index, job in enumerate(jobs):
        cell_cfg = compose(job.overrides)
        name = str(cell_cfg.hydra.sweep.subdir)
        try:
            run_config = cell_config(cell_cfg, run_dir=sweep_dir / name)
        except ConfigError as error:
            raise LaunchError(f"cell [{' '.join(job.overrides)}]: {error}") from None
        planned.append(SweepCell(Cell(name, job.overrides, job.stage, job.after), run_config, index))

    manifest = Manifest(
        grid=str(config.grid.name),
        scale=str(config.scale.name),
        dataset=planned[0].config.data.name,
        cells=[p.cell for p in planned],
        launcher=str(config.hydra.launcher._target_),
    )
    _check_against_existing(sweep_dir, manifest, planned)
    if write_manifest:
        sweep_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(sweep_dir / MANIFEST, manifest.to_json())
    todo = [p for p in planned if read_cell(Path(p.config.run_dir)).state != "done"]
    _check_branches(planned, todo)
    return planned, todo


def _check_branches(planned: list[SweepCell], todo: list[SweepCell]) -> None:
    """A stage-2 cell to run whose stage 1 is done needs that run's checkpoint where it starts."""
    waiting = {p.cell.name for p in todo}
    for p in todo:
        if p.cell.stage == 2 and p.cell.after not in waiting and not stages.branch_ready(p.config):
            raise LaunchError(
                f"cell {p.cell.name} starts from {p.cell.after}, which finished without a checkpoint at step "
                f"{stages.first_step(p.config)}: it was trained for other stage2_fraction values; set hydra.sweep.dir "
                "to a new directory"
            )


def _check_against_existing(sweep_dir: Path, manifest: Manifest, planned: list[SweepCell]) -> None:
    existing = Manifest.read(sweep_dir)
    if existing is not None and ((existing.grid, existing.scale, existing.dataset)
                                 != (manifest.grid, manifest.scale, manifest.dataset)):
        raise LaunchError(
            f"{sweep_dir} holds the sweep of grid={existing.grid} scale={existing.scale} ({existing.dataset}), not "
            f"grid={manifest.grid} scale={manifest.scale} ({manifest.dataset}); "
            "set hydra.sweep.dir to another directory"
        )
    for p in planned:
        changed = changes_from_saved(Path(p.config.run_dir), p.config)
        if changed:
            raise LaunchError(
                f"cell {p.cell.name} in {sweep_dir} was started with another config ({'; '.join(changed[:3])}); "
                "relaunch with the same settings, or set hydra.sweep.dir to a new directory"
            )


def hold_launch_lock(sweep_dir: Path) -> None:
    """One launcher per sweep directory: two would start every cell twice, and the copies would write the same
    run directories. The lock is an flock on <sweep_dir>/.launch.lock, which the kernel releases when this
    process ends, however it ends; the file names its holder for the one-line refusal."""
    path = (sweep_dir / LAUNCH_LOCK).resolve()
    if path in _held_locks:  # a second batch of the same sweep in this process
        return
    sweep_dir.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115  (kept open for the life of this process)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise LaunchError(
            f"{sweep_dir} is being launched by {holder}; wait for that launch to end (or stop it), "
            "then launch again, or set hydra.sweep.dir to another directory"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"process {os.getpid()} on {socket.gethostname()}\n")
    handle.flush()
    _held_locks[path] = handle


def fail(error: Exception) -> None:
    """Hydra prints a launcher's exceptions with a traceback; a planning error is one line and exit 2."""
    raise SystemExit(report_error(error))


def job_return(code: int) -> JobReturn:
    # Reported as completed either way: Hydra's sweeper raises on the first failed job, which would skip
    # collecting and fitting the cells that did finish. sweeps.report names the failures and sets the exit status.
    outcome = JobReturn()
    outcome.status = JobStatus.COMPLETED
    outcome.return_value = code
    return outcome


