"""Hydra launchers for grids of training runs: SLURM through submitit, and local worker processes.

Both first *plan* the sweep in the submitting process, before anything runs:
  - every cell's config is composed and checked (an unknown size, P < 1, a bad budget fail here, with one
    line, instead of in a job hours later);
  - `sweep.json` (the manifest) is written, or compared with the one already there: a sweep directory made
    by another grid or scale is refused;
  - finished cells (result.json) are skipped, so launching the same grid again runs only what is missing;
    unfinished ones resume from their checkpoints (the training job does that by itself).

`SlurmGridLauncher` extends hydra-submitit-launcher's SLURM launcher: the grid goes out as one job array
and, unlike the plugin, the launcher returns right after submission (set `sweep.wait=true` to wait and
collect). A job that SLURM preempts or times out is requeued by submitit (`max_num_timeout` > 0: the
plugin's default 0 refuses every requeue of a job shorter than ~50 minutes) and, re-run from the top, the
cell resumes from the checkpoint its training loop saved on the warning signal.

`LocalGridLauncher` runs the cells as worker processes (`python -m sweeps.run_cell`), as many at once as
there are cores, largest first, and prints progress.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.utils import JobReturn, JobStatus
from hydra.errors import HydraException
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .cells import ERROR_FILE, MANIFEST, Attempts, Cell, Manifest, cell_config, read_cell
from .checkpoint import atomic_write_text
from .config import ConfigError, TrainConfig, differences, from_mapping, identity


JOBS_FILE = "jobs.json"
CELL_CONFIGS = ".cells"


class LaunchError(ValueError):
    """A sweep that must not start; the message is one line saying what to change."""


@dataclass
class PlannedCell:
    cell: Cell
    config: TrainConfig
    job_index: int


def plan(config: DictConfig, hydra_context: HydraContext, job_overrides: Sequence[Sequence[str]],
         write_manifest: bool = True) -> tuple[list[PlannedCell], list[PlannedCell]]:
    """Composes and checks every cell, writes (or, for a dry run, only checks) the manifest, and returns all
    cells and the unfinished ones."""
    sweep_dir = Path(str(config.hydra.sweep.dir))
    planned = []
    for index, overrides in enumerate(job_overrides):
        label = " ".join(overrides)
        try:
            cell_cfg = hydra_context.config_loader.load_sweep_config(config, list(overrides))
            name = str(cell_cfg.hydra.sweep.subdir)
            run_config = cell_config(cell_cfg, run_dir=sweep_dir / name)
        except ConfigError as error:
            raise LaunchError(f"cell [{label}]: {error}") from None
        except (HydraException, OmegaConfBaseException) as error:
            raise LaunchError(f"cell [{label}]: {_first_line(error)}") from None
        planned.append(PlannedCell(Cell(name, list(overrides)), run_config, index))

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
    return planned, [p for p in planned if read_cell(Path(p.config.run_dir)).state != "done"]


def _check_against_existing(sweep_dir: Path, manifest: Manifest, planned: list[PlannedCell]) -> None:
    existing = Manifest.read(sweep_dir)
    if existing is not None and (existing.grid, existing.scale, existing.dataset) != (manifest.grid, manifest.scale, manifest.dataset):
        raise LaunchError(
            f"{sweep_dir} holds the sweep of grid={existing.grid} scale={existing.scale} ({existing.dataset}), not "
            f"grid={manifest.grid} scale={manifest.scale} ({manifest.dataset}); set hydra.sweep.dir to another directory"
        )
    for p in planned:
        saved = Path(p.config.run_dir) / "config.yaml"
        if saved.exists():
            changed = differences(identity_of_saved(saved), identity(p.config))
            if changed:
                raise LaunchError(
                    f"cell {p.cell.name} in {sweep_dir} was started with another config ({'; '.join(changed[:3])}); "
                    "relaunch with the same settings, or set hydra.sweep.dir to a new directory"
                )


def identity_of_saved(path: Path) -> dict:
    return identity(from_mapping(OmegaConf.load(path)))


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


def fail(error: Exception) -> None:
    """Hydra prints a launcher's exceptions with a traceback; a planning error is one line and exit 2."""
    print(f"error: {error}", file=sys.stderr)
    raise SystemExit(2)


