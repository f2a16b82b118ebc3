"""The measured search behind the two-stage defaults: what makes P streams matter in stage 2 at tiny scale,
and how stage 2 starts (its loss spike).

    python -m experiments.stage2_search --trial NAME [--sizes tiny-64] [--P 1,2,8] [--seeds 0] [--fraction 0.1]
    python -m experiments.stage2_search --summary

Every trial trains stage 2 from a shared stage 1 (P = 1 on the first 1 - F of `--tokens`, the tiny scale's
recipe otherwise: conf/scale/tiny.yaml), kept in --workdir so that trials reuse it; a trial is a named list
of stage-2 overrides (TRIALS), and may change the backbone too (then it trains its own stage 1). Each cell
(trial x size x P x seed) appends one line to experiments/stage2_search_trials.csv: the stage-1 held-out loss at
the branch, the held-out loss right after the streams are added (the spike) and at the end, the steps until
the cell's training loss is back at the P = 1 control's on the same rows, how far apart the streams are at
the start and the end (models/stream_diversity.py), what the streams and aggregator are worth at the end
(models/stream_ablation.py), and the wall time. Every P of a seed sees the same rows, so `--summary`
prints paired differences (P minus P = 1 of the same trial, size and seed).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import pandas as pd
import torch

from experiments.tiny_search import CORPUS, scale_overrides
from models import Qwen2ParScaleForCausalLM
from models.stream_ablation import stream_ablation
from sweeps.data.batches import eval_batch
from sweeps.data.documents import load_tokenizer
from sweeps.run.config import load_config
from sweeps.run.loop import train
from sweeps.run.tracking import git_revision, read_metrics

TRIALS_CSV = Path(__file__).with_name("stage2_search_trials.csv")
DEMO_TOKENS = 2_867_200  # the tiny demo's from-scratch compute at F = 0.1: 15 x 458,752 / (1 + 14 x 0.1)
STAGE1_FRACTIONS = (0.05, 0.1, 0.2, 0.4)  # every stage-1 run keeps a branch for each (sweeps/run/stages.py)

# Stage-2 overrides (and, under "backbone", overrides that make another stage 1).
TRIALS: dict[str, dict] = {
    "base": {},
    # The aggregator as every Linear (N(0, 0.02)): nearly, not exactly, uniform at step 0.
    "aggregator-normal": {"stage2": ["stage2.aggregator_init=normal"]},
    # The prefix adds nothing to a layer's output at step 0: only its keys dilute the attention.
    "zero-values": {"stage2": ["stage2.prefix_init=zero-values"]},
    # Streams far apart from the start.
    "std1": {"stage2": ["model.parscale_prefix_init_std=1.0"]},
    # The new parameters learn 10x faster, without weight decay pulling the prefixes together.
    "lr10-wd0": {"stage2": ["optim.parscale_lr_scale=10", "optim.parscale_weight_decay=0"]},
    "std1-lr10-wd0": {"stage2": ["model.parscale_prefix_init_std=1.0", "optim.parscale_lr_scale=10",
                                 "optim.parscale_weight_decay=0"]},
    # Each stream's prefix starts as the backbone's own keys and values of another training row's last tokens.
    "activations": {"stage2": ["stage2.prefix_init=activations"]},
    "activations-lr10-wd0": {"stage2": ["stage2.prefix_init=activations", "optim.parscale_lr_scale=10",
                                        "optim.parscale_weight_decay=0"]},
    # The aggregator breaks the streams' symmetry: random weights of a larger scale give each stream its own
    # per-token weight from step 0, so each learns from other tokens; no smoothing lets it prefer one.
    "aggregator-std0.2": {"stage2": ["stage2.aggregator_init=normal", "+model.initializer_range=0.2"]},
    "smooth0": {"stage2": ["model.parscale_attn_smooth=0.0"]},
    # A longer prefix (the paper: 48 of 2048 tokens; the tiny grid: 4 of 64).
    "prefix16": {"stage2": ["model.parscale_n_tokens=16"]},
    # The stage-2 schedule: a short warm-up, and fresh AdamW moments with a warm-up back to the peak (close to
    # a separate stage-2 run, the older init_from path).
    "warmup10": {"stage2": ["stage2.warmup_fraction=0.1"]},
    "reset-warmup20": {"stage2": ["stage2.optimizer_state=reset", "stage2.warmup_fraction=0.2"]},
    # The stage-2 length at the same total tokens.
    "F0.05": {"fraction": 0.05},
    "F0.2": {"fraction": 0.2},
    "F0.4": {"fraction": 0.4},
    # Depth: the paper's prefixes act in 36 layers, the tiny grid's in 2.
    "depth6": {"backbone": ["model.num_hidden_layers=6"]},
    "depth6-std1-lr10-wd0": {"backbone": ["model.num_hidden_layers=6"],
                             "stage2": ["model.parscale_prefix_init_std=1.0", "optim.parscale_lr_scale=10",
                                        "optim.parscale_weight_decay=0"]},
}


def run_overrides(size: str, seed: int, tokens: int, backbone: list[str]) -> list[str]:
    return [f"data={CORPUS}", f"model={size}", f"seed={seed}", *scale_overrides(), f"tokens={tokens}",
            "eval_interval=100000", *backbone]


def stage1_dir(workdir: Path, overrides: list[str]) -> Path:
    """Where the stage 1 of these settings lives: reused by every trial with the same backbone settings."""
    key = hashlib.sha256(" ".join(overrides).encode()).hexdigest()[:10]
    return workdir / f"stage1-{key}"


def ensure_stage1(workdir: Path, overrides: list[str]) -> tuple[Path, float]:
    run_dir = stage1_dir(workdir, overrides)
    fractions = sorted(STAGE1_FRACTIONS)
    start = time.perf_counter()
    train(load_config([*overrides, "parscale_n=1", "stage=1", f"stage2_fraction={fractions[0]}",
                       f"branch_fractions=[{','.join(map(str, fractions[1:]))}]", f"run_dir={run_dir}"]))
    return run_dir, time.perf_counter() - start


def recover_steps(metrics: list[dict], control: list[dict], smoothing: float = 0.9) -> int | None:
    """Stage-2 steps until the cell's training loss (an EMA over stage 2) is at or below the P = 1 control's
    on the same rows; None if it never gets there."""
    ours = theirs = None
    for step, (row, other) in enumerate(zip(metrics, control, strict=False), start=1):
        ours = row["loss"] if ours is None else smoothing * ours + (1 - smoothing) * row["loss"]
        theirs = other["loss"] if theirs is None else smoothing * theirs + (1 - smoothing) * other["loss"]
        if ours <= theirs:
            return step
    return None


def run_cell(trial: str, size: str, parscale_n: int, seed: int, tokens: int, workdir: Path) -> dict:
    spec = TRIALS[trial]
    fraction = spec.get("fraction", 0.1)
    base = run_overrides(size, seed, tokens, spec.get("backbone", []))
    stage1, _ = ensure_stage1(workdir, base)
    cell_dir = workdir / trial / f"{size}-P{parscale_n}-s{seed}"
    config = load_config([*base, f"parscale_n={parscale_n}", "stage=2", f"stage2_fraction={fraction}",
                          f"init_from={stage1}", *spec.get("stage2", []), f"run_dir={cell_dir}"])
    start = time.perf_counter()
    result = train(config)
    wall_s = time.perf_counter() - start
    metrics = read_metrics(cell_dir / "metrics.jsonl")
    control_dir = workdir / trial / f"{size}-P1-s{seed}"
    control = read_metrics(control_dir / "metrics.jsonl") if (control_dir / "metrics.jsonl").exists() else []
    gains = {"stream_gain": None, "aggregator_gain": None}
    if parscale_n > 1:
        model = Qwen2ParScaleForCausalLM.from_pretrained(cell_dir / "model")
        rows = eval_batch(config.data, load_tokenizer(config.data), config.seq_len, config.eval_sequences)
        ablation = stream_ablation(model, rows)
        gains = {"stream_gain": round(ablation.stream_gain, 5), "aggregator_gain": round(ablation.aggregator_gain, 5)}
    branch_eval = json.loads((control_dir / "start.json").read_text())["eval_loss_start"] if control else None
    return {
        "trial": trial, "overrides": " ".join(spec.get("backbone", []) + spec.get("stage2", [])),
        "size": size, "P": parscale_n, "seed": seed, "stage2_fraction": fraction, "tokens": tokens,
        "params": result["params"], "tokens_per_param": round(tokens / result["params"], 1),
        "stage1_eval_loss": None if branch_eval is None else round(branch_eval, 5),
        "eval_loss_start": round(result["eval_loss_start"], 5),
        "recover_steps": recover_steps(metrics, control) if parscale_n > 1 and control else None,
        "loss": round(result["loss"], 5), "eval_loss": round(result["eval_loss"], 5),
        **{key: round(result[key], 6) if key in result else None
           for key in ("stream_distance_start", "stream_distance", "weight_entropy_start", "weight_entropy")},
        **gains, "wall_s": round(wall_s, 1), "git_revision": git_revision(), "date": time.strftime("%Y-%m-%d"),
    }


def summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per trial, size and P > 1: the held-out loss minus P = 1's of the same seed, mean and spread, with the
    streams' distance at the end and the spike."""
    table = table.drop_duplicates(["trial", "size", "P", "seed"])  # a cell run again returns its first row
    base = table[table.P == 1].set_index(["trial", "size", "seed"])["eval_loss"]
    rows = []
    for (trial, size, parscale_n), cells in table[table.P > 1].groupby(["trial", "size", "P"]):
        paired = pd.Series([row.eval_loss - base[(trial, size, row.seed)] for row in cells.itertuples()
                            if (trial, size, row.seed) in base.index])
        if len(paired):
            rows.append({"trial": trial, "size": size, "P": parscale_n, "seeds": len(paired),
                         "mean_diff": round(paired.mean(), 4), "min_diff": round(paired.min(), 4),
                         "max_diff": round(paired.max(), 4),
                         "spike": round((cells.eval_loss_start - cells.stage1_eval_loss).mean(), 4),
                         "recover": cells.recover_steps.mean(), "distance": cells.stream_distance.mean(),
                         "stream_gain": cells.stream_gain.mean()})
    return pd.DataFrame(rows)


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trial", choices=sorted(TRIALS))
    parser.add_argument("--sizes", default="tiny-64")
    parser.add_argument("--P", default="1,2,8", help="P = 1 first: it is the control the others recover to")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--tokens", type=int, default=DEMO_TOKENS)
    parser.add_argument("--workdir", type=Path, default=Path("stage2-search"), help="stage-1 runs and cells, reused")
    parser.add_argument("--out", type=Path, default=TRIALS_CSV)
    parser.add_argument("--summary", action="store_true", help="print the paired differences of the table")
    args = parser.parse_args(argv)
    if args.summary:
        with pd.option_context("display.width", 200):
            print(summary(pd.read_csv(args.out)).to_string(index=False))
        return 0
    if args.trial is None:
        parser.error("give --trial NAME (or --summary)")
    torch.set_num_threads(1)  # cells are timed side by side with other work on a 2-core machine
    for seed in _ints(args.seeds):
        for size in args.sizes.split(","):
            for parscale_n in _ints(args.P):
                row = run_cell(args.trial, size, parscale_n, seed, args.tokens, args.workdir)
                pd.DataFrame([row]).to_csv(args.out, mode="a", header=not args.out.exists(), index=False)
                distance = "" if row["stream_distance"] is None else f", stream distance {row['stream_distance']:.2e}"
                print(f"{args.trial} {size} P={parscale_n} s{seed}: eval {row['eval_loss']:.4f} (start "
                      f"{row['eval_loss_start']:.4f}){distance} ({row['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
