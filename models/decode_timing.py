"""Batch-1 decoding with the KV cache, timed: transformers' default (a dynamic cache, eager forward) or a
static cache with the decode step compiled by torch.compile. `measure_decoding` times one model on its own
device (CUDA or CPU); benchmarks/decoding.py compares the two modes side by side, sweeps/gpu_check.py runs
them on a GPU.

Latency is the time of one generate() call, prefill included: wall-clock time on CUDA (after a synchronize),
the process's CPU time on a CPU, which unlike wall-clock time does not count the other jobs of a shared
machine (run with one torch thread, it is the latency on an idle core). The compiled mode is timed after a
first call that compiles (`warmup_s`, wall-clock, as compilation runs in worker processes). Peak memory is CUDA's
max allocated bytes over the timed calls; CPUs have no allocator peak counter, so it is None there and
`kv_cache_bytes` (the cache after the last token, P x the real tokens' keys and values) is given instead.
"""

import time
from dataclasses import dataclass

import torch
from transformers import CompileConfig

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
                "eos_token_id": None, "pad_token_id": model.config.get_text_config().pad_token_id or 0,
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
    vocab_size = model.config.get_text_config().vocab_size
    prompt = torch.randint(0, vocab_size, (1, prompt_length), generator=generator).to(device)
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
