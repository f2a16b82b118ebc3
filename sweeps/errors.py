"""The one error every layer of sweeps raises for settings that cannot work, and how it reads."""


class ConfigError(ValueError):
    """A configuration that cannot train. The message is one line that says what to change."""


def one_line(error: Exception) -> str:
    """A library's multi-line message (OmegaConf's, Hydra's) folded into one line, without their boilerplate."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(line for line in lines if not line.startswith(("object_type", "Set the environment")))[:400]


def first_line(error: Exception) -> str:
    """The first line that says something, for errors whose rest is a traceback or a dump (sbatch's, a worker's)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
