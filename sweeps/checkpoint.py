"""Atomic files, checkpoints, and stopping cleanly when the job is about to be preempted.

Every file a restart trusts (config.yaml, checkpoint.pt, result.json, the exported model) is written to a
temporary name in the same directory and moved into place with os.replace, so a crash leaves either the old
file or the new one, never half of one. checkpoint.pt holds only tensors and plain containers, so it loads
with `torch.load(path, weights_only=True)`."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path


CHECKPOINT = "checkpoint.pt"


def atomic_write_text(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def save_checkpoint(run_dir: Path, state: dict) -> None:
    path = run_dir / CHECKPOINT
    temporary = path.with_name(f".{path.name}.tmp")
    import torch  # here, not at the top: the sweep launcher imports this module and needs no torch

    with open(temporary, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def load_checkpoint(run_dir: Path) -> dict | None:
    """The run's last checkpoint, or None. mmap: the processes of one node share the file's pages instead
    of each holding a copy of the full model and optimiser state."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    import torch

    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def replace_directory(temporary: Path, final: Path) -> None:
    """Moves a fully written directory into place (a leftover from an interrupted attempt is removed first)."""
    if final.exists():
        shutil.rmtree(final)
    os.replace(temporary, final)


class PreemptionGuard:
    """Turns SIGUSR1, SIGUSR2 and SIGTERM into a request to stop at the next step boundary.

    SLURM sends SIGUSR1/SIGUSR2 ahead of the time limit when asked (`--signal`) and SIGTERM on preemption or
    scancel; submitit installs a SIGUSR2 handler that checkpoints the job's callable, requeues the job and
    exits. A Python signal handler runs between two bytecodes, possibly in the middle of an optimiser step,
    so the handler installed here only records the signal. The training loop reads `signum` after every
    step (all processes agree on it), saves a checkpoint, and calls `stop`, which runs the handler that was
    installed before this one (submitit's: requeue, then exit on rank 0) and otherwise exits with status
    128 + signal. A restart with the same run dir resumes from that checkpoint.

    Handlers can only be installed from the main thread; elsewhere (a notebook's worker thread) the guard
    does nothing and signals keep their usual effect."""

    SIGNALS = (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM)

    def __init__(self):
        self.signum = 0
        self.previous: dict[int, object] = {}

    def _record(self, signum, frame):
        self.signum = self.signum or signum

    def __enter__(self) -> "PreemptionGuard":
        try:
            for signum in self.SIGNALS:
                self.previous[signum] = signal.signal(signum, self._record)
        except ValueError:  # not the main thread
            self._restore()
        return self

    def __exit__(self, *exc_info):
        self._restore()

    def _restore(self):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def stop(self, signum: int) -> None:
        previous = self.previous.get(signum)
        self._restore()
        if callable(previous):
            previous(signum, None)
        raise SystemExit(128 + signum)
