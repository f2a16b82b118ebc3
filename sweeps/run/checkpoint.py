"""Sharded checkpoints, and stopping cleanly when the job is about to be preempted.

Checkpoints are torch.distributed.checkpoint (DCP) directories, one per saved step:

    checkpoints/step-00000500/   .metadata, __<rank>_0.distcp (each process writes its own shards),
                                 rank-<r>.pt (that process's data position and RNG), meta.json (step, loss EMA,
                                 elapsed time, run id, process count, micro-batch size, how long the save took)
    checkpoints/.step-00000600.tmp/   a save in progress (or interrupted): never read, removed on the next start

A save writes into the .tmp directory; once every process has written its part (DCP's metadata file is
written last, by rank 0, after gathering the others'), rank 0 renames it to step-N: a rename is atomic, so a
step-N directory is always whole, and an interrupted save never replaces a good checkpoint. The newest
`keep` complete checkpoints are kept. With `async_save`, DCP copies the state to host memory and writes it in
a background thread while training goes on (over a gloo group of its own, so its collectives never interleave
with the training's NCCL ones); the next save, a stop or the end of the run waits for it. Because the model
and optimiser state are saved as sharded tensors with their global shapes, a checkpoint loads into any number
of processes (DCP reshards on load)."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import time
import warnings
from pathlib import Path

from sweeps.files import atomic_write_text, replace_directory

CHECKPOINTS = "checkpoints"
META = "meta.json"


def step_directories(run_dir: Path, folder: str = CHECKPOINTS) -> list[Path]:
    """The run's step-N checkpoint directories (each made by renaming a finished save), oldest first."""
    root = Path(run_dir) / folder
    return sorted(root.glob("step-*")) if root.is_dir() else []


def complete_checkpoints(run_dir: Path, folder: str = CHECKPOINTS) -> list[Path]:
    """The run's complete checkpoint directories, oldest first."""
    return [path for path in step_directories(run_dir, folder) if (path / META).exists()]


def latest_checkpoint(run_dir: Path) -> Path | None:
    found = complete_checkpoints(run_dir)
    return found[-1] if found else None