# --- SLURM -----------------------------------------------------------------------------------------


@dataclass
class PlannedSlurmConf(SlurmQueueConf):
    """The SLURM launcher's settings (conf/hydra/launcher/parscale_slurm.yaml): submitit's, plus the hardware
    each cell is planned for (sweeps/planner.py). Left null, nodes, tasks_per_node, signal_delay_s and
    max_num_timeout are planned per cell, and timeout_min is the partition's time limit."""

    _target_: str = "hydra_plugins.parscale_sweeps.SlurmGridLauncher"
    gpu: str = "H100-80GB"  # A100-40GB, A100-80GB, H100-80GB, H200-141GB, or any name analysis.gpus knows
    gpu_mem_gb: Optional[float] = None  # overrides the GPU's memory (decimal GB)
    gpus_per_node: Optional[int] = 8  # GPUs in one node of the partition; 0: CPU-only cells, nothing planned
    max_nodes: int = 8  # most nodes one cell may use
    mfu: float = 0.4  # assumed fraction of peak bf16 FLOP/s the training reaches
    target_hours: float = 72.0  # wall time a cell should finish in; cells get GPUs until they do
    startup_min: float = 10.0  # per attempt: queue start, model build, compile, checkpoint load
    checkpoint_write_gbps: float = 1.0  # per GPU, to the shared file system
    filesystem_gbps: float = 20.0  # all writers together
    timeout_min: Optional[int] = None  # per attempt; null: the partition's limit (2880 if sinfo gives none)
    nodes: Optional[int] = None
    tasks_per_node: Optional[int] = None
    signal_delay_s: Optional[int] = None
    max_num_timeout: Optional[int] = None


PLANNER_KEYS = ("gpu", "gpu_mem_gb", "max_nodes", "mfu", "target_hours", "startup_min", "checkpoint_write_gbps",
                "filesystem_gbps")
DEFAULT_TIMEOUT_MIN = 2880


@dataclass
class SubmissionGroup:
    """Cells submitted as one job array: the same nodes, GPUs, time limit, signal delay and requeues."""

    settings: dict
    cells: list  # (PlannedCell, overrides)


class SlurmGridLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit

        from .planner import PlanError, format_table, write_plan

        dry_run = bool(self.config.sweep.get("dry_run", False))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            if not dry_run and shutil.which("sbatch") is None:
                raise LaunchError(
                    "SLURM is not available here (no sbatch): run the grid at tiny scale on this machine with "
                    "scale=tiny, print the plan with sweep.dry_run=true, or launch from a cluster's login node"
                )
            timeout_min = self._timeout_min(dry_run)
            if not dry_run:
                self._check_settings(timeout_min)
            everything, todo = plan(self.config, self.hydra_context, job_overrides, write_manifest=not dry_run)
            if not dry_run:
                for p in todo:
                    _check_data(p)
            cell_plans = self._plan_cells(everything if dry_run else todo, timeout_min)
        except (LaunchError, PlanError) as error:
            fail(error)
        if dry_run:
            if cell_plans:
                print(format_table(cell_plans))
                write_plan(cell_plans, sweep_dir)
                print(f"plan: {sweep_dir / 'plan.json'}, {sweep_dir / 'plan.md'}; nothing submitted (sweep.dry_run=true)")
            else:
                print(f"{len(everything)} cells; CPU-only cells (gpus_per_node=0) have no plan; nothing submitted")
            return []
        if not todo:
            print(f"all {len(job_overrides)} cells of {sweep_dir} are done; nothing to submit")
            return []
        if cell_plans:
            write_plan(cell_plans, sweep_dir)

        from hydra.core.singleton import Singleton

        state = Singleton.get_state()
        jobs, submitted = [], {}
        for group in self._groups(todo, cell_plans, timeout_min):
            executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster="slurm",
                                             slurm_max_num_timeout=group.settings["max_num_timeout"])
            executor.update_parameters(**_executor_parameters(self.params, group.settings))
            arguments = [(overrides, "hydra.sweep.dir", initial_job_idx + p.job_index, f"job_id_for_{p.job_index}", state)
                         for p, overrides in group.cells]
            try:
                group_jobs = executor.map_array(self, *zip(*arguments))
            except submitit.core.utils.FailedJobError as error:
                fail(LaunchError(f"sbatch refused the job array: {_first_line(error)}"))
            jobs += group_jobs
            submitted.update({p.cell.name: job.job_id for (p, _), job in zip(group.cells, group_jobs)})
        atomic_write_text(sweep_dir / JOBS_FILE, json.dumps(submitted, indent=1))
        arrays = sorted({job.job_id.split("_")[0] for job in jobs})
        print(
            f"submitted {len(jobs)} of {len(job_overrides)} cells as SLURM job array{'s' if len(arrays) > 1 else ''} "
            f"{', '.join(arrays)}\n"
            f"  sweep directory: {sweep_dir}\n"
            f"  watch:           python -m sweeps.status {sweep_dir}   (or squeue -j {','.join(arrays)})"
        )
        if self.config.sweep.wait:
            return [_wait_for(job) for job in jobs]
        return []

    def _plan_cells(self, cells: list[PlannedCell], timeout_min: float):
        """Each GPU cell's plan (sweeps/planner.py); none for CPU-only cells."""
        from .planner import Hardware, plan_cell

        if not self.params.get("gpus_per_node"):
            return []
        hardware = Hardware.from_settings({**{key: self.params[key] for key in PLANNER_KEYS},
                                           "gpus_per_node": self.params["gpus_per_node"]}, timeout_min)
        return [plan_cell(p.cell.name, p.config, hardware) for p in cells]

    def _groups(self, todo: list[PlannedCell], cell_plans, timeout_min: float) -> list[SubmissionGroup]:
        explicit = {key: self.params[key] for key in ("nodes", "tasks_per_node", "signal_delay_s", "max_num_timeout")
                    if self.params.get(key) is not None}
        if not cell_plans:  # CPU-only cells: the settings as given
            settings = {"nodes": 1, "tasks_per_node": 1, "signal_delay_s": 120, "max_num_timeout": 30,
                        "gpus_per_node": self.params.get("gpus_per_node"), "timeout_min": timeout_min, **explicit}
            return [SubmissionGroup(settings, [(p, list(p.cell.overrides)) for p in todo])]
        groups: dict[tuple, SubmissionGroup] = {}
        for p, cell_plan in zip(todo, cell_plans):
            settings = {"nodes": cell_plan.nodes, "gpus_per_node": cell_plan.gpus_per_node,
                        "tasks_per_node": cell_plan.gpus_per_node, "timeout_min": timeout_min,
                        "signal_delay_s": cell_plan.signal_delay_s, "max_num_timeout": cell_plan.max_num_timeout,
                        **explicit}
            key = tuple(sorted(settings.items()))
            groups.setdefault(key, SubmissionGroup(settings, [])).cells.append((p, [*p.cell.overrides, *cell_plan.overrides()]))
        return list(groups.values())

    def _timeout_min(self, dry_run: bool) -> int:
        """The attempt's time limit (minutes): hydra.launcher.timeout_min, else the partition's limit from sinfo."""
        if self.params.get("timeout_min"):
            return int(self.params["timeout_min"])
        if dry_run or shutil.which("sinfo") is None:
            return DEFAULT_TIMEOUT_MIN
        partition = self.params.get("partition")
        command = ["sinfo", "-h", "-o", "%l"] + (["-p", partition] if partition else [])
        limits = subprocess.run(command, capture_output=True, text=True).stdout.split()
        minutes = [slurm_minutes(limit) for limit in limits]
        minutes = [value for value in minutes if value is not None]
        return int(min(minutes)) if minutes else DEFAULT_TIMEOUT_MIN

    def _check_settings(self, timeout_min: float) -> None:
        timeout_s = timeout_min * 60
        delay_s = self.params.get("signal_delay_s")
        # SLURM may send the warning signal up to 60 s early: a delay too close to the limit kills the job at start.
        if delay_s is not None and (delay_s < 0 or delay_s + 60 >= timeout_s):
            raise LaunchError(
                f"hydra.launcher.signal_delay_s={delay_s} leaves no time to train within timeout_min="
                f"{timeout_min:g}; keep signal_delay_s + 60 below timeout_min * 60"
            )
        if self.params.get("max_num_timeout") is not None and int(self.params["max_num_timeout"]) < 1:
            raise LaunchError(
                "hydra.launcher.max_num_timeout=0 would never requeue a timed-out or preempted cell; set it to 1 or more"
            )
        for key in ("nodes", "tasks_per_node"):
            if self.params.get(key) is not None and int(self.params[key]) < 1:
                raise LaunchError(f"hydra.launcher.{key}={self.params[key]} must be at least 1")
        # sinfo: one "PARTITION GRES" line per partition, e.g. "gpu gpu:8" or "debug (null)".
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%R %G"], capture_output=True, text=True)
        if sinfo.returncode:
            # Installed but not running (or unreachable): sbatch would fail later with its own multi-line noise.
            raise LaunchError(
                f"SLURM does not answer here (sinfo: {(sinfo.stderr.strip().splitlines() or [f'exit {sinfo.returncode}'])[0]}): "
                "start its controller, "
                "or run the grid at tiny scale on this machine with scale=tiny"
            )
        gres = dict(line.split(" ", 1) for line in sinfo.stdout.split("\n") if " " in line)
        partition = self.params.get("partition")
        if partition and gres and partition not in gres:
            raise LaunchError(f"hydra.launcher.partition={partition} is not a partition of this cluster; choose one of {', '.join(gres)}")
        offered = [gres[partition]] if partition in gres else list(gres.values())
        if self.params.get("gpus_per_node") and gres and not any("gpu" in value for value in offered):
            raise LaunchError(
                f"hydra.launcher.gpus_per_node={self.params['gpus_per_node']} but {partition or 'no partition'} offers no GPUs "
                "(sinfo GRES); choose a GPU partition with hydra.launcher.partition=NAME, or set hydra.launcher.gpus_per_node=0"
            )


