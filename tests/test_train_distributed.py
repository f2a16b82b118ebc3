"""Two processes on CPU (gloo) train the same loss curve as one process that accumulates the same global
batch: started by torchrun with DDP and with FSDP2 (fully_shard, which runs on CPU too), and started the way
srun starts one task per GPU (SLURM_* variables only), under submitit or directly (the resume test)."""

import signal
import socket
import subprocess
import sys
import time

import pytest

from sweeps.run.checkpoint import latest_checkpoint
from sweeps.run.loop import train
from sweeps.run.tracking import read_metrics

from train_helpers import REPO, child_env, tiny_config, tiny_overrides

STEPS = 12
# Global batch 8 in micro-batches of 4: one process accumulates two, two processes take one each.
BATCH = ["global_batch_size=8", "micro_batch_size=4", "parscale_n=2", f"tokens={STEPS * 8 * 32}"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("single") / "run"
    train(tiny_config(run_dir, STEPS, *BATCH))
    return read_metrics(run_dir / "metrics.jsonl")


def launch_torchrun(arguments: list[str]) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(free_port()), "-m", "sweeps.train", *arguments],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=300,
    )
    return done.returncode, done.stdout + done.stderr


def start_like_srun(arguments: list[str], submitit: bool = False) -> list[subprocess.Popen]:
    """Two tasks with the variables srun gives each task (and, under submitit, its executor marker)."""
    slurm = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "2", "SLURM_JOB_NUM_NODES": "1", "SLURM_NODEID": "0",
             "SLURM_JOB_NODELIST": "localhost", "MASTER_PORT": str(free_port())}
    if submitit:
        slurm["SUBMITIT_EXECUTOR"] = "slurm"
    return [
        subprocess.Popen(
            [sys.executable, "-m", "sweeps.train", *arguments], cwd=REPO, text=True,
            env=child_env(**slurm, SLURM_PROCID=str(rank), SLURM_LOCALID=str(rank)),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        for rank in range(2)
    ]


def wait_for(tasks: list[subprocess.Popen]) -> tuple[int, str]:
    outputs = [task.communicate(timeout=300)[0] for task in tasks]
    return max(task.returncode for task in tasks), "".join(outputs)


def launch_like_submitit(arguments: list[str]) -> tuple[int, str]:
    return wait_for(start_like_srun(arguments, submitit=True))


@pytest.mark.slow
@pytest.mark.parametrize("launcher, strategy", [(launch_torchrun, "ddp"), (launch_torchrun, "fsdp"),
                                                (launch_like_submitit, "ddp")])
def test_two_processes_match_one_process(tmp_path, one_process, launcher, strategy):
    reference_rows = one_process
    run_dir = tmp_path / "run"
    overrides = [item for item in tiny_overrides(run_dir, STEPS, *BATCH) if not item.startswith("run_dir=")]
    returncode, output = launcher([*overrides, f"strategy={strategy}", f"hydra.run.dir={run_dir}"])
    assert returncode == 0, output[-4000:]
    assert f"2 process(es) ({strategy}) x 1 micro-batch(es)" in output
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == [row["step"] for row in reference_rows] == list(range(1, STEPS + 1))
    for row, expected in zip(rows, reference_rows, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=1e-5)
        assert row.get("eval_loss", 0.0) == pytest.approx(expected.get("eval_loss", 0.0), abs=1e-5)
    assert output.count("done:") == 1  # only rank 0 reports


@pytest.mark.slow
def test_two_processes_save_and_one_process_resumes_on_the_same_curve(tmp_path):
    """SIGUSR1 reaches rank 1 only: both FSDP processes agree to stop after the same step and save one sharded
    checkpoint (each process its own shard). One process then resumes it, at another micro-batch size (the
    plan may change it between attempts), and its loss curve continues an uninterrupted run's."""
    steps = 60
    tokens = f"tokens={steps * 8 * 32}"
    reference_dir = tmp_path / "reference"
    reference = train(tiny_config(reference_dir, steps, *BATCH[:-1], tokens))
    reference_rows = read_metrics(reference_dir / "metrics.jsonl")
    run_dir = tmp_path / "run"
    overrides = [item for item in tiny_overrides(run_dir, steps, *BATCH[:-1], tokens)
                 if not item.startswith("run_dir=")]
    tasks = start_like_srun([*overrides, "strategy=fsdp", "checkpoint_interval=1000", f"hydra.run.dir={run_dir}"])
    metrics = run_dir / "metrics.jsonl"
    while tasks[1].poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 20):
        time.sleep(0.005)
    tasks[1].send_signal(signal.SIGUSR1)
    returncode, output = wait_for(tasks)
    assert [task.returncode for task in tasks] == [128 + signal.SIGUSR1] * 2, output[-3000:]
    saved = latest_checkpoint(run_dir)
    assert saved is not None and {path.name for path in saved.glob("rank-*.pt")} == {"rank-0.pt", "rank-1.pt"}
    assert len(list(saved.glob("*.distcp"))) == 2  # each process wrote its own shard

    resumed = train(tiny_config(run_dir, steps, *BATCH[:-1], tokens, "micro_batch_size=2", "strategy=fsdp"))
    assert resumed["loss"] == pytest.approx(reference["loss"], abs=1e-5)
    assert resumed["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-5)
    rows = read_metrics(metrics)
    assert [row["step"] for row in rows] == list(range(1, steps + 1))
    for row, expected in zip(rows, reference_rows, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=1e-5)
