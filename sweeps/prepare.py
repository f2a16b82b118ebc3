"""`python -m sweeps.prepare data=NAME out=DIR [workers=N] [data.KEY=VALUE ...]`: tokenize a corpus once
(sweeps/data/preparation.py; docs/data.md).

Reads the data set of conf/data/NAME.yaml once and writes the flat token files and manifest that
sweeps/data/prepared.py describes; training then reads them with `data.prepared=DIR`. For example, on a CPU
node of the cluster:

    python -m sweeps.prepare data=pile out=/shared/data/pile-qwen2.5
    python -m sweeps.prepare data=stack-v2-python out=/shared/data/stack-v2-python-qwen2.5   # needs AWS access

The same command after an interruption resumes from the last commit.
"""

from __future__ import annotations

import sys

from parscale_law.arguments import check_output_folder
from parscale_law.errors import report_error
from sweeps.data.config import DataConfig
from sweeps.data.preparation import prepare
from sweeps.errors import ConfigError, first_line, one_line
from sweeps.run.config import CONF_DIR, check_group_choices

# The command's own settings (the rest of its arguments are conf/data overrides) and their types: each must be
# > 0 (a folder for out).
OPTIONS = {"out": str, "workers": int, "segment_bytes": int, "commit_interval_s": float, "report_interval_s": float}


def parse_arguments(argv: list[str]) -> tuple[DataConfig, dict]:
    """(data config, options) from `data=NAME out=DIR [workers=N] [data.KEY=VALUE ...]`."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    options, overrides = {}, []
    for item in argv:
        key, equals, value = item.partition("=")
        if key in OPTIONS and equals:
            try:
                options[key] = OPTIONS[key](value)
            except ValueError:
                raise ConfigError(f"{key}={value}: expected a {OPTIONS[key].__name__}") from None
            if key != "out" and not options[key] > 0:
                raise ConfigError(f"{key}={value}: must be > 0")
        elif key == "data" or key.startswith("data."):
            overrides.append(item)
        else:
            raise ConfigError(f"{item!r} is not understood; usage: python -m sweeps.prepare data=NAME out=DIR "
                              f"[{' '.join(f'{name}=...' for name in list(OPTIONS)[1:])}] [data.KEY=VALUE ...]")
    if "out" not in options or not any(item.startswith("data=") for item in overrides):
        raise ConfigError("usage: python -m sweeps.prepare data=NAME out=DIR (NAME: a conf/data/*.yaml)")
    check_output_folder(options["out"], "out")
    check_group_choices(overrides)
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        missing = sorted(OmegaConf.missing_keys(cfg.data))
        if missing:
            raise ConfigError(f"data.{missing[0]} is required (it is ??? in conf/data/); "
                              f"set it, e.g. data.{missing[0]}=...")
        data = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(DataConfig), cfg.data))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(one_line(error)) from None
    if data.prepared:
        raise ConfigError("data.prepared names a prepared directory to train from; give the output as out=DIR")
    return data, options


def main(argv: list[str] | None = None) -> int:
    try:
        data, options = parse_arguments(sys.argv[1:] if argv is None else argv)
        prepare(data, **options)
    except ValueError as error:  # ConfigError, and a bad out= path
        return report_error(error)
    except OSError as error:  # the source or the tokenizer cannot be read: offline, no access, a missing file
        return report_error(ValueError(
            f"data={data.name}: cannot read {data.path or data.source} or tokenizer {data.tokenizer} "
            f"({first_line(error)[:160]}); run where they can be reached (the hub: network, HF_TOKEN), or point "
            "data.path / data.tokenizer to local copies"))
    except KeyboardInterrupt:
        print("interrupted: the same command resumes from the last commit", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
