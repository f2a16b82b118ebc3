"""sweeps.run: one training run, from its config to its row of the results table (docs/training.md).

- ``config``: the run's settings (``TrainConfig``, composed from conf/), each settings class checking itself, and
  the run's identity;
- ``loop``: ``train(config)``, the training loop read top to bottom: claim the run dir, build, resume or start,
  step, save when due, finish with the result row;
- ``state``: ``Run`` (the pieces built once) and ``TrainState`` (step, loss EMA, time: what a checkpoint saves);
  ``resume``: the run dir claimed and the newest checkpoint (or a stage 2's branch) loaded;
- ``schedule``: the learning rate of every step; ``evaluation``: the held-out loss and the streams' diversity;
- ``build``: the model wrapped in its loss, and the optimiser; ``parallelize``: the model's layout on the
  hardware (FSDP2, precision, activation checkpointing, compile); ``loss``: chunked cross-entropy;
- ``distributed``: processes and devices; ``checkpoint``: sharded checkpoints and the preemption guard;
- ``stages``: two-stage training (a stage-2 run starting from a P = 1 run's checkpoint);
- ``tracking``: metrics.jsonl, the progress line and wandb; ``wandb_files``: wandb's local files read back.
"""
