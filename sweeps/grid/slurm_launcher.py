"""Hydra launchers for grids of training runs: SLURM through submitit here, local worker processes in
sweeps/grid/local_launcher.py.

Both first compose the sweep in the submitting process, before anything runs (sweeps/grid/sweep.py); this
one then sizes each cell for its GPUs (sweeps/grid/resource_plan.py).

`SlurmGridLauncher` extends hydra-submitit-launcher's SLURM launcher: the grid goes out as one job array
and, unlike the plugin, the launcher returns right after submission (set `sweep.wait=true` to wait and
collect; waiting, it also submits again a cell whose job left the queue unfinished: sweeps/grid/slurm_wait.py).
A job that SLURM preempts or times out is requeued by submitit (`max_num_timeout` > 0: the plugin's default 0
refuses every requeue of a job shorter than ~50 minutes) and, re-run from the top, the cell resumes from the
checkpoint its training loop saved on the warning signal.

A two-stage grid (`stage2_fraction=F`, sweeps/grid/two_stage.py) goes out in two rounds: the stage-1 cells,
then each stage-1 cell's stage-2 cells as job arrays that depend on its job (`afterok`: a requeued stage-1
job keeps them waiting; `kill-on-invalid-dep`: one that fails cancels them, and `sweeps.status` shows them
blocked).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from sweeps.errors import ConfigError, first_line
from sweeps.files import atomic_write_text
from sweeps.grid import two_stage
from sweeps.grid.cells import Cell
from sweeps.grid.sweep import LaunchError, SweepCell, compose_sweep, fail, hold_launch_lock, job_return
from sweeps.run.config import run_id

JOBS_FILE = "jobs.json"


@dataclass
class PlannedSlurmConf(SlurmQueueConf):
    """The SLURM launcher's settings (conf/hydra/launcher/parscale_slurm.yaml): submitit's, plus the hardware
    each cell is planned for (sweeps/grid/resource_plan.py). Left null, nodes, tasks_per_node, signal_delay_s and
    max_num_timeout are planned per cell, and timeout_min is the partition's time limit."""

    _target_: str = "hydra_plugins.parscale_sweeps.SlurmGridLauncher"
    gpu: str = "H100-80GB"  # A100-40GB, A100-80GB, H100-80GB, H200-141GB, or any name analysis.gpus knows
    gpu_mem_gb: float | None = None  # overrides the GPU's memory (decimal GB)
    gpus_per_node: int | None = 8  # GPUs in one node of the partition; 0: CPU-only cells, nothing planned
    max_nodes: int = 8  # most nodes one cell may use
    mfu: float = 0.4  # assumed fraction of peak bf16 FLOP/s the training reaches
    target_hours: float = 72.0  # wall time a cell should finish in; cells get GPUs until they do
    startup_min: float = 10.0  # per attempt: queue start, model build, compile, checkpoint load
    checkpoint_write_gbps: float = 1.0  # per GPU, to the shared file system
    filesystem_gbps: float = 20.0  # all writers together
    timeout_min: int | None = None  # per attempt; null: the partition's limit (2880 if sinfo gives none)
    nodes: int | None = None
    tasks_per_node: int | None = None
    signal_delay_s: int | None = None
    max_num_timeout: int | None = None


PLANNER_KEYS = ("gpu", "gpu_mem_gb", "max_nodes", "mfu", "target_hours", "startup_min", "checkpoint_write_gbps",
                "filesystem_gbps")
DEFAULT_TIMEOUT_MIN = 2880


@dataclass
class SubmissionGroup:
    """Cells submitted as one job array: the same nodes, GPUs, time limit, signal delay and requeues."""

    settings: dict
    cells: list  # (SweepCell, overrides)


