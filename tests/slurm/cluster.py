"""Helpers for tests that submit real jobs to a SLURM cluster.

Start a local one-node cluster with ``tests/slurm/slurm_local.sh start`` (see
README.md here). Tests marked with ``requires_slurm`` are skipped when no
cluster answers, unless SLURM_TESTS_REQUIRED=1 (CI sets it): then collecting
them fails, so that a cluster that did not come up cannot pass as skips.

Test modules import this as ``from slurm.cluster import ...``: pytest puts the
tests/ directory on sys.path when it imports a test file from it.
"""

import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

PARTITION = "debug"  # the partition slurm_local.sh creates
HOW_TO_START = "start one with `tests/slurm/slurm_local.sh start` (tests/slurm/README.md)"

# States after which a job does not run again (a requeued job passes through
# REQUEUED/PENDING instead).
FINAL_STATES = {
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY",
    "NODE_FAIL", "BOOT_FAIL", "DEADLINE", "PREEMPTED",
}


def _run(*cmd: str) -> tuple[bool, str]:
    """Run a SLURM client command: (succeeded, its output). A hung controller counts as failure."""
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        return False, f"`{' '.join(cmd)}` did not answer within 20 s"
    return proc.returncode == 0, (proc.stdout + proc.stderr).strip()


@functools.cache
def slurm_available() -> tuple[bool, str]:
    """(True, "") when jobs can be submitted here and their states read, else (False, why)."""
    if shutil.which("sinfo") is None:
        return False, f"SLURM is not installed (no sinfo on PATH); {HOW_TO_START}"
    ok, out = _run("scontrol", "ping")
    if not ok or "is UP" not in out:
        first_line = out.splitlines()[0] if out else "no output"
        return False, f"the SLURM controller does not answer ({first_line}); {HOW_TO_START}"
    ok, out = _run("sinfo", "--noheader", "--partition", PARTITION, "--format", "%P")
    if not ok or not out:
        return False, f"SLURM has no partition {PARTITION!r}; {HOW_TO_START}"
    # submitit reads job states from sacct; without it a job that dies leaves result() waiting forever
    ok, out = _run("sacct", "--noheader", "--allocations", "--starttime", "now")
    if not ok:
        return False, f"SLURM accounting does not work (sacct: {out!r}); {HOW_TO_START}"
    return True, ""


def _requires_slurm() -> pytest.MarkDecorator:
    ok, reason = slurm_available()
    if not ok and os.environ.get("SLURM_TESTS_REQUIRED") == "1":
        raise RuntimeError(f"SLURM_TESTS_REQUIRED=1 but {reason}")
    return pytest.mark.skipif(not ok, reason=reason)


# Mark tests (or a module, via `pytestmark`) that need a running cluster.
requires_slurm = _requires_slurm()


def venv_env() -> dict[str, str]:
    """This process's environment with its interpreter's bin/ first on PATH.

    Jobs inherit the submitter's environment (sbatch exports it all), so a
    subprocess started with this, and the jobs it submits, find this venv's
    python and console scripts. submitit itself runs jobs with sys.executable.
    """
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def make_executor(folder: Path, **parameters):
    """A submitit executor for short test jobs on the local cluster.

    timeout_min=60 on purpose: submitit treats a preemption signal in any job
    shorter than 50 minutes as a timeout (README.md here).
    """
    import submitit

    executor = submitit.AutoExecutor(folder=Path(folder) / "%j", cluster="slurm")
    executor.update_parameters(
        slurm_partition=PARTITION, timeout_min=60, mem_gb=1, cpus_per_task=1, **parameters
    )
    return executor


def wait_for_state(job_id: str, wanted: str = "COMPLETED", timeout: float = 60) -> str:
    """Wait until sacct reports `wanted` for the job, and return the state.

    sacct lags a job by 1-3 s, so a test that checks a state right after
    job.result() has to poll. For an array's id this waits for all its tasks.
    Raises AssertionError at once when the job ends in another state.
    """
    deadline = time.monotonic() + timeout
    states: list[str] = []
    while time.monotonic() < deadline:
        ok, out = _run("sacct", "--noheader", "--allocations", "--parsable2",
                       "--jobs", str(job_id), "--format", "State")
        # "CANCELLED by 0" -> "CANCELLED"
        states = [line.split()[0] for line in out.splitlines() if line.strip()] if ok else []
        if states and all(s == wanted for s in states):
            return wanted
        ended = [s for s in states if s in FINAL_STATES and s != wanted]
        if ended:
            raise AssertionError(f"job {job_id} ended {ended[0]}, not {wanted}; see `sacct -j {job_id}` and its logs")
        time.sleep(0.5)
    raise TimeoutError(
        f"job {job_id} is {states or 'not in sacct'} after {timeout:.0f} s, not {wanted}; "
        f"see `sacct -j {job_id}` and `squeue`"
    )
