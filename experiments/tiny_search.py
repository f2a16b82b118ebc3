"""The measured search behind the tiny grid's settings: which small-scale settings make P streams help.

    python -m experiments.tiny_search --trial NAME [--sizes tiny-32,tiny-64] [--P 1,4] [--seeds 0,1]
    python -m experiments.tiny_search --summary

A trial is a named list of training overrides (TRIALS below) on top of the tiny scale (conf/scale/tiny.yaml).
Each cell of a trial (size x P x seed) trains in this process, one thread, and appends one line to
experiments/tiny_search_trials.csv: the trial, its overrides, the cell, tokens per parameter, the final smoothed
training loss and held-out loss, and the wall time. The data order depends on the seed only, so the cells of
one seed see the same rows at every P: `--summary` prints each trial's paired held-out difference
(P minus P = 1 of the same seed), its mean and its spread over seeds.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml

from models import Qwen2ParScaleForCausalLM
from models.stream_ablation import stream_ablation
from sweeps.data.batches import eval_batch
from sweeps.data.documents import load_tokenizer
from sweeps.run import loop as train_module
from sweeps.run.config import CONF_DIR, load_config
from sweeps.run.loop import train
from sweeps.run.tracking import git_revision

TRIALS_CSV = Path(__file__).with_name("tiny_search_trials.csv")
TINY_SCALE = CONF_DIR / "scale" / "tiny.yaml"
CORPUS = "stdlib-prose"  # the tiny grid's stand-in for the Pile

# Each trial tests one idea from the evidence and the paper's recipe against the tiny scale as it is.
TRIALS: dict[str, list[str]] = {
    "base": [],
    # The streams start nearly alike (std 0.02): more diverse prefixes.
    "prefix-std1": ["model.parscale_prefix_init_std=1.0"],
    # The prefixes and aggregator learn faster and are not pulled to zero.
    "parscale-lr4-wd0": ["optim.parscale_lr_scale=4", "optim.parscale_weight_decay=0"],
    "std1-lr4-wd0": ["model.parscale_prefix_init_std=1.0", "optim.parscale_lr_scale=4",
                     "optim.parscale_weight_decay=0"],
    # Shorter rows, more steps, the same tokens: more optimiser steps per cell.
    "std1-lr4-wd0-rows32": ["model.parscale_prefix_init_std=1.0", "optim.parscale_lr_scale=4",
                            "optim.parscale_weight_decay=0", "seq_len=32", "eval_interval=448"],
    # A longer prefix (the paper: 48 of 2048 tokens).
    "std1-lr4-wd0-prefix8": ["model.parscale_prefix_init_std=1.0", "optim.parscale_lr_scale=4",
                             "optim.parscale_weight_decay=0", "model.parscale_n_tokens=8"],
    # Less smoothing of the aggregator's weights (the paper: 0.1).
    "std1-lr4-wd0-smooth0": ["model.parscale_prefix_init_std=1.0", "optim.parscale_lr_scale=4",
                             "optim.parscale_weight_decay=0", "model.parscale_attn_smooth=0.0"],
    # Half the steps: where P = 4 looked far ahead at tiny-128 (see its control below).
    "half": ["tokens=229376", "eval_interval=224"],
}
PREFIXES = (".prefix_k", ".prefix_v")
AGGREGATOR_OUTPUT = (".aggregate_layer.2.weight", ".aggregate_layer.2.bias")
PART_NAMES = {PREFIXES: "prefixes", AGGREGATOR_OUTPUT: "aggregator output"}
# Controls: a trial's settings with part of ParScale disconnected, zeroed and frozen: the prefixes (every
# stream computes the same thing, but the prefix slots stay, as keys and values of 0) or the aggregator's
# output layer (every stream weighs 1 / P). What the streams give in a trial must vanish in its control.
CONTROLS = {
    "half-prefixes-off": ("half", PREFIXES),
    "base-prefixes-off": ("base", PREFIXES),
    "base-aggregator-off": ("base", AGGREGATOR_OUTPUT),
}


def zeroed_and_frozen(build_trained, suffixes: tuple[str, ...] = PREFIXES):
    """`sweeps.train.build_trained`, with the parameters whose names end in one of `suffixes` set to 0 and
    frozen: the prefixes (every stream computes the same thing) or the aggregator's output layer (every stream
    weighs 1 / P), the disconnections a control or a guard test needs."""
    def build(*args, **kwargs):
        trained, lm = build_trained(*args, **kwargs)
        for name, param in lm.named_parameters():
            if name.endswith(suffixes):
                param.data.zero_()
                param.requires_grad_(False)
        return trained, lm
    return build


def scale_overrides() -> list[str]:
    """The tiny scale's training settings as overrides of one run (the scale's sweep keys left out)."""
    scale = yaml.safe_load(TINY_SCALE.read_text())
    overrides = [f"{key}={scale[key]}" for key in
                 ("tokens", "seq_len", "global_batch_size", "micro_batch_size", "eval_interval", "eval_sequences")]
    overrides += [f"optim.{key}={value}" for key, value in scale.get("optim", {}).items()]
    return [*overrides, "log_interval=100000", "checkpoint_interval=100000", "wandb.mode=disabled"]


def run_cell(trial: str, size: str, parscale_n: int, seed: int, workdir: Path) -> dict:
    settings = TRIALS[CONTROLS[trial][0] if trial in CONTROLS else trial]
    overrides = [f"data={CORPUS}", f"model={size}", f"parscale_n={parscale_n}", f"seed={seed}",
                 *scale_overrides(), *settings, f"run_dir={workdir / f'{size}-P{parscale_n}-s{seed}'}"]
    config = load_config(overrides)
    build_trained = train_module.build_trained
    if trial in CONTROLS:
        train_module.build_trained = zeroed_and_frozen(build_trained, CONTROLS[trial][1])
    start = time.perf_counter()
    try:
        result = train(config)
    finally:
        train_module.build_trained = build_trained
    wall_s = time.perf_counter() - start
    gains = {"stream_gain": None, "aggregator_gain": None}
    if parscale_n > 1:
        model = Qwen2ParScaleForCausalLM.from_pretrained(Path(config.run_dir) / "model")
        ablation = stream_ablation(model, eval_batch(config.data, load_tokenizer(config.data), config.seq_len,
                                                     config.eval_sequences))
        gains = {"stream_gain": round(ablation.stream_gain, 5), "aggregator_gain": round(ablation.aggregator_gain, 5)}
    return {
        "trial": trial,
        "overrides": " ".join(settings)
        + (f" ({PART_NAMES[CONTROLS[trial][1]]} zeroed and frozen)" if trial in CONTROLS else ""),
        "size": size, "P": parscale_n, "seed": seed,
        "steps": config.total_steps, "tokens": config.total_steps * config.tokens_per_step,
        "params": result["params"], "tokens_per_param": round(config.total_steps * config.tokens_per_step
                                                              / result["params"], 2),
        "loss": round(result["loss"], 5), "eval_loss": round(result["eval_loss"], 5), "wall_s": round(wall_s, 1),
        **gains, "git_revision": git_revision(), "date": time.strftime("%Y-%m-%d"),
    }


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per trial, size and P > 1: the held-out loss minus P = 1's of the same seed, mean and spread."""
    base = table[table.P == 1].set_index(["trial", "size", "seed"])["eval_loss"]
    rows = []
    for (trial, size, parscale_n), cells in table[table.P > 1].groupby(["trial", "size", "P"]):
        paired = [row.eval_loss - base[(trial, size, row.seed)] for row in cells.itertuples()
                  if (trial, size, row.seed) in base.index]
        if paired:
            series = pd.Series(paired)
            rows.append({"trial": trial, "size": size, "P": parscale_n, "seeds": len(paired),
                         "mean_diff": round(series.mean(), 4),
                         "min_diff": round(series.min(), 4), "max_diff": round(series.max(), 4)})
    return pd.DataFrame(rows)


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trial", choices=sorted([*TRIALS, *CONTROLS]))
    parser.add_argument("--sizes", default="tiny-32,tiny-64")
    parser.add_argument("--P", default="1,4")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--out", type=Path, default=TRIALS_CSV)
    parser.add_argument("--summary", action="store_true", help="print the paired differences of the table")
    args = parser.parse_args(argv)
    if args.summary:
        print(summary(pd.read_csv(args.out)).to_string(index=False))
        return 0
    if args.trial is None:
        parser.error("give --trial NAME (or --summary)")
    torch.set_num_threads(1)  # cells are timed side by side with other work on a 2-core machine
    workdir = Path(tempfile.mkdtemp(prefix="tiny-search-"))
    try:
        for seed in _ints(args.seeds):
            for size in args.sizes.split(","):
                for parscale_n in _ints(args.P):
                    row = run_cell(args.trial, size, parscale_n, seed, workdir)
                    pd.DataFrame([row]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)
                    print(f"{args.trial} {size} P={parscale_n} s{seed}: eval {row['eval_loss']:.4f} "
                          f"loss {row['loss']:.4f} ({row['wall_s']:.0f} s)", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
