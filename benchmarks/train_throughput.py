"""Training throughput and peak memory of a tiny run at P = 1, 2, 4, 8 on this machine.

    python -m benchmarks.train_throughput [--model tiny-128] [--steps 30] [--threads 1] [OVERRIDES ...]

Each P runs the real training loop (`python -m sweeps.train`, default config unless overridden) in a
process of its own, so that the peak memory is that run's alone (peak resident set on a CPU, peak CUDA
allocation on a GPU), in the environment the local grid launcher gives its cells. Throughput counts
input tokens (not P x tokens) and is the median over the steps after the first five; --threads pins torch's
CPU threads, since a shared machine makes more threads erratic."""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from sweeps.grid.local_launcher import cpu_cell_environment
from sweeps.run.config import load_config
from sweeps.run.tracking import read_metrics

WARMUP_STEPS = 5


def measure(parscale_n: int, model: str, steps: int, threads: int, overrides: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as run_dir:
        settings = [f"model={model}", f"parscale_n={parscale_n}", *overrides]
        tokens = load_config([*settings, f"run_dir={run_dir}"]).tokens_per_step * steps
        done = subprocess.run(
            [sys.executable, "-m", "sweeps.train", *settings, f"tokens={tokens}", f"hydra.run.dir={run_dir}",
             "wandb.mode=disabled", f"eval_interval={steps}", f"checkpoint_interval={steps}", f"log_interval={steps}"],
            env=cpu_cell_environment(threads), capture_output=True, text=True,
        )
        if done.returncode:
            raise SystemExit(f"P={parscale_n} failed:\n{done.stderr[-3000:]}")
        rows = read_metrics(Path(run_dir) / "metrics.jsonl")
        result = json.loads((Path(run_dir) / "result.json").read_text())
    tokens_per_s = statistics.median(row["tokens_per_s"] for row in rows[WARMUP_STEPS:])
    return {
        "P": parscale_n,
        "params": result["params"],
        "tokens_per_s": tokens_per_s,
        "step_ms": 1000 * tokens / steps / tokens_per_s,
        "peak_memory_gb": rows[-1]["memory_gb"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-128")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--p-values", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("overrides", nargs="*", help="further sweeps.train overrides, e.g. seq_len=256")
    args = parser.parse_args(argv)
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must exceed the {WARMUP_STEPS} warm-up steps")
    config = load_config([f"model={args.model}", *args.overrides, "run_dir=unused"])
    print(f"{args.model}, {config.global_batch_size} x {config.seq_len} tokens per step, {args.steps} steps, "
          f"{args.threads} thread(s)")
    print(f"{'P':>2} {'N (non-emb.)':>13} {'tokens/s':>10} {'ms/step':>8} {'peak mem GB':>12}")
    for parscale_n in args.p_values:
        row = measure(parscale_n, args.model, args.steps, args.threads, args.overrides)
        print(f"{row['P']:>2} {row['params']:>13,} {row['tokens_per_s']:>10,.0f} {row['step_ms']:>8.1f} "
              f"{row['peak_memory_gb']:>12.3f}", flush=True)


if __name__ == "__main__":
    main()