def _check_data(cell: PlannedCell) -> None:
    """Hub data must be prepared before a cluster trains on it (sweeps/prepared.py says how, in one line)."""
    from .prepared import check_prepared

    try:
        check_prepared(cell.config)
    except ConfigError as error:
        raise LaunchError(f"cell {cell.cell.name}: {error}") from None


def slurm_minutes(limit: str) -> float | None:
    """A SLURM time limit ("2-00:00:00", "48:00:00", "30:00", "infinite") in minutes; None if unlimited."""
    if not limit or limit in ("infinite", "UNLIMITED", "n/a"):
        return None
    days, _, clock = limit.rpartition("-")
    parts = [int(part) for part in clock.split(":")]
    hours, minutes, seconds = ([0] * (3 - len(parts)) + parts) if len(parts) > 1 else (0, parts[0], 0)
    return (int(days or 0) * 24 + hours) * 60 + minutes + seconds / 60


def _executor_parameters(params: dict, settings: dict) -> dict:
    """submitit's update_parameters arguments: the launcher's settings with the group's planned ones."""
    shared = set(OmegaConf.structured(BaseQueueConf).keys())
    skip = {"submitit_folder", "max_num_timeout", *PLANNER_KEYS}
    merged = {key: value for key, value in params.items() if key not in skip and value is not None}
    merged.update({key: value for key, value in settings.items() if key != "max_num_timeout"})
    if not merged.get("gpus_per_node"):
        merged.pop("gpus_per_node", None)
    return {key if key in shared else f"slurm_{key}": value for key, value in merged.items()}


