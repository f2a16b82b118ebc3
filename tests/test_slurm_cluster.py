"""Integration tests against a real SLURM cluster: submitit jobs and arrays,
preemption with resume from a checkpoint, and a Hydra multirun through
hydra-submitit-launcher.

They are skipped when no cluster answers; start the local one with
`tests/slurm/slurm_local.sh start` (tests/slurm/README.md).
"""

import os
import subprocess
import sys
import time
import uuid

import pytest
from slurm.cluster import PARTITION, make_executor, requires_slurm, venv_env, wait_for_state

submitit = pytest.importorskip("submitit")
pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
import cloudpickle  # noqa: E402  (comes with submitit)

pytestmark = [requires_slurm, pytest.mark.slow, pytest.mark.timeout(120)]

# Jobs unpickle the functions they run. By reference, this module would have
# to be importable in the job, which it is not (tests/ is not on its path).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture
def job_name():
    """A name unique to the test; its jobs are cancelled at the end, should a failure leave any."""
    name = f"test-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["scancel", "--name", name], check=False)


@pytest.fixture
def executor(tmp_path, job_name):
    return make_executor(tmp_path / "submitit", name=job_name)


def double(x):
    return 2 * x, os.environ["SLURM_JOB_ID"], sys.executable


def square(x):
    return x * x, int(os.environ["SLURM_ARRAY_TASK_ID"])


class Counter(submitit.helpers.Checkpointable):
    """Counts n steps of 0.2 s. On preemption submitit pickles it, steps included,
    and requeues the job; the next run continues from there."""

    def __init__(self):
        self.steps = []  # (step, SLURM_RESTART_COUNT of the run that made it)

    def __call__(self, n, progress):
        run = int(os.environ.get("SLURM_RESTART_COUNT", "0"))
        while len(self.steps) < n:
            time.sleep(0.2)
            self.steps.append((len(self.steps), run))
            progress.write_text(f"{len(self.steps)}\n")
        return self.steps


def test_job_returns_its_result_and_sacct_says_completed(executor):
    job = executor.submit(double, 21)
    value, job_id, python = job.result()
    assert value == 42
    assert job_id == job.job_id
    assert python == sys.executable  # the job ran in this venv
    assert wait_for_state(job.job_id) == "COMPLETED"


def test_map_array_runs_one_array_job(executor):
    executor.update_parameters(slurm_array_parallelism=2)
    jobs = executor.map_array(square, range(4))
    assert [job.result() for job in jobs] == [(x * x, x) for x in range(4)]
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1
    for job in jobs:
        assert wait_for_state(job.job_id) == "COMPLETED"


def wait_until(condition, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout} s for {what}"
        time.sleep(0.2)


def test_preempted_job_resumes_from_its_checkpoint(executor, tmp_path):
    progress = tmp_path / "progress"
    job = executor.submit(Counter(), 40, progress)
    wait_until(lambda: progress.exists() and int(progress.read_text() or 0) >= 5,
               f"job {job.job_id} to make 5 steps; see {job.paths.stderr}")
    # Preemption as job._interrupt() simulates it: SIGTERM, which submitit ignores,
    # then USR2, which it answers with checkpoint + `scontrol requeue`. _interrupt()
    # sends both 10 ms apart, and slurmd sometimes delivers them swapped; the late
    # SIGTERM then kills that scontrol and the job fails. So: one at a time.
    # (An external `scontrol requeue` would rerun the job from scratch: README.md.)
    subprocess.run(["scancel", "--signal", "TERM", job.job_id], check=True)
    wait_until(lambda: "Bypassing signal SIGTERM" in (job.stderr() or ""),
               f"job {job.job_id} to receive SIGTERM; see {job.paths.stderr}")
    job._interrupt(timeout=True)  # USR2 alone
    steps = job.result()
    assert [step for step, _ in steps] == list(range(40))  # none lost, none repeated
    runs = [run for _, run in steps]
    assert runs == sorted(runs) and runs[0] == 0 and runs[-1] == 1, runs
    assert 5 <= runs.index(1) < 40
    assert wait_for_state(job.job_id) == "COMPLETED"


APP = """\
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base=None, config_path=".", config_name="config")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    (out / "product.txt").write_text(f"{cfg.a} {cfg.b} {cfg.a * cfg.b}")


if __name__ == "__main__":
    main()
"""


def test_hydra_multirun_over_a_2x2_grid(tmp_path, job_name):
    (tmp_path / "app.py").write_text(APP)
    (tmp_path / "config.yaml").write_text("a: 1\nb: 10\n")
    sweep_dir = tmp_path / "multirun"
    command = [
        sys.executable, "app.py", "--multirun", "hydra/launcher=submitit_slurm",
        f"hydra.sweep.dir={sweep_dir}",
        f"hydra.launcher.partition={PARTITION}",
        # Below 50 min any signal counts as a timeout, and the launcher's default
        # max_num_timeout=0 then refuses to requeue (README.md in tests/slurm).
        "hydra.launcher.timeout_min=60",
        "hydra.launcher.max_num_timeout=3",
        "hydra.launcher.mem_gb=1",
        f"hydra.launcher.name={job_name}",
        "a=1,2", "b=10,20",
    ]
    env = venv_env() | {"HYDRA_FULL_ERROR": "1"}
    run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=100)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    products = sorted(p.read_text() for p in sweep_dir.glob("*/product.txt"))
    assert products == ["1 10 10", "1 20 20", "2 10 20", "2 20 40"]
