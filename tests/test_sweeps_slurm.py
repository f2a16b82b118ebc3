"""The sweep launcher against a real SLURM cluster (tests/slurm/slurm_local.sh; CI starts one): a 2 x 2
tiny grid as a job array, a preempted cell that resumes from its checkpoint, and a relaunch that runs only
the cell that was killed."""

import json
import random
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm.cluster import PARTITION, requires_slurm, venv_env, wait_for_state

from parscale_law import read_results
from sweeps.run.tracking import read_metrics

pytestmark = requires_slurm

ON_LOCAL_CLUSTER = [
    "hydra/launcher=parscale_slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.tasks_per_node=1",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    # >= 50 minutes: submitit counts a warning signal in a shorter job as a timeout (tests/slurm/README.md)
    "hydra.launcher.timeout_min=60",
    "hydra.launcher.signal_delay_s=60",
    "hydra.callbacks.report.n_bootstrap=50",
]


def launch(cwd: Path, *overrides: str, timeout: float = 600) -> subprocess.CompletedProcess:
    given = {item.partition("=")[0] for item in overrides}
    defaults = [item for item in ON_LOCAL_CLUSTER if item.partition("=")[0] not in given]  # a test's own wins
    return subprocess.run(
        [sys.executable, "-m", "sweeps.launch", *defaults, *overrides],
        # One math thread per job: the jobs share this machine's cores with each other and the test.
        cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**venv_env(), "OMP_NUM_THREADS": "1"},
    )


def wait_for(path: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, (f"{path} did not appear within {timeout:.0f} s; "
                                             "see the sweep's .submitit logs")
        time.sleep(0.5)


def outcomes(cell: Path, timeout: float = 60) -> list[str | None]:
    """The outcome of each attempt of a cell, once the last has one: the job records it just after the run
    writes result.json, so a test that saw result.json may read attempts.json a moment too early."""
    deadline = time.monotonic() + timeout
    while True:
        entries = json.loads((cell / "attempts.json").read_text())
        if entries and "outcome" in entries[-1] or time.monotonic() > deadline:
            return [entry.get("outcome") for entry in entries]
        time.sleep(0.2)


def steps_of(metrics: Path) -> list[int]:
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines()]


def test_two_by_two_grid_as_a_job_array(tmp_path):
    done = launch(tmp_path, "+grid=pile", "scale=smoke", "scale.sizes='tiny-96,tiny-128'", "sweep.wait=true")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submitted 4 of 4 cells as SLURM job array" in done.stdout
    sweep_dir = tmp_path / "multirun" / "pile-smoke"
    table = read_results(sweep_dir / "results.csv")
    assert len(table) == 4 and set(table["P"]) == {1, 2} and set(table["size"]) == {"tiny-96", "tiny-128"}
    array_id = next(iter(json.loads((sweep_dir / "jobs.json").read_text()).values())).split("_")[0]
    wait_for_state(array_id, "COMPLETED", timeout=60)


