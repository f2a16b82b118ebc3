"""`python -m sweeps.launch +grid=pile [scale=tiny] [overrides...]`: one training run per cell of a grid
(sizes x P x seeds), through Hydra's multirun.

conf/launch.yaml composes a training run's config (conf/config.yaml) with a scale (conf/scale: `paper`,
the paper's sizes on SLURM; `tiny`, the same grid shape on this machine) and a grid (conf/grid: `pile`,
`stack`), whose sweeper parameters take the sizes, P values, seeds and data set from the scale. The
launcher (conf/hydra/launcher, see sweeps/grid/slurm_launcher.py) plans and runs the cells; sweeps/report.py then
collects, fits and draws."""

from __future__ import annotations

import os
import sys

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from sweeps.errors import ConfigError, one_line
from sweeps.grid.cells import cell_config
from sweeps.grid.run_cell import requeue_slurm_job, run_cell
from sweeps.run.config import CONF_DIR, check_group_choices


def check_choices(arguments: list[str]) -> None:
    """One-line errors for a missing or unknown grid or scale, and for sizes or data sets that the grid's
    cells would name but conf/ lacks (Hydra's own messages span a dozen lines)."""
    grids = sorted(path.stem for path in (CONF_DIR / "grid").glob("*.yaml"))
    scales = sorted(path.stem for path in (CONF_DIR / "scale").glob("*.yaml"))
    chosen = {item.lstrip("+").partition("=")[0]: item.partition("=")[2] for item in arguments if "=" in item}
    if "grid" not in chosen:
        raise SystemExit(f"error: choose a grid: python -m sweeps.launch +grid={grids[0]} (grids: {', '.join(grids)})")
    for group, known in (("grid", grids), ("scale", scales)):
        if group in chosen and chosen[group] not in known:
            raise SystemExit(f"error: unknown {group} {chosen[group]!r}: "
                             f"choose one of {', '.join(known)} (conf/{group}/*.yaml)")
    try:
        # A list of stage-2 fractions (stage2_fraction=a,b) is the sweeper's to expand: the grid composes without
        # it. Other lists must be quoted scale settings (scale.sizes='a,b'), and composing says so.
        fixed = [item for item in OverridesParser.create().parse_overrides(arguments)
                 if not (item.is_sweep_override() and item.key_or_group == "stage2_fraction")]
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="launch", overrides=[item.input_line for item in fixed], return_hydra_config=True)
        sweep = {key: str(value) for key, value in cfg.hydra.sweeper.params.items()}
        check_group_choices([f"{key}={value}" for key, value in sweep.items()])
    except (HydraException, OmegaConfBaseException, ConfigError) as error:
        raise SystemExit(f"error: {one_line(error)}") from None


# An absolute path: a relative one would be resolved as a Python package when this module is imported.
@hydra.main(config_path=str(CONF_DIR), config_name="launch", version_base="1.3")
def run_one_cell(cfg) -> None:
    """Hydra's task function: one cell, in a SLURM job (or wherever Hydra's launcher runs it); a crash requeues
    the job until the cell has failed sweep.max_failures times."""
    on_slurm = "SLURM_JOB_ID" in os.environ
    run_cell(cell_config(cfg), max_failures=int(cfg.sweep.max_failures),
             requeue=requeue_slurm_job if on_slurm else None)


def main() -> None:
    check_choices(sys.argv[1:])
    run_one_cell()


if __name__ == "__main__":
    main()
