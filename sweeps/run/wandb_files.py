"""wandb's local run files read back without wandb's servers: `run-<id>.wandb` in each attempt's directory
(`offline-run-<time>-<id>/` in offline mode, `run-<time>-<id>/` online), the transaction log that `wandb sync`
uploads. It is a LevelDB-style log (32 KiB blocks of CRC-checked chunks after a 7-byte ":W&B" header) of
wandb's `Record` protocol buffers, whose definitions ship with the wandb package; a torn tail (a process
killed mid-write) ends the read.

`read_runs(directory)` merges the attempts of each run id in the order they started, the way the server
does when `wandb sync` uploads them: a step is kept from the first attempt that logged it, summaries are
applied in order, the last attempt's exit code stands."""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

HEADER = struct.pack("<4sHB", b":W&B", 0xBEE1, 0)
BLOCK = 32 * 1024
CHUNK = struct.Struct("<IHB")  # CRC-32, length, kind
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


@dataclass
class Attempt:
    """One process's record of a run: one run-<id>.wandb file."""

    path: Path
    run_id: str | None = None
    project: str | None = None
    group: str | None = None
    name: str | None = None
    start_time: float = 0.0
    config: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    history: dict = field(default_factory=dict)  # step -> the row logged at that step
    exit_code: int | None = None  # None: the attempt ended without an exit record (killed)


@dataclass
class Run:
    """A run as the server would hold it after `wandb sync` of all its attempts (`id` and `summary` as in the
    public API's Run objects)."""

    id: str
    project: str | None
    group: str | None
    name: str | None
    config: dict
    summary: dict
    history: dict
    attempts: list[Attempt]

    @property
    def exit_code(self) -> int | None:
        return self.attempts[-1].exit_code


def records(path: Path):
    """The Record messages of one .wandb file, in order; stops at the first torn or corrupt chunk."""
    from wandb.proto import wandb_internal_pb2

    data = Path(path).read_bytes()
    if not data.startswith(HEADER[:4]):
        raise ValueError(f"{path} is not a wandb transaction log")
    position, pieces = len(HEADER), []
    while position + CHUNK.size <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < CHUNK.size:  # the writer pads the end of a block with zeros
            position += left_in_block
            continue
        checksum, length, kind = CHUNK.unpack_from(data, position)
        payload = data[position + CHUNK.size:position + CHUNK.size + length]
        if kind == 0 or len(payload) < length or zlib.crc32(payload, zlib.crc32(bytes([kind]))) != checksum:
            return
        position += CHUNK.size + length
        if kind in (FULL, FIRST):
            pieces = [payload]
        else:
            pieces.append(payload)
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(b"".join(pieces))
            yield record


def _path_of(item) -> list[str]:
    return [item.key] if item.key else list(item.nested_key)


def _set(target: dict, path: list[str], value) -> None:
    for key in path[:-1]:
        target = target.setdefault(key, {})
    target[path[-1]] = value


def _update(target: dict, items) -> None:
    """Sets each item's (possibly nested) key in ``target`` to its JSON value."""
    for item in items:
        _set(target, _path_of(item), json.loads(item.value_json))


def _remove(target: dict, items) -> None:
    for item in items:
        path = _path_of(item)
        parent = target
        for key in path[:-1]:
            parent = parent.get(key, {})
        parent.pop(path[-1], None)


def _read_run_record(attempt: Attempt, run) -> None:
    attempt.run_id, attempt.project = run.run_id, run.project
    attempt.group, attempt.name = run.run_group or None, run.display_name or None
    attempt.start_time = run.start_time.seconds + run.start_time.nanos / 1e9
    _update(attempt.config, run.config.update)


def _read_history_record(attempt: Attempt, history) -> None:
    row = {}
    _update(row, history.item)
    if "_step" in row:
        attempt.history[int(row["_step"])] = row


def read_attempt(path: Path) -> Attempt:
    attempt = Attempt(Path(path))
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            _read_run_record(attempt, record.run)
        elif kind == "config":
            _update(attempt.config, record.config.update)
        elif kind == "history":
            _read_history_record(attempt, record.history)
        elif kind == "summary":
            _update(attempt.summary, record.summary.update)
            _remove(attempt.summary, record.summary.remove)
        elif kind == "exit":
            attempt.exit_code = record.exit.exit_code
    return attempt


def read_runs(directory: str | Path, pattern: str = "*run-*/run-*.wandb") -> list[Run]:
    """Every run below `directory` (searched recursively), its attempts merged, sorted by id."""
    attempts = [read_attempt(path) for path in sorted(Path(directory).rglob(pattern))]
    by_id: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        if attempt.run_id:  # an attempt killed before wandb wrote anything has no run record
            by_id.setdefault(attempt.run_id, []).append(attempt)
    runs = []
    for run_id, group in sorted(by_id.items()):
        group.sort(key=lambda attempt: attempt.start_time)
        config, summary, history = {}, {}, {}
        for attempt in group:
            config.update(attempt.config)
            summary.update(attempt.summary)
            for step, row in attempt.history.items():
                history.setdefault(step, row)
        last = group[-1]
        runs.append(Run(run_id, last.project, last.group, last.name, config, summary,
                        dict(sorted(history.items())), group))
    return runs


def last_step(directory: str | Path, run_id: str, exclude: Path | None = None) -> int:
    """The highest step any earlier offline attempt of `run_id` below `directory` wrote (0 if none)."""
    steps = [0]
    for path in Path(directory).glob(f"offline-run-*-{run_id}/run-{run_id}.wandb"):
        if exclude is None or path.parent.resolve() != Path(exclude).resolve():
            steps += list(read_attempt(path).history)
    return max(steps)
