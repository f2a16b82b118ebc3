"""One cell of a sweep: `train`, plus the failure mark that `sweeps.status` reads.

Both launchers end here: the SLURM one through Hydra's task function (sweeps/launch.py), the local one in
a worker process, `python -m sweeps.run_cell CELL.yaml`, where CELL.yaml is the cell's resolved config."""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from omegaconf import OmegaConf

from .cells import ERROR_FILE
from .checkpoint import atomic_write_text
from .config import ConfigError, TrainConfig, from_mapping
from .train import train

def run_cell(config: TrainConfig) -> dict:
    """Trains the cell; on an exception writes its message to error.txt (removed again by the next attempt)."""
    error_file = Path(config.run_dir) / ERROR_FILE
    error_file.unlink(missing_ok=True)
    try:
        return train(config)
    except Exception as error:
        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
        atomic_write_text(error_file, traceback.format_exc() + f"{type(error).__name__}: {_first_line(error)}\n")
        raise


def _first_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m sweeps.run_cell CELL.yaml", file=sys.stderr)
        return 2
    try:
        run_cell(from_mapping(OmegaConf.load(args[0])))
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        print(f"error: {type(error).__name__}: {_first_line(error)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
