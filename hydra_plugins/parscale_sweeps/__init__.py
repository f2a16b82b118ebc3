"""Registers the sweep launchers of sweeps/launchers.py with Hydra.

Hydra instantiates a launcher only if its class is defined in a module of the `hydra_plugins` namespace
package (it discovers plugins by scanning that package), so this module names them there; the code lives
in sweeps/launchers.py."""

from sweeps import launchers


class SlurmGridLauncher(launchers.SlurmGridLauncher):
    """SLURM job array per grid, returning after submission (see sweeps.launchers.SlurmGridLauncher)."""


class LocalGridLauncher(launchers.LocalGridLauncher):
    """Cells as local worker processes (see sweeps.launchers.LocalGridLauncher)."""
