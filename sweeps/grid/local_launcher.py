"""The local grid launcher: every cell in a worker process on this machine (`python -m sweeps.grid.run_cell`),
`parallel` at a time (default: one per core), with progress lines.

Cells start in order of how long the grid must still wait for them: a cell's own cost, and for a stage-1
cell of a two-stage grid also its longest stage-2 cell's, so the long P = 8 cells of the widest models do
not run alone at the end. A stage-2 cell starts once its stage-1 checkpoint exists (sweeps/run/stages.py); if
its stage-1 cell fails, it is blocked and not run. A worker that fails is started again from its checkpoint
until its cell has failed `sweep.max_failures` times (sweeps/grid/run_cell.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from hydra.core.utils import JobReturn
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from sweeps.files import atomic_write_text
from sweeps.grid import two_stage
from sweeps.grid.cells import ERROR_FILE, Attempts
from sweeps.grid.sweep import (
    CELL_CONFIGS,
    LaunchError,
    SweepCell,
    compose_sweep,
    fail,
    hold_launch_lock,
    job_return,
)
from sweeps.run import stages
from sweeps.run.config import TrainConfig, run_id

BLOCKED = -1  # the exit status recorded for a cell that never ran because its stage 1 failed


class LocalGridLauncher(Launcher):
    """Runs the cells in worker processes on this machine, ``parallel`` at a time (default: the cores)."""

    def __init__(self, parallel: int | None = None, progress_interval_s: float = 10.0) -> None:
        if parallel is not None and (not isinstance(parallel, int) or parallel < 1):
            fail(LaunchError(f"hydra.launcher.parallel={parallel!r} must be a positive number of cells, "
                             "or null for one per core"))
        self.parallel = parallel
        self.progress_interval_s = progress_interval_s
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        dry_run = bool(self.config.sweep.get("dry_run", False))
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        try:
            if not dry_run:
                hold_launch_lock(sweep_dir)
            everything, todo = compose_sweep(self.config, self.hydra_context, job_overrides, write_manifest=not dry_run)
        except LaunchError as error:
            fail(error)
        if dry_run:
            print(dry_run_text(everything, todo))
            return []
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        parallel = max(1, min(self.parallel or cores, len(todo) or 1))
        print(f"sweep directory: {sweep_dir}; {len(everything) - len(todo)} cells done, {len(todo)} to run, "
              f"{parallel} at a time")
        max_failures = int(self.config.sweep.get("max_failures", 1))
        workers = Workers(todo, sweep_dir, parallel, max(1, cores // parallel), max_failures)
        return workers.run(self.progress_interval_s)


def dry_run_text(everything: list[SweepCell], todo: list[SweepCell]) -> str:
    lines = []
    for p in everything:
        stage = f" (stage {p.cell.stage})" if p.cell.stage else ""
        steps = stages.last_step(p.config) - stages.first_step(p.config)
        lines.append(f"  {p.cell.name}{stage}: {steps} steps of {p.config.tokens_per_step} tokens")
    lines.append(f"{len(everything)} cells, {len(todo)} to run on this machine; nothing run (sweep.dry_run=true)")
    if any(p.cell.stage for p in everything):
        lines.append(compute_against_from_scratch(everything))
    return "\n".join(lines)


def compute_against_from_scratch(everything: list[SweepCell]) -> str:
    """One line: the two-stage grid's backbone passes over tokens against the same grid from scratch."""
    two_stages = sum(two_stage.backbone_passes(p.config) for p in everything)
    scratch = {}  # one from-scratch run per distinct cell: the F values of a boundary sweep share it
    for p in everything:
        if p.cell.stage == 2:
            alone = two_stage.from_scratch(p.config)
            scratch[run_id(alone)] = two_stage.backbone_passes(alone)
    return (f"compute: {two_stages:.3g} backbone token-passes in two stages against {sum(scratch.values()):.3g} from "
            f"scratch for the same cells ({two_stages / sum(scratch.values()):.2f}x)")


def cost(config: TrainConfig) -> float:
    """A cell's relative cost on a CPU: P x the tokens it trains x layers x width^2."""
    model = config.model
    return two_stage.backbone_passes(config) * model["num_hidden_layers"] * model["hidden_size"] ** 2


@dataclass
class Worker:
    cell: SweepCell
    process: subprocess.Popen
    log: object
    started: float


# glibc serves large blocks (from 128 kB, adaptively up to 32 MB) with fresh pages from the OS and returns them
# when freed, so a CPU run faults its activations in again at every step: 117 million page faults in one tiny
# grid. Serving blocks under 32 MB (glibc's largest allowed threshold) from the heap, trimmed only past 1 GB,
# makes the P > 1 cells 10-17% faster (tiny-128 at P = 8: 2.1k against 1.8k tokens/s; raising only the trim
# threshold made it slower, 1.1k). A GLIBC_TUNABLES of the user's own wins; other C libraries ignore it.
KEEP_FREED_MEMORY = "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824"


