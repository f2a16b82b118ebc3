"""`sweep.wait=true` on SLURM: the launcher waits until every cell is done or failed, and submits again a cell
whose job left the queue without finishing it.

SLURM and submitit bring a job back by themselves after a preemption, a time limit or a crash (a requeue keeps
the job in the queue, pending). A job that was cancelled (scancel), or lost in a way that SLURM does not
requeue, leaves the queue for good: without a new job its cell would never finish, and a researcher waiting
for the grid expects it to. Such a cell is submitted again, up to `sweep.max_failures` times, and resumes from
its checkpoint; then it is marked failed with why. A stage-2 cell is submitted again only once its stage-1
checkpoint exists, and not at all if its stage 1 failed."""

from __future__ import annotations

import getpass
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from sweeps.files import atomic_write_text
from sweeps.grid.cells import ERROR_FILE, Attempts, read_cell
from sweeps.grid.sweep import SweepCell
from sweeps.run import stages

POLL_S = 3.0  # between two looks at the queue and the cells


class GridWaiter:
    """The cells being waited for and their current jobs; `resubmit(cell)` submits a cell again and returns
    its new job."""

    def __init__(self, cells: list[SweepCell], jobs: dict, max_failures: int, resubmit: Callable):
        self.cells = {p.cell.name: p for p in cells}
        self.jobs = dict(jobs)  # cell name -> submitit job
        self.max_failures, self.resubmit = max_failures, resubmit
        self.lost = dict.fromkeys(self.cells, 0)  # jobs of each cell that left the queue without finishing it
        self.missing_once: set[str] = set()  # cells whose job was missing from the queue at the last look
        # When each cell's current job was submitted: an error.txt older than that is from before this launch,
        # and the job removes it when it starts.
        self.since = dict.fromkeys(self.cells, time.time())

    def wait(self) -> dict[str, str]:
        """Returns {cell name: "done" | "failed"} once no cell is left to wait for."""
        outcome = {}
        while len(outcome) < len(self.cells):
            time.sleep(POLL_S)
            queued = _queued_job_ids()
            for name, cell in self.cells.items():
                if name not in outcome:
                    state = self._look_at(cell, queued)
                    if state is not None:
                        outcome[name] = state
        return outcome

    def _look_at(self, cell: SweepCell, queued: set[str] | None) -> str | None:
        """The cell's final state, or None while it is still to wait for (resubmitting it if its job is gone)."""
        name, run_dir = cell.cell.name, Path(cell.config.run_dir)
        found = read_cell(run_dir)
        if found.state == "done" or (found.state == "failed" and (found.updated or 0) >= self.since[name]):
            return found.state
        if queued is None or _in_queue(self.jobs[name].job_id, queued):
            self.missing_once.discard(name)
            return None
        # A requeued job can be missing from one look while SLURM moves it back to pending: gone twice is gone.
        if name not in self.missing_once:
            self.missing_once.add(name)
            return None
        if cell.cell.stage == 2 and not stages.branch_ready(cell.config):
            after = self.cells.get(cell.cell.after)
            if after is not None and read_cell(Path(after.config.run_dir)).state == "failed":
                print(f"  {name}: blocked (its stage 1, {cell.cell.after}, failed)", flush=True)
                return "failed"
            return None  # submitted again once its stage 1 has saved its branch
        return self._submit_again(cell)

    def _submit_again(self, cell: SweepCell) -> str | None:
        name, run_dir = cell.cell.name, Path(cell.config.run_dir)
        old = self.jobs[name].job_id
        why = f"its job {old} left the queue before the cell finished (cancelled?)"
        attempts = Attempts(run_dir)
        entries = attempts.read()
        if entries and "outcome" not in entries[-1]:  # killed without a word: the attempt never ended itself
            attempts.end("failed", why)
        self.lost[name] += 1
        self.missing_once.discard(name)
        if self.lost[name] > self.max_failures:
            atomic_write_text(run_dir / ERROR_FILE, f"{why}, {self.lost[name]} times; launch the grid again to "
                                                    "resume it\n")
            print(f"  {name}: FAILED ({why}, {self.lost[name]} times)", flush=True)
            return "failed"
        self.since[name] = time.time()
        self.jobs[name] = self.resubmit(cell)
        print(f"  {name}: {why}; submitted again as job {self.jobs[name].job_id} "
              f"({self.lost[name]} of at most {self.max_failures})", flush=True)
        return None


def _in_queue(job_id: str, queued: set[str]) -> bool:
    """Whether a job is in the queue: an array task by its own id, a one-task array submitted as "123" also
    as "123_0"."""
    return job_id in queued or ("_" not in job_id and f"{job_id}_0" in queued)


def _queued_job_ids() -> set[str] | None:
    """The ids of this user's jobs in SLURM's queue (pending, running, requeued, completing), array tasks one
    by one ("123_4"); None when squeue does not answer (then nothing is concluded from it)."""
    try:
        listed = subprocess.run(["squeue", "-h", "-r", "-o", "%i", "-u", getpass.getuser()],
                                capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        return None
    return set(listed.stdout.split()) if listed.returncode == 0 else None
