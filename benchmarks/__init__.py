"""Measurement scripts, each run from the checkout as ``python -m benchmarks.<name>`` (``make bench`` runs the
first four); their figures are in docs/benchmarks.md and results/, named by machine and date.

- ``fit_speed``: the fitter, bootstrap and coverage simulation timed side by side;
- ``model_throughput``: ParScale against its backbone, forward and backward, per P;
- ``train_throughput``: the whole training job's tokens per second, per P;
- ``data_path``: prepared token files against streaming and tokenizing;
- ``decoding``: batch-1 decoding, dynamic cache eager against static cache compiled;
- ``calibrate_memory``: the activation bytes per token that sweeps/grid/memory_calibration.json holds.
"""
