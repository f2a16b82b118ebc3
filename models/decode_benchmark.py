"""Batch-1 decoding speed with the KV cache, the serving setting of the paper's Figure 4: transformers' default
(a dynamic cache, eager forward) against a static cache with the decode step compiled by torch.compile.
`python -m models.decode_benchmark` measures both side by side in one run for tiny-128 and a 2-layer model
of the paper's 0.5B width, at P = 1, 2, 4, 8; `measure_decoding` measures one model on its own device (CUDA
or CPU), e.g. for a GPU check.

Latency is the time of one generate() call, prefill included: wall-clock time on CUDA (after a synchronize),
the process's CPU time on a CPU, which unlike wall-clock time does not count the other jobs of a shared
machine (run with one torch thread, it is the latency on an idle core). The compiled mode is timed after a
first call that compiles (`warmup_s`, wall-clock, as compilation runs in worker processes). Peak memory is CUDA's
max allocated bytes over the timed calls; CPUs have no allocator peak counter, so it is None there and
`kv_cache_bytes` (the cache after the last token, P x the real tokens' keys and values) is given instead.
"""

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from transformers import CompileConfig

from .modeling_parscale import Qwen2ParScaleForCausalLM
from .presets import parscale_config

MODES = ("dynamic-eager", "static-compiled")


@dataclass(frozen=True)
class DecodeResult:
    """One model's batch-1 decoding in one mode (see the module docstring)."""

    mode: str
    prompt_length: int
    new_tokens: int
    latency_s: float  # best of the timed generate() calls
    tokens_per_s: float  # new tokens per second of latency
    peak_memory_bytes: int | None  # CUDA max allocated; None on CPU
    kv_cache_bytes: int
    warmup_s: float  # wall-clock time of the first, untimed call (compilation, for the compiled mode)


def _generate(model, prompt, new_tokens, mode):
    settings = {"max_new_tokens": new_tokens, "min_new_tokens": new_tokens, "do_sample": False,
                "eos_token_id": None, "pad_token_id": model.config.pad_token_id or 0,
                "return_dict_in_generate": True}  # fmt: skip
    if mode == "dynamic-eager":
        settings["disable_compile"] = True
    else:
        # transformers compiles the decode step of a static cache by itself on GPUs (CUDA graphs); on other
        # devices only when asked to, with a compile config.
        on_cuda = prompt.device.type == "cuda"
        compile_config = CompileConfig(fullgraph=True, dynamic=False, mode="reduce-overhead" if on_cuda else "default")
        compile_config._compile_all_devices = True
        settings.update(cache_implementation="static", compile_config=compile_config)
    with torch.no_grad():
        return model.generate(prompt, **settings)


def _clock(device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return time.perf_counter()
    return time.process_time()


def measure_decoding(
    model, mode: str, prompt_length: int = 64, new_tokens: int = 64, repeats: int = 3, seed: int = 0
) -> DecodeResult:
    """Greedy batch-1 decoding of `new_tokens` tokens after a random `prompt_length`-token prompt, with the
    model on its own device and dtype; `mode` is "dynamic-eager" or "static-compiled"."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}.")
    model.eval()
    device = model.device
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, model.config.vocab_size, (1, prompt_length), generator=generator).to(device)
    start = time.perf_counter()
    _generate(model, prompt, new_tokens, mode)
    _clock(device)  # synchronizes on CUDA
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    latencies = []
    for _ in range(repeats):
        start = _clock(device)
        output = _generate(model, prompt, new_tokens, mode)
        latencies.append(_clock(device) - start)
    cache_bytes = sum(t.numel() * t.element_size() for layer in output.cache.layers for t in (layer.keys, layer.values))
    return DecodeResult(
        mode=mode,
        prompt_length=prompt_length,
        new_tokens=new_tokens,
        latency_s=min(latencies),
        tokens_per_s=new_tokens / min(latencies),
        peak_memory_bytes=torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        kv_cache_bytes=cache_bytes,
        warmup_s=warmup_s,
    )


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
