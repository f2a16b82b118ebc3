"""`python -m benchmarks.decoding [--json FILE]`: batch-1 decoding speed with the KV cache, the serving setting
of the paper's Figure 4, measured side by side in one run for tiny-128 and a 2-layer model of the paper's 0.5B
width, at P = 1, 2, 4, 8: transformers' default (a dynamic cache, eager forward) against a static cache with the
decode step compiled (models/decode_timing.py says how each is timed).
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

import torch

from models.decode_timing import MODES, measure_decoding
from models.modeling_parscale import Qwen2ParScaleForCausalLM
from models.presets import parscale_config

# The benchmarked shapes: tiny-128 as it is, and the paper's 0.5B layer shape two layers deep with the byte
# vocabulary (the paper's 151,936-token head would dominate CPU decoding of a 2-layer model).
SHAPES = {"tiny-128": ("tiny-128", {}), "0.5B, 2 layers": ("0.5B", {"num_hidden_layers": 2, "vocab_size": 259})}


def benchmark(parscale_ns, prompt_length, new_tokens, rounds) -> list[dict]:
    """Both modes for each shape and P; the modes alternate call by call over `rounds` rounds, best kept."""
    rows = []
    for label, (size, overrides) in SHAPES.items():
        for parscale_n in parscale_ns:
            torch.manual_seed(0)
            model = Qwen2ParScaleForCausalLM(parscale_config(size, parscale_n, **overrides))
            results = {mode: [] for mode in MODES}
            for _ in range(rounds):
                for mode in MODES:
                    results[mode].append(measure_decoding(model, mode, prompt_length, new_tokens, repeats=1))
            eager, compiled = (min(results[mode], key=lambda result: result.latency_s) for mode in MODES)
            rows.append(
                {"shape": label, "P": parscale_n, "dynamic_eager": asdict(eager), "static_compiled": asdict(compiled),
                 "speedup": eager.latency_s / compiled.latency_s,
                 "compile_s": results["static-compiled"][0].warmup_s}  # fmt: skip
            )
    return rows


def format_table(rows) -> str:
    header = (f"{'shape':<16}{'P':>3}{'eager tok/s':>13}{'compiled tok/s':>16}{'speed-up':>10}{'compile s':>11}"
              f"{'KV MiB':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        eager, compiled = row["dynamic_eager"], row["static_compiled"]
        lines.append(
            f"{row['shape']:<16}{row['P']:>3}{eager['tokens_per_s']:>13.1f}{compiled['tokens_per_s']:>16.1f}"
            f"{row['speedup']:>10.2f}{row['compile_s']:>11.1f}{eager['kv_cache_bytes'] / 2**20:>8.2f}"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parscale-n", type=int, nargs="+", default=[1, 2, 4, 8], help="values of P")
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="timed generate() calls per mode, alternating; best kept")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    setting = (f"batch 1, {args.prompt_length} prompt + {args.new_tokens} new tokens, greedy; CPU, {args.threads} "
               f"thread(s), torch {torch.__version__}; CPU time, best of {args.rounds} alternating calls per mode")
    print(setting)
    rows = benchmark(args.parscale_n, args.prompt_length, args.new_tokens, args.rounds)
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"setting": setting, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
