"""sweeps.grid: a grid of training runs, from the command line to the results table (docs/sweeps.md).

- ``sweep``: every cell composed and checked, the manifest written, finished cells skipped, before anything
  runs; ``two_stage``: a two-stage grid's stage-1 cells and the stage-2 cells that start from them;
- ``local_launcher``: the cells as worker processes on this machine; ``slurm_launcher``: as SLURM job arrays
  through submitit (both registered with Hydra by ``hydra_plugins.parscale_sweeps``);
- ``run_cell``: one cell in its worker or job: the run, its attempts and its failure mark; ``cells``: the
  cells on disk (manifest, state, attempts), read by ``python -m sweeps.status``;
- ``resources``: the memory and time model of a cell, calibrated by benchmarks/calibrate_memory.py
  (``memory_calibration.json``); ``resource_plan``: each cell's GPUs, micro-batch, checkpointing and SLURM
  time from it (``plan.md`` of a dry run);
- ``collect``: the results table from the cells or wandb; ``report``: the fit, figures and summary at the end.
"""
