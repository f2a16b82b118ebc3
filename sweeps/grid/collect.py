"""The results table of a sweep, one row per finished run (the contract in parscale_law.table), from the cells'
result.json files (`python -m sweeps.collect`). Two other sources give the same rows
(each finished run stores its row in the wandb run summary, under `result`):
- `--wandb-files`: the local wandb files below SWEEP_DIR (offline runs, or online runs' local copies),
  every requeued attempt of a run merged; no network.
- `--wandb ENTITY/PROJECT [--group NAME]`: the wandb API, for runs logged on another machine."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from parscale_law.table import RESULT_COLUMNS


def collect_runs(sweep_dir: str | Path) -> pd.DataFrame:
    """The results table of every finished run below ``sweep_dir``, sorted by data set, params and P. The
    stage-1 runs of a two-stage grid are not rows: each is the P = 1 backbone its cells start from, and its
    P = 1 stage-2 cell is the grid's P = 1 row."""
    rows = [json.loads(path.read_text()) for path in sorted(Path(sweep_dir).rglob("result.json"))]
    return _table([row for row in rows if row.get("stage", 0) != 1])


def rows_from_wandb(runs: Iterable) -> list[dict]:
    """Result rows from wandb runs (objects with ``summary`` and ``id``, as the public API's Run or
    sweeps.run.wandb_files.Run), finished runs only. The row is the summary's ``result``; runs logged by earlier
    versions of this toolkit kept it at the summary's top level."""
    rows = []
    for run in runs:
        summary = dict(run.summary)
        result = summary.get("result")
        source = dict(result) if isinstance(result, dict) or hasattr(result, "keys") else summary
        if source.get("status") != "done" or source.get("stage", 0) == 1:  # a stage 1 is not a row (collect_runs)
            continue
        row = {column: source[column] for column in RESULT_COLUMNS if column in source}
        row.setdefault("run_id", run.id)
        rows.append(row)
    return rows


def collect_wandb_files(directory: str | Path, group: str | None = None) -> pd.DataFrame:
    """The results table from the wandb files below ``directory`` (no network)."""
    from sweeps.run.wandb_files import read_runs

    try:
        runs = read_runs(directory)
    except ImportError:
        raise RuntimeError(
            "reading wandb's files needs the wandb package (its record definitions); pip install wandb"
        ) from None
    return _table(rows_from_wandb(run for run in runs if group is None or run.group == group))


def wandb_mode_of(sweep_dir: str | Path) -> str | None:
    """The wandb mode the runs below ``sweep_dir`` were configured with (their config.yaml), if they agree."""
    import yaml

    modes = set()
    for config in Path(sweep_dir).glob("*/config.yaml"):
        try:
            modes.add(yaml.safe_load(config.read_text()).get("wandb", {}).get("mode"))
        except (OSError, yaml.YAMLError, AttributeError):
            continue
    return modes.pop() if len(modes) == 1 else None


def collect_wandb(path: str, group: str | None = None, api=None) -> pd.DataFrame:
    """The results table from the wandb API: ``path`` is ENTITY/PROJECT, ``group`` the grid's group;
    ``api`` is a ``wandb.Api()`` (made here by default)."""
    try:
        if api is None:
            import wandb

            api = wandb.Api()
        filters = {"group": group} if group else None
        try:  # lazy=False: the summaries come with the listing, not one request per run
            runs = list(api.runs(path, filters=filters, lazy=False))
        except TypeError:  # wandb before the lazy listing
            runs = list(api.runs(path, filters=filters))
    except ImportError:
        raise RuntimeError("wandb is not installed; pip install wandb, or collect from the run directories") from None
    except Exception as error:  # wandb raises its own types for network and authentication failures
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise RuntimeError(
            f"wandb API failed for {path}: {first_line}; check the network, WANDB_API_KEY and the path"
        ) from None
    return _table(rows_from_wandb(runs))


def _table(rows: list[dict]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=list(RESULT_COLUMNS))
    table = pd.DataFrame(rows)
    ordered = [c for c in RESULT_COLUMNS if c in table.columns] + [c for c in table.columns if c not in RESULT_COLUMNS]
    sort = [c for c in ("dataset", "params", "P", "seed") if c in table.columns]
    return table[ordered].sort_values(sort).reset_index(drop=True)