def test_preempted_cell_resumes_from_its_checkpoint(tmp_path):
    import submitit

    # 240 steps of 16 x 64 tokens, no periodic checkpoint: a resume can only start from the one saved on the signal.
    overrides = ["+grid=stack", "scale=smoke", "scale.sizes=tiny-96", "scale.P=1", "tokens=245760",
                 "checkpoint_interval=100000", "eval_interval=100000"]
    done = launch(tmp_path, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "stack-smoke"
    cell = sweep_dir / "tiny-96-P1-s0"
    job_id = json.loads((sweep_dir / "jobs.json").read_text())["tiny-96-P1-s0"]
    wait_for(cell / "metrics.jsonl")
    deadline = time.monotonic() + 120
    while len(steps_of(cell / "metrics.jsonl")) < 10:
        assert time.monotonic() < deadline, "the cell did not reach step 10"
        time.sleep(0.2)
    # What SLURM sends before a time limit or preemption (USR2 to the job, as `job._interrupt` does).
    submitit.SlurmJob(folder=sweep_dir / ".submitit" / "%j", job_id=job_id)._interrupt(timeout=True)
    wait_for(cell / "result.json", timeout=400)
    steps = steps_of(cell / "metrics.jsonl")
    assert steps == list(range(1, 241))  # no step lost, none repeated
    logs = "".join(path.read_text() for path in (sweep_dir / ".submitit").rglob("*_log.out"))
    resumed = [int(step) for step in re.findall(r"resuming at step (\d+)", logs)]
    assert len(resumed) == 1 and resumed[0] >= 10, logs[-2000:]


@pytest.mark.slow
def test_a_two_task_cell_is_preempted_requeued_and_ends_on_the_uninterrupted_curve(tmp_path):
    """Two tasks of one job (gloo; torch.distributed's variables from submitit's SLURM environment, as on a
    multi-node cell) save their shards on the warning signal, are requeued and resume; a second job with the
    same config, never interrupted, is the reference."""
    import submitit

    # 120 steps of 16 x 64 tokens, one micro-batch of 8 per task, no periodic checkpoint: a resume can only
    # start from the one saved on the signal.
    overrides = ["+grid=stack", "scale=smoke", "scale.sizes=tiny-96", "scale.P=1", "tokens=122880",
                 "micro_batch_size=8", "checkpoint_interval=100000", "eval_interval=100000",
                 "hydra.launcher.tasks_per_node=2"]
    cells = {}
    for name in ("preempted", "reference"):
        done = launch(tmp_path, *overrides, f"hydra.sweep.dir={tmp_path / name}")
        assert done.returncode == 0, done.stderr[-3000:]
        cells[name] = tmp_path / name / "tiny-96-P1-s0"
    sweep_dir = tmp_path / "preempted"
    job_id = json.loads((sweep_dir / "jobs.json").read_text())["tiny-96-P1-s0"]
    metrics = cells["preempted"] / "metrics.jsonl"
    wait_for(metrics)
    deadline = time.monotonic() + 120
    while len(steps_of(metrics)) < 10:
        assert time.monotonic() < deadline, "the cell did not reach step 10"
        time.sleep(0.2)
    submitit.SlurmJob(folder=sweep_dir / ".submitit" / "%j", job_id=job_id)._interrupt(timeout=True)
    for cell in cells.values():
        wait_for(cell / "result.json", timeout=400)
    assert steps_of(metrics) == list(range(1, 121))  # no step lost, none repeated
    assert outcomes(cells["preempted"]) == ["stopped", "done"]
    logs = "".join(path.read_text() for path in (sweep_dir / ".submitit").rglob("*_log.out"))
    resumed = re.findall(r"resuming at step (\d+): .* (\d) process\(es\)", logs)
    assert len(resumed) == 1 and int(resumed[0][0]) >= 10 and resumed[0][1] == "2", logs[-2000:]
    assert len(list((cells["preempted"] / "model").glob("*.safetensors"))) == 1
    rows, reference_rows = (read_metrics(cell / "metrics.jsonl") for cell in (cells["preempted"], cells["reference"]))
    for row, expected in zip(rows, reference_rows, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=1e-5)
    result, reference = (json.loads((cell / "result.json").read_text()) for cell in cells.values())
    for key in ("final_train_loss", "loss", "eval_loss"):
        assert result[key] == pytest.approx(reference[key], abs=1e-5), key


def test_relaunch_runs_only_the_killed_cell(tmp_path):
    overrides = ["+grid=pile", "scale=smoke", "scale.sizes=tiny-96", "tokens=81920"]
    done = launch(tmp_path, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "pile-smoke"
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    subprocess.run(["scancel", jobs["tiny-96-P2-s0"]], check=True)
    wait_for(sweep_dir / "tiny-96-P1-s0" / "result.json")
    assert not (sweep_dir / "tiny-96-P2-s0" / "result.json").exists()

    again = launch(tmp_path, *overrides, "sweep.wait=true")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "submitted 1 of 2 cells" in again.stdout
    assert list(json.loads((sweep_dir / "jobs.json").read_text())) == ["tiny-96-P2-s0"]
    assert len(read_results(sweep_dir / "results.csv")) == 2


@pytest.mark.slow
def test_a_waiting_grid_finishes_when_its_jobs_are_cancelled_or_requeued(tmp_path):
    """4 cells; once they have checkpoints, one job is cancelled (scancel: it leaves the queue, and the waiting
    launcher submits its cell again) and one requeued from outside (scontrol requeue: SLURM runs it again).
    Both resume, and every cell ends as the same grid run undisturbed on this machine meanwhile (one math
    thread per cell, as in the jobs: the thread count moves the last digits)."""
    grid = ["+grid=pile", "scale=smoke", "scale.sizes='tiny-32,tiny-48'", "tokens=40960", "checkpoint_interval=5",
            "hydra.callbacks.report.n_bootstrap=50"]  # 40 steps, P = 1 and 2
    sweep_dir = tmp_path / "slurm"
    waiting = subprocess.Popen([sys.executable, "-m", "sweeps.launch", *ON_LOCAL_CLUSTER, *grid, "sweep.wait=true",
                                f"hydra.sweep.dir={sweep_dir}"], cwd=tmp_path, text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, env={**venv_env(), "OMP_NUM_THREADS": "1"})
    undisturbed = subprocess.Popen([sys.executable, "-m", "sweeps.launch", *grid, "hydra.launcher.parallel=2",
                                    f"hydra.sweep.dir={tmp_path / 'local'}"], cwd=tmp_path, text=True,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=venv_env())
    wait_for(sweep_dir / "jobs.json", timeout=120)
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    order = random.Random(0).sample(sorted(jobs), len(jobs))
    cancelled = disturb_a_training_cell(sweep_dir, order, ["scancel"], jobs)
    requeued = disturb_a_training_cell(sweep_dir, [name for name in order if name != cancelled],
                                       ["scontrol", "requeue"], jobs)
    output = waiting.communicate(timeout=600)[0]
    assert waiting.returncode == 0, output[-3000:]
    assert f"{cancelled}: its job {jobs[cancelled]} left the queue" in output, output[-3000:]
    assert output.count("submitted again as job") == 1, output[-3000:]
    reference_output = undisturbed.communicate(timeout=600)[0]
    assert undisturbed.returncode == 0, reference_output[-3000:]
    for name in jobs:
        cell, reference = sweep_dir / name, tmp_path / "local" / name
        assert steps_of(cell / "metrics.jsonl") == list(range(1, 41)), name  # none lost, none repeated
        result, expected = (json.loads((path / "result.json").read_text()) for path in (cell, reference))
        for key in ("final_train_loss", "loss", "eval_loss"):
            assert result[key] == pytest.approx(expected[key], abs=1e-5), (name, key)
    for name in (cancelled, requeued):
        assert len(json.loads((sweep_dir / name / "attempts.json").read_text())) == 2, name


def disturb_a_training_cell(sweep_dir: Path, order: list[str], command: list[str], jobs: dict) -> str:
    """Runs `command JOB` on the job of the first cell in `order` found training with a checkpoint saved."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for name in order:
            cell = sweep_dir / name
            if list(cell.glob("checkpoints/step-*/meta.json")) and not (cell / "result.json").exists():
                subprocess.run([*command, jobs[name]], check=True)
                return name
        time.sleep(0.1)
    raise AssertionError(f"no cell of {sweep_dir} was found training with a checkpoint within 300 s")


def test_a_crashing_cell_requeues_itself_then_is_marked_failed(tmp_path):
    # A loss that turns NaN at step 2 crashes every attempt: the job requeues itself once (scontrol requeue),
    # then the cell is failed with the error's last line after its second failed attempt.
    overrides = ["+grid=pile", "scale=smoke", "scale.sizes=tiny-32", "scale.P=1", "optim.lr=1e30",
                 "optim.warmup_fraction=0", "sweep.max_failures=2"]
    done = launch(tmp_path, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    cell = tmp_path / "multirun" / "pile-smoke" / "tiny-32-P1-s0"
    wait_for(cell / "error.txt", timeout=400)
    attempts = json.loads((cell / "attempts.json").read_text())
    assert [entry["outcome"] for entry in attempts] == ["failed", "failed"]
    assert "the training loss is nan" in attempts[-1]["error"]
    status = subprocess.run([sys.executable, "-m", "sweeps.status", str(cell.parent)], capture_output=True, text=True,
                            env=venv_env())
    line = next(line for line in status.stdout.splitlines() if line.startswith("tiny-32-P1-s0"))
    assert "failed" in line and "attempts 2 (2 failed)" in line


def test_the_paper_grid_refuses_unprepared_hub_data_before_submitting(tmp_path):
    done = launch(tmp_path, "+grid=pile", "scale.sizes=0.5B", "scale.P=1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cell 0.5B-P1-s0" in lines[0] and "python -m sweeps.prepare data=pile" in lines[0]
    assert not (tmp_path / "multirun" / "pile-paper" / "jobs.json").exists()


def test_two_stage_grid_stage2_waits_for_its_preempted_and_requeued_stage1(tmp_path):
    import submitit

    # 160 steps of 16 x 64 tokens, the last quarter stage 2: stage 1 trains 120 (no periodic checkpoint, so a
    # resume can only start from the one saved on the signal); then the P = 1 and P = 2 stage 2s, 40 each.
    overrides = ["+grid=pile", "scale=smoke", "scale.sizes=tiny-96", "tokens=163840", "stage2_fraction=0.25",
                 "checkpoint_interval=100000", "eval_interval=100000"]
    done = launch(tmp_path, *overrides)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "submitted 3 of 3 cells" in done.stdout and "stage-2 arrays wait for their stage-1 jobs" in done.stdout
    sweep_dir = tmp_path / "multirun" / "pile-smoke"
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    stage1 = sweep_dir / "tiny-96-P1-s0-stage1"
    wait_for(stage1 / "metrics.jsonl")
    deadline = time.monotonic() + 120
    while len(steps_of(stage1 / "metrics.jsonl")) < 10:
        assert time.monotonic() < deadline, "stage 1 did not reach step 10"
        time.sleep(0.2)
    waiting = subprocess.run(["squeue", "-h", "-j", jobs["tiny-96-P2-s0-F0.25"], "-o", "%r"],
                             capture_output=True, text=True)
    assert waiting.stdout.strip() == "Dependency", waiting.stdout + waiting.stderr
    # Preempted (what SLURM sends before a time limit): stage 1 saves, submitit requeues it, and it resumes.
    submitit.SlurmJob(folder=sweep_dir / ".submitit" / "%j",
                      job_id=jobs["tiny-96-P1-s0-stage1"])._interrupt(timeout=True)
    for P in (1, 2):
        wait_for(sweep_dir / f"tiny-96-P{P}-s0-F0.25" / "result.json", timeout=500)
    assert steps_of(stage1 / "metrics.jsonl") == list(range(1, 121))  # no step lost, none repeated
    assert outcomes(stage1) == ["stopped", "done"]
    finished = (stage1 / "result.json").stat().st_mtime
    for P in (1, 2):
        cell = sweep_dir / f"tiny-96-P{P}-s0-F0.25"
        attempts = json.loads((cell / "attempts.json").read_text())
        assert len(attempts) == 1 and attempts[0]["started"] >= finished, (
            "a stage-2 job started before stage 1 finished")
        assert steps_of(cell / "metrics.jsonl") == list(range(121, 161))
    report = subprocess.run([sys.executable, "-m", "sweeps.report", str(sweep_dir), "--bootstrap", "20"],
                            capture_output=True, text=True, env=venv_env())
    assert "3 done" in report.stdout and len(read_results(sweep_dir / "results.csv")) == 2
