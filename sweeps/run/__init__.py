"""sweeps.run: one training run, from its config to its row of the results table (docs/training.md).

- ``config``: the run's settings (``TrainConfig``, composed from conf/), their checks, and the run's identity;
- ``loop``: ``train(config)``, the training loop read top to bottom: resume or start, step, log, save,
  finish with the result row;
- ``build``: the model wrapped in its loss, and the optimiser; ``parallelize``: the model's layout on the
  hardware (FSDP2, precision, activation checkpointing, compile); ``loss``: chunked cross-entropy;
- ``distributed``: processes and devices; ``checkpoint``: sharded checkpoints and the preemption guard;
- ``stages``: two-stage training (a stage-2 run starting from a P = 1 run's checkpoint);
- ``tracking``: metrics.jsonl, the progress line and wandb; ``wandb_files``: wandb's local files read back.
"""