class SlurmGridLauncher(SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from sweeps.grid.resource_plan import ResourcePlanError, write_resource_plans

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
                # Held while this process submits and, with sweep.wait=true, waits; not by the jobs.
                hold_launch_lock(sweep_dir)
            everything, todo = compose_sweep(self.config, self.hydra_context, job_overrides, write_manifest=not dry_run)
            if not dry_run:
                for p in todo:
                    _check_data(p)
            cell_plans = self._plan_cells(everything if dry_run else todo, timeout_min)
            if dry_run:
                return self._print_plan(everything, cell_plans, sweep_dir, timeout_min)
        except (LaunchError, ResourcePlanError) as error:
            fail(error)
        if not todo:
            print(f"all {len(everything)} cells of {sweep_dir} are done; nothing to submit")
            return []
        if cell_plans:
            write_resource_plans(cell_plans, sweep_dir)
        jobs, submitted = self._submit(todo, cell_plans, timeout_min, initial_job_idx)
        atomic_write_text(sweep_dir / JOBS_FILE, json.dumps(submitted, indent=1))
        arrays = sorted({job.job_id.split("_")[0] for job in jobs})
        staged = " (stage-2 arrays wait for their stage-1 jobs)" if any(p.cell.stage == 2 for p in todo) else ""
        print(
            f"submitted {len(jobs)} of {len(everything)} cells as SLURM job array{'s' if len(arrays) > 1 else ''} "
            f"{', '.join(arrays)}{staged}\n"
            f"  sweep directory: {sweep_dir}\n"
            f"  watch:           python -m sweeps.status {sweep_dir}   (or squeue -j {','.join(arrays)})"
        )
        if self.config.sweep.wait:
            return self._wait(todo, jobs, submitted, cell_plans, timeout_min, initial_job_idx, sweep_dir)
        return []

    def _wait(self, todo: list[SweepCell], jobs: list, submitted: dict, cell_plans, timeout_min: float,
              initial_job_idx: int, sweep_dir: Path) -> list[JobReturn]:
        """Waits for every cell, submitting again those whose jobs left the queue unfinished (slurm_wait.py)."""
        from sweeps.grid.slurm_wait import GridWaiter

        by_id = {job.job_id: job for job in jobs}
        plans = {plan.cell: plan for plan in cell_plans}

        def resubmit(cell: SweepCell):
            new_jobs, new_ids = self._submit([cell], [plans[cell.cell.name]] if cell.cell.name in plans else [],
                                             timeout_min, initial_job_idx)
            submitted.update(new_ids)
            atomic_write_text(sweep_dir / JOBS_FILE, json.dumps(submitted, indent=1))
            return new_jobs[0]

        waiter = GridWaiter(todo, {name: by_id[job_id] for name, job_id in submitted.items()},
                            int(self.config.sweep.get("max_failures", 1)), resubmit)
        outcome = waiter.wait()
        return [job_return(0 if outcome[p.cell.name] == "done" else 1) for p in todo]

    def _submit(self, todo: list[SweepCell], cell_plans, timeout_min: float, initial_job_idx: int):
        """Submits the cells as job arrays, stage-1 (and one-stage) cells first, then every stage-1 cell's stage
        2s depending on its job; returns the jobs and {cell name: job id}."""
        import submitit
        from hydra.core.singleton import Singleton

        state = Singleton.get_state()
        plans = {plan.cell: plan for plan in cell_plans}
        jobs, submitted = [], {}
        for round_cells in ([p for p in todo if p.cell.stage != 2], [p for p in todo if p.cell.stage == 2]):
            for group in self._groups(round_cells, plans, timeout_min, submitted):
                executor = submitit.AutoExecutor(folder=self.params["submitit_folder"], cluster="slurm",
                                                 slurm_max_num_timeout=group.settings["max_num_timeout"])
                executor.update_parameters(**_executor_parameters(self.params, group.settings))
                arguments = [(overrides, "hydra.sweep.dir", initial_job_idx + p.job_index, f"job_id_for_{p.job_index}",
                              state) for p, overrides in group.cells]
                try:
                    group_jobs = executor.map_array(self, *zip(*arguments, strict=True))
                except submitit.core.utils.FailedJobError as error:
                    fail(LaunchError(f"sbatch refused the job array: {first_line(error)}"))
                jobs += group_jobs
                submitted.update({p.cell.name: job.job_id for (p, _), job in zip(group.cells, group_jobs, strict=True)})
        return jobs, submitted

    def _print_plan(self, everything: list[SweepCell], cell_plans, sweep_dir: Path, timeout_min: float) -> list:
        from sweeps.grid.resource_plan import format_table, write_resource_plans

        if not cell_plans:
            print(f"{len(everything)} cells; CPU-only cells (gpus_per_node=0) have no plan; nothing submitted")
            return []
        comparison = self._against_from_scratch(everything, cell_plans, timeout_min)
        print(format_table(cell_plans) + comparison)
        write_resource_plans(cell_plans, sweep_dir, comparison)
        print(f"plan: {sweep_dir / 'plan.json'}, {sweep_dir / 'plan.md'}; nothing submitted (sweep.dry_run=true)")
        return []

    def _against_from_scratch(self, everything: list[SweepCell], cell_plans, timeout_min: float) -> str:
        """A two-stage grid's GPU-hours by stage, against the same cells trained from scratch ('' otherwise)."""
        if not any(p.cell.stage for p in everything):
            return ""
        scratch = {}  # one from-scratch run per distinct cell: the F values of a boundary sweep share it
        for p in everything:
            if p.cell.stage == 2:
                alone = two_stage.from_scratch(p.config)
                scratch[run_id(alone)] = alone
        scratch_hours = sum(plan.gpu_hours for plan in self._plan_cells(
            [SweepCell(Cell(f"{config.size}-P{config.parscale_n}", []), config, 0) for config in scratch.values()],
            timeout_min))
        by_stage = {stage: sum(plan.gpu_hours for p, plan in zip(everything, cell_plans, strict=True)
                               if p.cell.stage == stage)
                    for stage in (1, 2)}
        total = by_stage[1] + by_stage[2]
        return (f"\ntwo stages: {total:,.0f} GPU-hours (stage 1: {by_stage[1]:,.0f}, stage 2: {by_stage[2]:,.0f}); "
                f"the same {len(scratch)} cells from scratch: "
                f"{scratch_hours:,.0f} GPU-hours ({total / scratch_hours:.2f}x)")

    def _plan_cells(self, cells: list[SweepCell], timeout_min: float):
        """Each GPU cell's plan (sweeps/grid/resource_plan.py); none for CPU-only cells."""
        from sweeps.grid.resource_plan import Hardware, plan_resources

        if not self.params.get("gpus_per_node"):
            return []
        hardware = Hardware.from_settings({**{key: self.params[key] for key in PLANNER_KEYS},
                                           "gpus_per_node": self.params["gpus_per_node"]}, timeout_min)
        return [plan_resources(p.cell.name, p.config, hardware) for p in cells]

    def _groups(self, cells: list[SweepCell], plans: dict, timeout_min: float,
                submitted: dict) -> list[SubmissionGroup]:
        """The cells by what one job array shares: resources, and a stage 2's stage-1 job to wait for."""
        explicit = {key: self.params[key] for key in ("nodes", "tasks_per_node", "signal_delay_s", "max_num_timeout")
                    if self.params.get(key) is not None}
        groups: dict[tuple, SubmissionGroup] = {}
        for p in cells:
            cell_plan = plans.get(p.cell.name)
            if cell_plan is None:  # CPU-only cells: the settings as given
                settings = {"nodes": 1, "tasks_per_node": 1, "signal_delay_s": 120, "max_num_timeout": 30,
                            "gpus_per_node": self.params.get("gpus_per_node"), "timeout_min": timeout_min, **explicit}
            else:
                settings = {"nodes": cell_plan.nodes, "gpus_per_node": cell_plan.gpus_per_node,
                            "tasks_per_node": cell_plan.gpus_per_node, "timeout_min": timeout_min,
                            "signal_delay_s": cell_plan.signal_delay_s, "max_num_timeout": cell_plan.max_num_timeout,
                            **explicit}
            if p.cell.stage == 2 and p.cell.after in submitted:
                settings["dependency"] = f"afterok:{submitted[p.cell.after]}"
            overrides = [*p.cell.overrides, *(cell_plan.overrides() if cell_plan else [])]
            key = tuple(sorted(settings.items()))
            groups.setdefault(key, SubmissionGroup(settings, [])).cells.append((p, overrides))
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
                "hydra.launcher.max_num_timeout=0 would never requeue a timed-out or preempted cell; "
                "set it to 1 or more"
            )
        for key in ("nodes", "tasks_per_node"):
            if self.params.get(key) is not None and int(self.params[key]) < 1:
                raise LaunchError(f"hydra.launcher.{key}={self.params[key]} must be at least 1")
        # sinfo: one "PARTITION GRES" line per partition, e.g. "gpu gpu:8" or "debug (null)".
        sinfo = subprocess.run(["sinfo", "-h", "-o", "%R %G"], capture_output=True, text=True)
        if sinfo.returncode:
            # Installed but not running (or unreachable): sbatch would fail later with its own multi-line noise.
            raise LaunchError(
                "SLURM does not answer here (sinfo: "
                f"{(sinfo.stderr.strip().splitlines() or [f'exit {sinfo.returncode}'])[0]}): "
                "start its controller, "
                "or run the grid at tiny scale on this machine with scale=tiny"
            )
        gres = dict(line.split(" ", 1) for line in sinfo.stdout.split("\n") if " " in line)
        partition = self.params.get("partition")
        if partition and gres and partition not in gres:
            raise LaunchError(f"hydra.launcher.partition={partition} is not a partition of this cluster; "
                              f"choose one of {', '.join(gres)}")
        offered = [gres[partition]] if partition in gres else list(gres.values())
        if self.params.get("gpus_per_node") and gres and not any("gpu" in value for value in offered):
            raise LaunchError(
                f"hydra.launcher.gpus_per_node={self.params['gpus_per_node']} but "
                f"{f'partition {partition} offers' if partition else 'no partition of this cluster offers'} "
                "GPUs (sinfo GRES); choose a GPU partition with hydra.launcher.partition=NAME, "
                "or set hydra.launcher.gpus_per_node=0"
            )


def _check_data(cell: SweepCell) -> None:
    """Hub data must be prepared before a cluster trains on it (sweeps/data/prepared.py says how, in one line)."""
    from sweeps.data.prepared import check_prepared

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
    merged.update({key: value for key, value in settings.items() if key not in ("max_num_timeout", "dependency")})
    if settings.get("dependency"):
        # A stage-2 array waits for its stage-1 job; SLURM cancels it if that job fails (its dependency then
        # can never be met) rather than leaving it pending forever.
        merged["additional_parameters"] = {**(params.get("additional_parameters") or {}),
                                           "dependency": settings["dependency"], "kill_on_invalid_dep": "yes"}
    if not merged.get("gpus_per_node"):
        merged.pop("gpus_per_node", None)
    return {key if key in shared else f"slurm_{key}": value for key, value in merged.items()}