def cpu_cell_environment(threads: int) -> dict[str, str]:
    """The environment of a training process on the CPU: `threads` math threads and the allocator above."""
    return {"GLIBC_TUNABLES": KEEP_FREED_MEMORY, **os.environ, "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads)}


class Workers:
    """The cells to run and the worker processes running them (see the module docstring)."""

    def __init__(self, todo: list[SweepCell], sweep_dir: Path, parallel: int, threads: int, max_failures: int):
        self.sweep_dir, self.parallel, self.max_failures = sweep_dir, parallel, max_failures
        self.env = cpu_cell_environment(threads)
        self.cells = todo
        self.pending = sorted(todo, key=self._wait_cost, reverse=True)
        self.running: dict[str, Worker] = {}
        self.finished: dict[str, int] = {}
        self.spent = {"seconds": 0.0, "cost": 0.0}  # of finished cells: what the ETA scales by

    def _wait_cost(self, cell: SweepCell) -> float:
        after = [cost(p.config) for p in self.cells if p.cell.after == cell.cell.name]
        return cost(cell.config) + max(after, default=0.0)

    def run(self, interval_s: float) -> list[JobReturn]:
        started_at, last_report = time.time(), 0.0
        try:
            while self.pending or self.running:
                self._block_orphans()
                while len(self.running) < self.parallel and (cell := self._next_ready()) is not None:
                    self._start(cell)
                self._collect()
                now = time.time()
                if now - last_report >= interval_s and (self.pending or self.running):
                    last_report = now
                    print(self._progress(now - started_at), flush=True)
                time.sleep(0.2)
        except KeyboardInterrupt:
            # The workers checkpoint on SIGTERM; launching the grid again resumes them.
            for worker in self.running.values():
                worker.process.terminate()
            for worker in self.running.values():
                worker.process.wait()
                worker.log.close()
            print(f"interrupted: {len(self.finished)} cells finished; the same command resumes the others",
                  file=sys.stderr)
            raise SystemExit(130) from None
        failed = [name for name, code in self.finished.items() if code > 0]
        blocked = [name for name, code in self.finished.items() if code == BLOCKED]
        done = len(self.finished) - len(failed) - len(blocked)
        print(f"{done} cells finished, {len(failed)} failed" + (f": {', '.join(failed)}" if failed else "")
              + (f", {len(blocked)} blocked by a failed stage 1" if blocked else ""))
        return [job_return(1 if self.finished[p.cell.name] else 0) for p in self.cells]

    def _next_ready(self) -> SweepCell | None:
        for cell in self.pending:
            if cell.cell.stage != 2 or stages.branch_ready(cell.config):
                self.pending.remove(cell)
                return cell
        return None

    def _block_orphans(self) -> None:
        """Stage-2 cells whose stage 1 ended without their checkpoint (it failed, or was blocked) never run."""
        for cell in list(self.pending):
            code = self.finished.get(cell.cell.after)
            if cell.cell.stage == 2 and code is not None and not stages.branch_ready(cell.config):
                self.pending.remove(cell)
                self.finished[cell.cell.name] = BLOCKED
                print(f"  {cell.cell.name}: blocked (its stage 1, {cell.cell.after}, "
                      f"{'failed' if code else 'finished without its checkpoint'})")

    def _start(self, cell: SweepCell) -> None:
        config_dir = self.sweep_dir / CELL_CONFIGS
        config_dir.mkdir(parents=True, exist_ok=True)
        cell_file = config_dir / f"{cell.cell.name}.yaml"
        atomic_write_text(cell_file, OmegaConf.to_yaml(OmegaConf.structured(cell.config)))
        run_dir = Path(cell.config.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        log = open(run_dir / "train.log", "a")  # noqa: SIM115  (the worker owns it; _collect closes it)
        command = [sys.executable, "-m", "sweeps.grid.run_cell", str(cell_file), str(self.max_failures)]
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.running[cell.cell.name] = Worker(cell, process, log, time.time())

    def _collect(self) -> None:
        for name, worker in list(self.running.items()):
            if worker.process.poll() is None:
                continue
            worker.log.close()
            took = time.time() - worker.started
            self.spent["seconds"] += took
            self.spent["cost"] += cost(worker.cell.config)
            del self.running[name]
            code = worker.process.returncode
            if code != 0 and _retry(worker.cell, code, self.max_failures):
                print(f"  {name}: attempt failed ({_last_error(worker.cell)}); starting it again from its checkpoint")
                self.pending.insert(0, worker.cell)
                continue
            self.finished[name] = code
            state = "done" if code == 0 else f"FAILED (see {self.sweep_dir / name / 'train.log'})"
            print(f"  {name}: {state} in {took:.0f} s")

    def _progress(self, elapsed_s: float) -> str:
        failed = sum(code > 0 for code in self.finished.values())
        done = sum(code == 0 for code in self.finished.values())
        line = (f"cells: {done} done, {len(self.running)} running, {failed} failed, {len(self.pending)} pending; "
                f"{elapsed_s / 60:.1f} min")
        if self.spent["cost"]:
            # Seconds per unit of the cells' relative cost so far, times what is left; a running cell counts as
            # half done.
            left = (sum(cost(p.config) for p in self.pending)
                    + sum(cost(w.cell.config) for w in self.running.values()) / 2)
            line += f", ETA ~{left * self.spent['seconds'] / self.spent['cost'] / self.parallel / 60:.1f} min"
        return line


def _retry(cell: SweepCell, returncode: int, max_failures: int) -> bool:
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


def _last_error(cell: SweepCell) -> str:
    entries = Attempts(Path(cell.config.run_dir)).read()
    return entries[-1].get("error", "") if entries else ""
