"""Shared pieces of the training tests: a tiny config, a synthetic local corpus, and a way to run the app
in a child process. Kept small so that the whole tests/test_train*.py set runs in a few minutes on 2 cores."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import torch

from sweeps.run.config import load_config

# One thread: on a shared 2-core machine, torch's default thread pool spins against other processes and a
# tiny step slows down a hundredfold. The numbers do not depend on the thread count.
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]

# tiny-96 with rows of 32 tokens and 4 sequences per step: a step takes a few milliseconds.
TINY = [
    "model=tiny-96",
    "seq_len=32",
    "global_batch_size=4",
    "micro_batch_size=4",
    "eval_sequences=4",
    "eval_interval=5",
    "checkpoint_interval=5",
    "log_interval=1000",
    "wandb.mode=disabled",
]

WORDS = [
    "the", "a", "one", "two", "streams", "parallel", "model", "scale", "law", "loss", "token", "data", "python",
    "code", "train", "test", "run", "step", "learn", "weight", "sum", "mix", "prefix", "layer", "width", "depth",
    "grid", "cell", "budget", "batch", "signal", "resume",
]


def tiny_overrides(run_dir, steps: int, *overrides: str) -> list[str]:
    return [*TINY, f"tokens={steps * 4 * 32}", f"run_dir={run_dir}", *overrides]


def tiny_config(run_dir, steps: int, *overrides: str):
    return load_config(tiny_overrides(run_dir, steps, *overrides))


def write_corpus(directory: Path, files: int = 2, documents: int = 150, seed: int = 0) -> list[str]:
    """JSON-lines files of word-salad documents, the same on every machine and Python version."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(files):
        path = directory / f"part{index}.jsonl"
        with open(path, "w") as handle:
            for _ in range(documents):
                text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(10, 120)))
                handle.write(json.dumps({"text": text}) + "\n")
        paths.append(str(path))
    return paths


def corpus_overrides(paths: list[str]) -> list[str]:
    return ["data=jsonl", f"data.data_files=[{','.join(paths)}]"]


def child_env(**extra) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **extra}
    env.pop("RANK", None)
    # wandb exports its service's address once a run starts in this process; a child that inherited it would
    # share the service, and a run the child leaves open (it is killed) would still hold the run ID here.
    env.pop("WANDB_SERVICE", None)
    return env


def run_app(*arguments: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`python -m sweeps.train ARGUMENTS` in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "sweeps.train", *arguments],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=timeout,
    )