def _wait_for(job) -> JobReturn:
    try:
        job.results()
        return _job_return(0)
    except Exception:  # the cell's error.txt says why; sweeps.report lists it and the others still get collected
        return _job_return(1)


# --- local -----------------------------------------------------------------------------------------


class LocalGridLauncher(Launcher):
    """Runs the cells in worker processes on this machine, ``parallel`` at a time (default: the cores)."""

    def __init__(self, parallel: int | None = None, progress_interval_s: float = 10.0) -> None:
        if parallel is not None and (not isinstance(parallel, int) or parallel < 1):
            fail(LaunchError(f"hydra.launcher.parallel={parallel!r} must be a positive number of cells, or null for one per core"))
        self.parallel = parallel
        self.progress_interval_s = progress_interval_s
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        dry_run = bool(self.config.sweep.get("dry_run", False))
        try:
            everything, todo = plan(self.config, self.hydra_context, job_overrides, write_manifest=not dry_run)
        except LaunchError as error:
            fail(error)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        if dry_run:
            for p in everything:
                print(f"  {p.cell.name}: {p.config.total_steps} steps of {p.config.tokens_per_step} tokens")
            print(f"{len(everything)} cells, {len(todo)} to run on this machine; nothing run (sweep.dry_run=true)")
            return []
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        parallel = max(1, min(self.parallel or cores, len(todo) or 1))
        print(f"sweep directory: {sweep_dir}; {len(job_overrides) - len(todo)} cells done, {len(todo)} to run, {parallel} at a time")
        # Largest first: the long P = 8 cells of the widest models start early, so they do not run alone at the end.
        queue = sorted(todo, key=lambda p: _cost(p.config), reverse=True)
        max_failures = int(self.config.sweep.get("max_failures", 1))
        return _run_workers(queue, sweep_dir, parallel, max(1, cores // parallel), self.progress_interval_s, max_failures)


def _cost(config: TrainConfig) -> float:
    model = config.model
    return config.parscale_n * config.tokens * model["num_hidden_layers"] * model["hidden_size"] ** 2


# glibc serves large blocks (from 128 kB, adaptively up to 32 MB) with fresh pages from the OS and returns them
# when freed, so a CPU run faults its activations in again at every step: 117 million page faults in one tiny
# grid. Serving blocks under 32 MB (glibc's largest allowed threshold) from the heap, trimmed only past 1 GB,
# makes the P > 1 cells 10-17% faster (tiny-128 at P = 8: 2.1k against 1.8k tokens/s; raising only the trim
# threshold made it slower, 1.1k). A GLIBC_TUNABLES of the user's own wins; other C libraries ignore it.
KEEP_FREED_MEMORY = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def cpu_cell_environment(threads: int) -> dict[str, str]:
    """The environment of a training process on the CPU: `threads` math threads and the allocator above."""
    return {"GLIBC_TUNABLES": KEEP_FREED_MEMORY, **os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _run_workers(queue: list[PlannedCell], sweep_dir: Path, parallel: int, threads: int, interval_s: float,
                 max_failures: int = 1) -> list[JobReturn]:
    config_dir = sweep_dir / CELL_CONFIGS
    config_dir.mkdir(parents=True, exist_ok=True)
    env = cpu_cell_environment(threads)
    pending, running, finished = list(queue), {}, {}
    started_at, last_report = time.time(), 0.0
    spent = {"seconds": 0.0, "cost": 0.0}  # of finished cells: what the ETA scales by
    try:
        while pending or running:
            while pending and len(running) < parallel:
                cell = pending.pop(0)
                cell_file = config_dir / f"{cell.cell.name}.yaml"
                atomic_write_text(cell_file, OmegaConf.to_yaml(OmegaConf.structured(cell.config)))
                run_dir = Path(cell.config.run_dir)
                run_dir.mkdir(parents=True, exist_ok=True)
                log = open(run_dir / "train.log", "a")
                process = subprocess.Popen([sys.executable, "-m", "sweeps.run_cell", str(cell_file), str(max_failures)],
                                           stdout=log, stderr=subprocess.STDOUT, env=env)
                running[cell.cell.name] = (process, log, time.time(), _cost(cell.config), cell)
            for name, (process, log, began, cost, cell) in list(running.items()):
                if process.poll() is not None:
                    log.close()
                    took = time.time() - began
                    spent["seconds"] += took
                    spent["cost"] += cost
                    del running[name]
                    if process.returncode != 0 and _retry(cell, process.returncode, max_failures):
                        print(f"  {name}: attempt failed ({_last_error(cell)}); starting it again from its checkpoint")
                        pending.insert(0, cell)
                        continue
                    finished[name] = process.returncode
                    state = "done" if process.returncode == 0 else f"FAILED (see {sweep_dir / name / 'train.log'})"
                    print(f"  {name}: {state} in {took:.0f} s")
            now = time.time()
            if now - last_report >= interval_s and (pending or running):
                last_report = now
                print(_progress(finished, running, pending, spent, parallel, now - started_at), flush=True)
            time.sleep(0.2)
    except KeyboardInterrupt:
        # The workers checkpoint on SIGTERM; launching the grid again resumes them.
        for process, *_ in running.values():
            process.terminate()
        for process, log, *_ in running.values():
            process.wait()
            log.close()
        print(f"interrupted: {len(finished)} cells finished; the same command resumes the others", file=sys.stderr)
        raise SystemExit(130) from None
    failed = [name for name, code in finished.items() if code != 0]
    print(f"{len(finished) - len(failed)} cells finished, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else ""))
    return [_job_return(finished[cell.cell.name]) for cell in queue]


def _retry(cell: PlannedCell, returncode: int, max_failures: int) -> bool:
    """After a worker exited non-zero: whether to start the cell again. A worker killed before it could record
    its failure (a signal, the out-of-memory killer) gets it recorded here, and the cell marked failed here
    once it has failed max_failures times; a configuration error (exit 2) is never retried."""
    run_dir = Path(cell.config.run_dir)
    attempts = Attempts(run_dir)
    entries = attempts.read()
    if entries and "outcome" not in entries[-1]:
        attempts.end("failed", f"the worker exited with status {returncode} without an error (killed?)")
    if (run_dir / ERROR_FILE).exists() or returncode == 2:
        return False
    if attempts.failures() < max_failures:
        return True
    atomic_write_text(run_dir / ERROR_FILE, _last_error(cell) + "\n")
    return False


def _last_error(cell: PlannedCell) -> str:
    entries = Attempts(Path(cell.config.run_dir)).read()
    return entries[-1].get("error", "") if entries else ""


def _progress(finished: dict, running: dict, pending: list, spent: dict, parallel: int, elapsed_s: float) -> str:
    failed = sum(code != 0 for code in finished.values())
    line = f"cells: {len(finished) - failed} done, {len(running)} running, {failed} failed, {len(pending)} pending; {elapsed_s / 60:.1f} min"
    if spent["cost"]:
        # Seconds per unit of the cells' relative cost (P x tokens x layers x width^2) so far, times what is left;
        # a running cell counts as half done.
        left = sum(_cost(cell.config) for cell in pending) + sum(entry[3] for entry in running.values()) / 2
        line += f", ETA ~{left * spent['seconds'] / spent['cost'] / parallel / 60:.1f} min"
    return line


def _job_return(code: int) -> JobReturn:
    # Reported as completed either way: Hydra's sweeper raises on the first failed job, which would skip
    # collecting and fitting the cells that did finish. sweeps.report names the failures and sets the exit status.
    outcome = JobReturn()
    outcome.status = JobStatus.COMPLETED
    outcome.return_value = code
    return outcome


