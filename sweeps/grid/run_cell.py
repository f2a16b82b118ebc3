"""One cell of a sweep: `train`, plus the record of its attempts and the failure mark that `sweeps.status`
reads.

Both launchers end here: the SLURM one through Hydra's task function (sweeps/launch.py), the local one in
a worker process, `python -m sweeps.grid.run_cell CELL.yaml [MAX_FAILURES]`, where CELL.yaml is the cell's
resolved config.

A cell that crashes (an exception: a non-finite loss, an NCCL error, running out of memory) is tried again
from its last checkpoint, up to `sweep.max_failures` failed attempts in all: on SLURM the job requeues itself
(`scontrol requeue`, as submitit does on a timeout); locally the launcher starts the worker again (also after
a crash that left no error, such as a killed process). Then the cell is marked failed with the error's last
line. A configuration error is not retried. A process killed on a SLURM node without raising (a segfault, a
lost node) is outside this: SLURM's own requeue on node failure covers the latter."""

from __future__ import annotations

import os
import subprocess
import sys
import traceback
from pathlib import Path

from omegaconf import OmegaConf

from parscale_law.errors import report_error
from sweeps.errors import ConfigError, first_line
from sweeps.files import atomic_write_text
from sweeps.grid.cells import ERROR_FILE, Attempts
from sweeps.run.config import TrainConfig, from_mapping
from sweeps.run.loop import train


def run_cell(config: TrainConfig, max_failures: int = 1, requeue=None) -> dict:
    """Trains the cell and records the attempt (rank 0 only). On an exception: with fewer than `max_failures`
    failed attempts so far, calls `requeue()` if given (SLURM) and re-raises, leaving the cell running;
    otherwise writes error.txt (the cell has failed; a relaunch removes it) and re-raises."""
    run_dir = Path(config.run_dir)
    is_main = int(os.environ.get("RANK", os.environ.get("SLURM_PROCID", 0))) == 0
    attempts = Attempts(run_dir)
    if is_main:
        (run_dir / ERROR_FILE).unlink(missing_ok=True)
        attempts.start(os.environ.get("SLURM_JOB_ID"))
    try:
        row = train(config)
    except SystemExit as stop:  # stopped on a signal after saving a checkpoint (sweeps/run/checkpoint.py)
        if is_main:
            attempts.end("stopped", f"exit {stop.code}")
        raise
    except Exception as error:
        line = f"{type(error).__name__}: {first_line(error)}"
        if is_main:
            attempts.end("failed", line)
            if isinstance(error, ConfigError) or attempts.failures() >= max_failures or requeue is None:
                atomic_write_text(run_dir / ERROR_FILE, traceback.format_exc() + line + "\n")
            else:
                print(f"attempt {len(attempts.read())} failed ({line}); requeued", file=sys.stderr, flush=True)
                requeue()
        raise
    if is_main:
        attempts.end("done")
    return row


def requeue_slurm_job() -> None:
    """Puts this SLURM job (array task) back in the queue; SLURM stops this attempt and starts it again."""
    job = os.environ.get("SLURM_JOB_ID")
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    subprocess.run(["scontrol", "requeue", job], check=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        return report_error(ValueError("usage: python -m sweeps.grid.run_cell CELL.yaml [MAX_FAILURES]"))
    try:
        # The local launcher starts the worker again itself ("requeue" is its next start): the cell is failed once
        # the last allowed attempt fails.
        max_failures = int(args[1]) if len(args) > 1 else 1
        run_cell(from_mapping(OmegaConf.load(args[0])), max_failures, requeue=lambda: None)
    except ConfigError as error:
        return report_error(error)
    except Exception as error:
        print(f"error: {type(error).__name__}: {first_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
