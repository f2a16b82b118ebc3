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
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from parscale_law.arguments import check_output_folder
from parscale_law.errors import report_error
from sweeps.errors import one_line
from sweeps.grid.cells import cell_config
from sweeps.grid.resource_plan import check_planner_settings
from sweeps.grid.run_cell import requeue_slurm_job, run_cell
from sweeps.run.config import CONF_DIR, check_group_choices


def check_choices(arguments: list[str]) -> None:
    """Everything that can be checked before Hydra writes the sweep folder, each refused in one line (exit 2):
    the grid and scale named, sizes and data sets in conf/, the sweep folder's path, the SLURM planner's
    settings, and each value the grid sweeps over (one cell composed per value, e.g. scale.P=0)."""
    grids = sorted(path.stem for path in (CONF_DIR / "grid").glob("*.yaml"))
    scales = sorted(path.stem for path in (CONF_DIR / "scale").glob("*.yaml"))
    chosen = {item.lstrip("+").partition("=")[0]: item.partition("=")[2] for item in arguments if "=" in item}
    if "grid" not in chosen:
        _refuse(f"choose a grid: python -m sweeps.launch +grid={grids[0]} (grids: {', '.join(grids)})")
    for group, known in (("grid", grids), ("scale", scales)):
        if group in chosen and chosen[group] not in known:
            _refuse(f"unknown {group} {chosen[group]!r}: choose one of {', '.join(known)} (conf/{group}/*.yaml)")
    try:
        # A list of stage-2 fractions (stage2_fraction=a,b) is the sweeper's to expand: the grid composes without
        # it. Other lists must be quoted scale settings (scale.sizes='a,b'), and composing says so.
        fixed = [item.input_line for item in OverridesParser.create().parse_overrides(arguments)
                 if not (item.is_sweep_override() and item.key_or_group == "stage2_fraction")]
        cfg = _compose(fixed)
        sweep = {key: str(value).split(",") for key, value in cfg.hydra.sweeper.params.items()}
        check_group_choices([f"{key}={','.join(values)}" for key, values in sweep.items()])
        check_output_folder(str(cfg.hydra.sweep.dir), "hydra.sweep.dir")
        if "mfu" in cfg.hydra.launcher:  # the SLURM launcher plans GPUs from these
            check_planner_settings(OmegaConf.to_container(cfg.hydra.launcher, resolve=True))
        # One cell per swept value, as one run (stage2_fraction=0): the launcher itself makes and checks a
        # two-stage grid's stage-1 and stage-2 cells.
        one_run = [item for item in fixed if item.lstrip("+").partition("=")[0] != "stage2_fraction"]
        swept = {key: values for key, values in sweep.items() if key != "stage2_fraction"}
        for key, values in swept.items():
            for value in values:
                others = [f"{other}={choices[0]}" for other, choices in swept.items() if other != key]
                cell_cfg = _compose([*one_run, *others, f"{key}={value}", "stage2_fraction=0"], with_hydra=False)
                cell_config(cell_cfg, run_dir=".")
    except (HydraException, OmegaConfBaseException, ValueError) as error:  # ConfigError, ResourcePlanError, ...
        _refuse(one_line(error))


def _compose(overrides: list[str], with_hydra: bool = True):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="launch", overrides=overrides, return_hydra_config=with_hydra)


def _refuse(message: str) -> None:
    raise SystemExit(report_error(ValueError(message)))


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
