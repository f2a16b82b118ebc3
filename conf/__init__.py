"""The Hydra configs (YAML) of training runs and sweeps, a package so that they ship with the wheel."""
