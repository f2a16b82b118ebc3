"""`python -m sweeps.train OVERRIDES`: one training run, composed from conf/config.yaml (the loop is
sweeps/run/loop.py; docs/training.md).

    python -m sweeps.train model=tiny-128 data=stdlib-code parscale_n=2 tokens=2000000
    torchrun --nproc_per_node 8 -m sweeps.train model=0.5B data=pile parscale_n=4 tokens=42000000000 \\
        seq_len=2048 global_batch_size=1024 micro_batch_size=4 precision=bf16         # the paper's setup
    python -m sweeps.train model=tiny-128 parscale_n=4 init_from=runs/stdlib-code/tiny-128-P1-s0 \\
        freeze_backbone=true tokens=200000 hydra.run.dir=runs/stage2/tiny-128-P4       # stage 2
"""

import sys

import hydra

from parscale_law.arguments import check_output_folder
from parscale_law.errors import report_error
from sweeps.errors import ConfigError, one_line
from sweeps.run.config import CONF_DIR, check_group_choices, from_mapping
from sweeps.run.loop import train


# An absolute path: a relative one would be resolved as a Python package when this module is imported.
@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def _app(cfg) -> None:
    try:
        train(from_mapping(cfg))
    except ConfigError as error:
        sys.exit(report_error(error))


def check_overrides(overrides: list[str]) -> None:
    """The run's config and its run folder, checked before Hydra creates that folder: a bad setting leaves
    nothing behind. Hydra's own flags (--cfg, --multirun, ...) are left to Hydra."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    check_group_choices(overrides)
    if any(item.startswith("-") for item in overrides):
        return
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
        run_dir = str(cfg.hydra.run.dir)
        check_output_folder(run_dir, "hydra.run.dir")
        with open_dict(cfg):
            cfg.pop("hydra")
            cfg.run_dir = run_dir
        from_mapping(OmegaConf.to_container(cfg, resolve=True))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(one_line(error)) from None


def main() -> None:
    try:
        check_overrides(sys.argv[1:])
    except ValueError as error:  # ConfigError, and a run folder that cannot be made
        sys.exit(report_error(error))
    _app()


if __name__ == "__main__":
    main()
