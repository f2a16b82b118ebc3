"""The cells of a sweep on disk: each cell (one training run) owns a directory under the sweep directory,
and the sweep directory holds `sweep.json`, the manifest the launcher writes before running anything.

A cell's state is read from the files the training job writes (see sweeps/run/loop.py):

    done     result.json exists (written last, atomically)
    failed   error.txt exists (written when a cell has failed `sweep.max_failures` times; a relaunch removes it)
    running  metrics.jsonl or checkpoints/ exists: started and not finished (on a cluster it may also be
             waiting in the queue after a preemption; `updated` says when it last wrote a step)
    pending  nothing written yet (a stage-2 cell: also waiting for its stage 1, which `detail` names)
    blocked  a stage-2 cell that has not started and whose stage-1 cell failed: it cannot run until a
             relaunch trains that stage 1
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omegaconf import OmegaConf, open_dict

from sweeps.errors import ConfigError
from sweeps.run.checkpoint import CHECKPOINTS
from sweeps.run.config import TrainConfig, from_mapping

MANIFEST = "sweep.json"
ERROR_FILE = "error.txt"
ATTEMPTS_FILE = "attempts.json"
STATES = ("pending", "running", "done", "failed", "blocked")


@dataclass
class Cell:
    """One run of the grid: its sub-directory name, the Hydra overrides that make it, and its stage in a
    two-stage grid (sweeps/grid/two_stage.py) with, for stage 2, the stage-1 cell it starts from."""

    name: str
    overrides: list[str]
    stage: int = 0
    after: str | None = None


@dataclass
class Manifest:
    grid: str
    scale: str
    dataset: str
    cells: list[Cell]
    launcher: str = ""
    created: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def read(cls, sweep_dir: Path) -> Manifest | None:
        path = Path(sweep_dir) / MANIFEST
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        data["cells"] = [Cell(**cell) for cell in data["cells"]]
        return cls(**data)


def check_sweep_dir(sweep_dir: Path) -> Path:
    """``sweep_dir`` if it is a sweep the launcher started (it holds sweep.json), else one line saying what it is."""
    sweep_dir = Path(sweep_dir)
    launch = "pass the folder python -m sweeps.launch printed (multirun/<grid>-<scale>)"
    if not sweep_dir.exists():
        raise ConfigError(f"{sweep_dir} does not exist; {launch}")
    if not sweep_dir.is_dir():
        raise ConfigError(f"{sweep_dir} is a file, not a sweep folder; {launch}")
    if not (sweep_dir / MANIFEST).exists():
        if (sweep_dir / "plan.json").exists():
            raise ConfigError(f"{sweep_dir} holds only a dry run's plan (plan.json), not a sweep: nothing was launched "
                              "there; launch the same command without sweep.dry_run=true")
        raise ConfigError(f"{sweep_dir} is not a sweep folder (no {MANIFEST}, which the launcher writes first); "
                          f"{launch}")
    return sweep_dir


@dataclass
class CellState:
    name: str
    state: str
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    detail: str = ""
    updated: float | None = None  # seconds since the epoch of the last file the run wrote
    attempts: int = 0
    failures: int = 0
    stage: int = 0  # in a two-stage grid: 1 or 2


class Attempts:
    """attempts.json in a cell's directory: one entry per start of the cell (a requeue, a relaunch, a retry
    after a crash), with how it ended: done, failed (with the error's last line), stopped (preempted or timed
    out: it saved a checkpoint and was requeued), or nothing yet (running, or killed without a word)."""

    def __init__(self, cell_dir: Path):
        self.path = Path(cell_dir) / ATTEMPTS_FILE

    def read(self) -> list[dict]:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []

    def start(self, job_id: str | None = None) -> None:
        entries = self.read()
        self._write([*entries, {"attempt": len(entries) + 1, "started": time.time(), "job_id": job_id}])

    def end(self, outcome: str, error: str = "") -> None:
        entries = self.read() or [{"attempt": 1, "started": None, "job_id": None}]
        if "outcome" in entries[-1]:
            return  # already ended (e.g. by the worker before its launcher saw it exit)
        entries[-1].update(outcome=outcome, ended=time.time(), **({"error": error} if error else {}))
        self._write(entries)

    def failures(self) -> int:
        return sum(entry.get("outcome") == "failed" for entry in self.read())

    def _write(self, entries: list[dict]) -> None:
        from sweeps.files import atomic_write_text

        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(entries, indent=1) + "\n")


def read_cell(cell_dir: Path) -> CellState:
    cell_dir = Path(cell_dir)
    state = _read_state(cell_dir)
    entries = Attempts(cell_dir).read()
    state.attempts = len(entries)
    state.failures = sum(entry.get("outcome") == "failed" for entry in entries)
    if not state.detail and entries and entries[-1].get("error") and state.state == "running":
        state.detail = f"requeued after: {entries[-1]['error']}"
    return state


def _read_state(cell_dir: Path) -> CellState:
    name = cell_dir.name
    result = cell_dir / "result.json"
    if result.exists():
        row = json.loads(result.read_text())
        return CellState(name, "done", loss=row.get("loss"), updated=result.stat().st_mtime)
    error = cell_dir / ERROR_FILE
    if error.exists():
        lines = error.read_text().strip().splitlines()
        return CellState(name, "failed", detail=lines[-1] if lines else "", updated=error.stat().st_mtime)
    metrics = cell_dir / "metrics.jsonl"
    if metrics.exists() or (cell_dir / CHECKPOINTS).exists():
        step = loss = None
        updated = None
        if metrics.exists():
            updated = metrics.stat().st_mtime
            for line in reversed(metrics.read_text().splitlines()):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                step, loss = row.get("step"), row.get("smoothed_loss", row.get("loss"))
                break
        return CellState(name, "running", step=step, total_steps=_total_steps(cell_dir), loss=loss, updated=updated)
    return CellState(name, "pending")


def _total_steps(cell_dir: Path) -> int | None:
    config = cell_dir / "config.yaml"
    if not config.exists():
        return None
    try:
        return from_mapping(OmegaConf.load(config)).total_steps
    except ConfigError:
        return None


def sweep_cells(sweep_dir: Path) -> list[CellState]:
    """Every cell of a sweep: those the manifest lists (pending ones too), else every sub-directory."""
    sweep_dir = Path(sweep_dir)
    manifest = Manifest.read(sweep_dir)
    if manifest is None:
        names = sorted(path.name for path in sweep_dir.iterdir() if path.is_dir() and not path.name.startswith("."))
        return [read_cell(sweep_dir / name) for name in names]
    states = {cell.name: read_cell(sweep_dir / cell.name) for cell in manifest.cells}
    for cell in manifest.cells:
        state = states[cell.name]
        state.stage = cell.stage
        stage1 = states.get(cell.after) if cell.after else None
        if stage1 is not None and state.state == "pending":
            if stage1.state == "failed":
                state.state, state.detail = "blocked", f"its stage 1, {cell.after}, failed"
            elif stage1.state != "done":
                state.detail = f"waits for {cell.after}"
    return list(states.values())


# Keys of the launcher's config that describe the grid rather than one run.
SWEEP_KEYS = ("grid", "scale", "sweep")


def cell_config(cfg, run_dir: str | Path | None = None) -> TrainConfig:
    """The TrainConfig of one cell from the launcher's composed config (Hydra's ``hydra`` node, if present,
    and the grid-level keys are dropped); ``run_dir`` replaces the one Hydra would set at run time."""
    cfg = cfg.copy()
    with open_dict(cfg):
        cfg.pop("hydra", None)
        if run_dir is not None:
            cfg.run_dir = str(run_dir)
    mapping = OmegaConf.to_container(cfg, resolve=True)
    for key in SWEEP_KEYS:
        mapping.pop(key, None)
    return from_mapping(mapping)