def resumable_checkpoint(run_dir: Path) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The newest checkpoint that can be resumed from, and the newer ones that cannot, each with why. A step-N
    directory is only ever made by renaming a finished save, so one that fails these checks was damaged
    afterwards (a file lost or cut short on the shared file system); the previous one is still good."""
    damaged = []
    for path in reversed(step_directories(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            return path, damaged
        damaged.append((path, problem))
    return None, damaged


def checkpoint_problem(checkpoint_dir: Path) -> str | None:
    """Why a checkpoint directory cannot be loaded (None: it can): a file missing or unreadable, or a shard
    shorter than DCP's metadata says. Checked before loading, because a load that fails half way has already
    overwritten part of the model."""
    import torch
    from torch.distributed.checkpoint import FileSystemReader

    try:
        read_meta(checkpoint_dir)
        metadata = FileSystemReader(str(checkpoint_dir)).read_metadata()
    except Exception as error:  # a missing file, or whatever unpickling or parsing a torn one raises
        return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'unreadable'}"
    needed: dict[str, int] = {}  # bytes each shard file must hold
    for info in metadata.storage_data.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        path = Path(checkpoint_dir) / name
        if not path.exists():
            return f"{name} is missing"
        if path.stat().st_size < size:
            return f"{name} is cut short ({path.stat().st_size} of {size} bytes)"
    # rank-0.pt always exists (a missing one is damage); the other ranks' files as the save wrote them.
    for name in sorted({"rank-0.pt", *(path.name for path in Path(checkpoint_dir).glob("rank-*.pt"))}):
        path = Path(checkpoint_dir) / name
        try:
            torch.load(path, weights_only=True)
        except Exception as error:  # as above
            return f"{path.name}: {type(error).__name__}"
    return None


def read_meta(checkpoint_dir: Path) -> dict:
    return json.loads((Path(checkpoint_dir) / META).read_text())


class Checkpointer:
    """Saves and loads one run's checkpoints (see the module docstring); every process makes the same calls.
    `folder`: where in the run dir (a stage-1 run keeps its branch points apart, sweeps/run/stages.py); `keep`:
    the newest complete checkpoints kept, None for all."""

    def __init__(self, run_dir: Path, env, keep: int | None = 2, async_save: bool = True, folder: str = CHECKPOINTS):
        import torch.distributed as dist

        self.root = Path(run_dir) / folder
        self.env, self.keep = env, keep
        self.distributed = dist.is_initialized()
        self.async_save = async_save and self.distributed
        # DCP's background thread runs collectives of its own: a separate gloo group keeps them off NCCL.
        self.group = dist.new_group(backend="gloo") if self.async_save else None
        self.pending = None  # (future, temporary dir, final dir, meta, started)
        if env.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            for stale in self.root.glob(".step-*.tmp"):
                shutil.rmtree(stale, ignore_errors=True)
        self._barrier()

    def save(self, step: int, state: dict, rank_state: dict, meta: dict, blocking: bool = False) -> float:
        """Starts saving `state` (DCP: {"model": ..., "optimizer": ...}) and this process's `rank_state` as step
        `step`; returns the seconds training was blocked. Blocking saves are finished on return."""
        import torch
        import torch.distributed.checkpoint as dcp

        started = time.perf_counter()
        self.wait()
        temporary = self.root / f".step-{step:08d}.tmp"
        final = self.root / f"step-{step:08d}"
        if self.env.is_main:
            temporary.mkdir(parents=True, exist_ok=True)
        self._barrier()
        torch.save(rank_state, temporary / f"rank-{self.env.rank}.pt")
        if self.async_save and not blocking:
            future = dcp.async_save(state, checkpoint_id=str(temporary), process_group=self.group)
        else:
            with _single_process_quiet():
                dcp.save(state, checkpoint_id=str(temporary), no_dist=not self.distributed)
            future = None
        blocked_s = time.perf_counter() - started
        self.pending = (future, temporary, final, {**meta, "step": step, "blocked_s": blocked_s}, started)
        if future is None:
            self.wait()
        return blocked_s

    def poll(self) -> None:
        """Finishes an asynchronous save whose writes are done (cheap; call after every step)."""
        if self.pending is not None and self.pending[0] is not None and self.pending[0].done():
            self.wait()

    def wait(self) -> None:
        """Waits for the save in flight, if any, and moves it into place."""
        if self.pending is None:
            return
        future, temporary, final, meta, started = self.pending
        self.pending = None
        if future is not None:
            future.result()  # DCP's coordinator (rank 0) writes its metadata after every process has written
        if self.env.is_main:
            meta["save_s"] = time.perf_counter() - started
            atomic_write_text(temporary / META, json.dumps(meta, indent=1) + "\n")
            replace_directory(temporary, final)
            for old in complete_checkpoints(self.root.parent, self.root.name)[:-self.keep] if self.keep else []:
                shutil.rmtree(old, ignore_errors=True)

    def load(self, checkpoint_dir: Path, state: dict) -> dict:
        """Loads a checkpoint into `state` in place (resharding to this process count); returns this process's
        rank state: its own, or rank 0's when the checkpoint was written by fewer processes."""
        import torch
        import torch.distributed.checkpoint as dcp

        with _single_process_quiet():
            dcp.load(state, checkpoint_id=str(checkpoint_dir), no_dist=not self.distributed)
        own = Path(checkpoint_dir) / f"rank-{self.env.rank}.pt"
        return torch.load(own if own.exists() else Path(checkpoint_dir) / "rank-0.pt", weights_only=True)

    def remove_all(self) -> None:
        """Drops every checkpoint (the run has finished: its weights are in model/)."""
        self.wait()
        self._barrier()
        if self.env.is_main:
            shutil.rmtree(self.root, ignore_errors=True)

    def _barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()


@contextlib.contextmanager
def _single_process_quiet():
    """DCP warns on every single-process save and load that it assumes a single process, which is the point."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


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

    def __enter__(self) -> PreemptionGuard:
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
