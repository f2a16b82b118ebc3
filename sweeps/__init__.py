"""sweeps: training runs of ParScale models, one at a time or as the paper's grids (docs/training.md,
docs/sweeps.md, docs/data.md).

The commands, each a module here:
- ``python -m sweeps.launch +grid=pile [scale=tiny]``: a grid of runs, on SLURM or on this machine;
- ``python -m sweeps.status SWEEP_DIR``, ``sweeps.report SWEEP_DIR``, ``sweeps.collect SWEEP_DIR``: a grid's
  cells, its fit and figures, its results table;
- ``python -m sweeps.train OVERRIDES``: one run; ``python -m sweeps.prepare data=NAME out=DIR``: tokenize a
  corpus once; ``python -m sweeps.gpu_check``: the run's model of memory and time checked on a GPU.

The code behind them, one job a sub-package; imports flow one way, grid -> run -> data -> models:
- ``sweeps.grid``: a grid of cells: composing it, the local and SLURM launchers, two-stage grids, each cell's
  record on disk, the memory and time model that sizes a cell for its GPUs, the report at the end;
- ``sweeps.run``: one training run: its config, the loop, the model's layout on the hardware, the loss,
  processes, checkpoints and preemption, metrics and wandb;
- ``sweeps.data``: what a run reads: documents and tokenizers, prepared token files, training and
  evaluation rows.
Below them: ``sweeps.errors`` (the one configuration error and how it reads) and ``sweeps.files`` (files
written whole or not at all).

The submodules are not imported here: the commands run as ``python -m sweeps.<name>``, and a package that
imports a module before runpy executes it as __main__ runs that module twice.
"""
