"""Measures what the memory model of a training cell (sweeps/resources.py) cannot derive from shapes alone:
how many bytes autograd keeps for the backward pass, per token, at the paper's real widths.

    python -m sweeps.calibrate_memory [--seq-len 1024] [--out sweeps/memory_calibration.json]

Real forward passes on this machine's CPU, under the training's precision (bf16 weights and compute, as
FSDP2's MixedPrecisionPolicy gives; SDPA attention, which on a CPU as on a GPU keeps O(sequence) memory
without a padding mask), with a saved-tensor hook recording every tensor autograd saves (weights excluded,
each storage counted once):
- per decoder layer: the saved bytes of a 2-layer model minus those of a 1-layer model, per token, at P = 1 —
  a layer runs the same for every stream, so at P streams it is P times this per input token (the 48 prefix
  keys add a few bytes, not counted);
- outside the layers (embedding, stream repetition, final norm, the aggregator and the chunked loss's saved
  inputs): a 0-layer model's saved bytes per token at P = 1 (plain Qwen2: no aggregator), and at P = 2, 4, 8
  fitted as base + per_stream * P;
- the loss's transient: the peak of live bytes (measured with torch's MemTracker) while one chunk of the
  chunked cross-entropy runs forward and backward, per chunk token and vocabulary entry.
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

from .loss import CausalLMLoss, chunked_cross_entropy

CALIBRATION_FILE = Path(__file__).with_name("memory_calibration.json")
CHUNK_TOKENS = 512


def _saved_bytes(module: torch.nn.Module, input_ids: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves in one forward pass of `module`, its parameters excluded."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    saved: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in weights:
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


def loss_transient_bytes_per_logit(hidden_size: int, vocab_size: int, chunk_tokens: int = CHUNK_TOKENS) -> float:
    """Peak live bytes of one chunk's loss forward and backward, per chunk token x vocabulary entry."""
    from torch.distributed._tools.mem_tracker import MemTracker

    torch.manual_seed(0)
    hidden = torch.randn(chunk_tokens, hidden_size, dtype=torch.bfloat16, requires_grad=True)
    weight = (0.02 * torch.randn(vocab_size, hidden_size)).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, vocab_size, (chunk_tokens,))
    tracker = MemTracker()
    with tracker:
        chunked_cross_entropy(hidden, weight, targets, chunk_tokens).backward()
    peak = tracker.get_tracker_snapshot("peak")[hidden.device]["Total"]
    inputs = (hidden.numel() + 2 * weight.numel()) * 2  # the inputs, the weight and its gradient (bf16)
    return (peak - inputs) / (chunk_tokens * vocab_size)


def calibrate(seq_len: int) -> dict:
    result = {"seq_len": seq_len, "torch": torch.__version__, "dtype": "bfloat16", "attention": "sdpa",
              "layer_bytes_per_token": {}, "outside_bytes_per_token": {}}
    for size in PAPER_SIZES:
        result["layer_bytes_per_token"][size] = round(layer_bytes_per_token(size, seq_len), 2)
        outside = result["outside_bytes_per_token"][size] = outside_bytes_per_token(size, seq_len)
        print(f"{size}: {result['layer_bytes_per_token'][size]:.1f} B per token per layer; outside the layers "
              f"{outside['P1']:.1f} at P = 1, {outside['base']:.1f} + {outside['per_stream']:.1f} x P above",
              flush=True)
    shape = PAPER_SIZES["0.5B"]
    result["loss_bytes_per_logit"] = round(loss_transient_bytes_per_logit(shape.hidden_size, 151936), 3)
    print(f"loss: {result['loss_bytes_per_logit']:.2f} B per chunk token x vocabulary entry")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sweeps.calibrate_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--out", type=Path, default=CALIBRATION_FILE)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    result = calibrate(args.seq_len)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
