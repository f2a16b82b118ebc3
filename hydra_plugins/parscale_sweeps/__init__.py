"""Registers the sweep launchers of sweeps/grid/slurm_launcher.py and sweeps/grid/local_launcher.py with Hydra.

Hydra instantiates a launcher only if its class is defined in a module of the `hydra_plugins` namespace
package (it discovers plugins by scanning that package), so this module names them there, and registers the
SLURM launcher's typed settings (`parscale_slurm_schema`, which conf/hydra/launcher/parscale_slurm.yaml
extends); the code lives in sweeps/."""

from hydra.core.config_store import ConfigStore

from sweeps.grid import local_launcher, slurm_launcher

ConfigStore.instance().store(group="hydra/launcher", name="parscale_slurm_schema",
                             node=slurm_launcher.PlannedSlurmConf(), provider="parscale_sweeps")


class SlurmGridLauncher(slurm_launcher.SlurmGridLauncher):
    """SLURM job arrays per grid, each cell planned for its GPUs (see sweeps.grid.slurm_launcher.SlurmGridLauncher)."""


class LocalGridLauncher(local_launcher.LocalGridLauncher):
    """Cells as local worker processes (see sweeps.grid.local_launcher.LocalGridLauncher)."""
