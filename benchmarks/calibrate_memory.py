"""Measures what the memory model of a training cell (sweeps/grid/resources.py) cannot derive from shapes alone:
how many bytes autograd keeps for the backward pass, per token, at the paper's real widths.

    python -m benchmarks.calibrate_memory [--seq-len 1024] [--sizes 0.5B,4.4B]
        [--out sweeps/grid/memory_calibration.json]

Real forward passes on this machine's CPU, under the training's precision (bf16 weights and compute, as
FSDP2's MixedPrecisionPolicy gives; SDPA attention, which on a CPU as on a GPU keeps O(sequence) memory
without a padding mask), with a saved-tensor hook recording every tensor autograd saves (weights excluded,
each storage counted once):
- per decoder layer: the saved bytes of a 2-layer model minus those of a 1-layer model, per token, at P = 1 —
  a layer runs the same for every stream, so at P streams it is P times this per input token (the 48 prefix
  keys add a few bytes, not counted);
- outside the layers (embedding, stream repetition, final norm, the aggregator, and the loss's gradient of
  the hidden states): a 0-layer model's saved bytes per token at P = 1 (plain Qwen2: no aggregator), and at
  P = 2, 4, 8 fitted as base + per_stream * P; the loss's float32 gradient of the LM head (vocabulary x hidden,
  whatever the number of tokens) is left out here and counted by the memory model on its own;
- one block's backward: the peak of live bytes (MemTracker) over a 2-layer model's forward and backward at a
  small vocabulary (so that the activations dominate), less the weights, all saved activations and the loss's
  working set, as a fraction of one block's saved bytes;
- the loss (sweeps/run/loss.py): the peak of live bytes (torch's MemTracker) over its forward and backward at
  two chunk sizes, less its inputs: the slope is its working set per chunk token and vocabulary entry, the
  rest, per LM-head parameter, what it holds whatever the chunk (the float32 head gradient and its bf16 copy).
Saved tensors scale linearly with the sequence length here (checked: 512 and 2048 tokens give the same
bytes per token at 0.5B to 0.01%), so a shorter sequence than 2048 is enough."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from models import Qwen2ParScaleForCausalLM, parscale_config
from models.sizes import PAPER_SIZES
from sweeps.run.loss import CausalLMLoss, linear_cross_entropy

CALIBRATION_FILE = Path(__file__).parents[1] / "sweeps" / "grid" / "memory_calibration.json"
CHUNK_TOKENS = 512


def _saved_bytes(module: torch.nn.Module, input_ids: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves in one forward pass of `module`, its parameters and the loss's head
    gradient (a float32 tensor of the head's shape) excluded."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    head = module.lm_head.weight
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        is_head_gradient = tensor.shape == head.shape and tensor.dtype == torch.float32
        if storage.data_ptr() not in weights and not is_head_gradient:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = module(input_ids)
    del loss
    return sum(saved.values())


def _model(size: str, parscale_n: int, layers: int) -> CausalLMLoss:
    config = parscale_config(size, parscale_n=parscale_n, num_hidden_layers=layers)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return CausalLMLoss(Qwen2ParScaleForCausalLM(config).to(torch.bfloat16))


def layer_bytes_per_token(size: str, seq_len: int) -> float:
    ids = torch.randint(0, 1000, (1, seq_len))
    two, one = (_saved_bytes(_model(size, 1, layers), ids) for layers in (2, 1))
    return (two - one) / seq_len


def outside_bytes_per_token(size: str, seq_len: int) -> dict[str, float]:
    """Saved bytes per input token outside the layers: `P1` at P = 1, `base + per_stream * P` for P > 1 (the
    fit's largest relative error over P = 2, 4, 8 is `fit_error`)."""
    ids = torch.randint(0, 1000, (1, seq_len))
    single = _saved_bytes(_model(size, 1, 0), ids) / seq_len
    streams = np.array([2, 4, 8])
    measured = np.array([_saved_bytes(_model(size, int(p), 0), ids) / seq_len for p in streams])
    per_stream, base = np.polyfit(streams, measured, 1)
    error = np.max(np.abs(base + per_stream * streams - measured) / measured)
    return {"P1": round(single, 2), "base": round(float(base), 2), "per_stream": round(float(per_stream), 2),
            "fit_error": round(float(error), 5)}


def block_backward_fraction(size: str, seq_len: int, parscale_n: int = 4, vocab_size: int = 4096) -> float:
    from torch.distributed._tools.mem_tracker import MemTracker

    config = parscale_config(size, parscale_n=parscale_n, num_hidden_layers=2, vocab_size=vocab_size)
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    module = CausalLMLoss(Qwen2ParScaleForCausalLM(config).to(torch.bfloat16), chunk_tokens=CHUNK_TOKENS)
    ids = torch.randint(0, vocab_size - 300, (1, seq_len))
    saved = _saved_bytes(module, ids)  # everything but the loss's float32 head gradient
    tracker = MemTracker()
    tracker.track_external(module)
    with tracker:
        module(ids).backward()
    weights = sum(p.numel() * p.element_size() for p in module.parameters())
    peak = tracker.get_tracker_snapshot("peak")[ids.device]["Total"] - weights
    block = layer_bytes_per_token(size, seq_len) * parscale_n * seq_len
    return (peak - saved) / block


def _loss_peak_bytes(hidden_size: int, vocab_size: int, tokens: int) -> float:
    """Peak live bytes of the loss's forward and backward over `tokens` tokens in one chunk, its inputs (the
    hidden states and the head weight, bf16) excluded."""
    from torch.distributed._tools.mem_tracker import MemTracker

    torch.manual_seed(0)
    hidden = torch.randn(tokens, hidden_size, dtype=torch.bfloat16, requires_grad=True)
    weight = (0.02 * torch.randn(vocab_size, hidden_size)).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, vocab_size, (tokens,))
    tracker = MemTracker()
    with tracker:
        linear_cross_entropy(hidden, weight, targets, tokens).backward()
    peak = tracker.get_tracker_snapshot("peak")[hidden.device]["Total"]
    return peak - (hidden.numel() + weight.numel()) * 2


