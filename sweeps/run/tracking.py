"""What a run reports: metrics.jsonl in the run dir (the record), a progress line on stdout, and wandb.

wandb is best effort: if it is not installed, cannot reach its server, or rejects the key, one warning is
printed and the run goes on with metrics.jsonl alone. Only the main process reports.

Requeued attempts continue one wandb run. Its id is the cell's `run_id`, so online an attempt resumes the
same run (resume="allow"). Offline, each attempt writes its own directory under RUN_DIR/wandb/
(`offline-run-<time>-<run_id>`), all with that id, and one command uploads them as one run, in the order
they started:

    wandb sync RUN_DIR/wandb/offline-run-*            # one cell
    wandb sync SWEEP_DIR/*/wandb/offline-run-*        # a whole grid, one run per cell

Either way every step reaches wandb once: an attempt first sends the steps of metrics.jsonl that the run
does not have yet (an attempt killed hard loses what wandb had not written out), then trains on, and never
sends a step the run already has (steps logged after the last checkpoint by an attempt that then stopped
stay as that attempt logged them, as online). The finished run's results-table row is its summary's
`result` (not the top level, where wandb keeps each metric's last logged value: `loss` there is the last
step's raw loss); `python -m sweeps.collect` reads it from the API or from these files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sweeps.files import atomic_write_text
from sweeps.run.config import WandbConfig
from sweeps.run.wandb_files import last_step


class MetricsLog:
    """metrics.jsonl: one JSON object per optimiser step."""

    def __init__(self, path: Path, resume_step: int):
        self.path = path
        # Steps after the checkpoint were logged by an attempt that stopped before its next checkpoint; they
        # are trained again, so drop them (and a torn last line) to keep every step exactly once.
        if path.exists():
            kept = []
            for line in path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        kept.append(line + "\n")
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue
            atomic_write_text(path, "".join(kept))

    def append(self, row: dict) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


class WandbLogger:
    def __init__(self, config: WandbConfig, run_dir: Path, run_id: str, run_config: dict):
        self.run, self.first_step = None, 1  # steps below first_step are in the wandb run already
        if config.mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(
                project=config.project,
                group=config.group,
                name=config.name,
                id=run_id,
                resume="allow",
                mode=config.mode,
                dir=str(run_dir),
                config=run_config,
                # The git revision is in run_config; wandb's own git probe would shell out to git.
                settings=wandb.Settings(init_timeout=config.init_timeout_s, disable_git=True, console="off"),
            )
            if config.mode == "offline":
                self.first_step = last_step(Path(run_dir) / "wandb", run_id, exclude=Path(self.run.dir).parent) + 1
            else:
                self.first_step = max(1, self.run.step)
            metrics = Path(run_dir) / "metrics.jsonl"
            for row in read_metrics(metrics) if metrics.exists() else []:  # what earlier attempts did not send
                self.log(row, row["step"])
        except Exception as error:  # wandb raises several types for network, key and setup problems
            self._give_up(error)

    def log(self, row: dict, step: int) -> None:
        if self.run is None or step < self.first_step:
            return
        try:
            self.run.log(row, step=step)
        except Exception as error:
            self._give_up(error)

    def finish(self, summary: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.summary["result"] = summary
            self.run.finish()
        except Exception as error:
            self._give_up(error)

    def _give_up(self, error: Exception) -> None:
        self.run = None
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        print(
            f"warning: wandb is off for this run ({type(error).__name__}: {reason}); training continues and "
            "metrics.jsonl in the run dir has every step",
            file=sys.stderr,
            flush=True,
        )


def progress_line(row: dict, total_steps: int, eta_s: float) -> str:
    text = (
        f"step {row['step']}/{total_steps} | {row['tokens'] / 1e6:.2f}M tok | loss {row['loss']:.4f} "
        f"(smoothed {row['smoothed_loss']:.4f}) | lr {row['lr']:.2e} | {row['tokens_per_s']:,.0f} tok/s | "
        f"mem {row['memory_gb']:.2f} GB | eta {_duration(eta_s)}"
    )
    if "eval_loss" in row:
        text += f" | eval {row['eval_loss']:.4f}"
    return text


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def git_revision() -> str:
    """The checkout's commit, read from .git directly (no git executable needed); "unknown" outside a clone."""
    git_dir = Path(__file__).resolve().parents[1] / ".git"
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        if (git_dir / ref).exists():
            return (git_dir / ref).read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split()[0]
    except OSError:
        pass
    return "unknown"