def loss_bytes(hidden_size: int, vocab_size: int) -> tuple[float, float]:
    """(per logit, per head parameter): the loss's peak = per_logit x chunk tokens x vocabulary + per_head_param
    x vocabulary x hidden."""
    small, large = (_loss_peak_bytes(hidden_size, vocab_size, tokens) for tokens in (CHUNK_TOKENS, 2 * CHUNK_TOKENS))
    per_logit = (large - small) / (CHUNK_TOKENS * vocab_size)
    per_head_param = (small - per_logit * CHUNK_TOKENS * vocab_size) / (vocab_size * hidden_size)
    return per_logit, per_head_param


def calibrate(seq_len: int, sizes, result: dict, layers: bool = True) -> dict:
    """Measures `sizes` (and the loss) into `result`, the calibration so far; `layers=False` keeps the layers'
    numbers and measures the rest."""
    result.update(seq_len=seq_len, torch=torch.__version__, dtype="bfloat16", attention="sdpa")
    result.setdefault("layer_bytes_per_token", {})
    result.setdefault("outside_bytes_per_token", {})
    for size in sizes if sizes != [""] else []:
        if layers:
            result["layer_bytes_per_token"][size] = round(layer_bytes_per_token(size, seq_len), 2)
        outside = result["outside_bytes_per_token"][size] = outside_bytes_per_token(size, seq_len)
        print(f"{size}: {result['layer_bytes_per_token'][size]:.1f} B per token per layer; outside the layers "
              f"{outside['P1']:.1f} at P = 1, {outside['base']:.1f} + {outside['per_stream']:.1f} x P above",
              flush=True)
    fraction = block_backward_fraction("0.5B", seq_len)
    result["block_backward_fraction"] = round(fraction, 3)
    print(f"one block's backward: {fraction:.3f} x its saved activations at the peak")
    per_logit, per_head_param = loss_bytes(PAPER_SIZES["0.5B"].hidden_size, 151936)
    result["loss_bytes_per_logit"], result["loss_bytes_per_head_param"] = round(per_logit, 3), round(per_head_param, 3)
    print(f"loss: {per_logit:.2f} B per chunk token x vocabulary entry, {per_head_param:.2f} B per LM-head parameter")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.calibrate_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--sizes", default=",".join(PAPER_SIZES), help="the sizes to (re)measure; the others are kept")
    parser.add_argument("--keep-layers", action="store_true", help="keep the layers' numbers, measure the rest")
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    existing.pop("provisional", None)
    result = calibrate(args.seq_len, args.sizes.split(","), existing, layers=not args.keep_layers)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
