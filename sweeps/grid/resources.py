"""The memory and time of one training cell, predicted before it runs: what the launcher plans each cell with
(sweeps/grid/resource_plan.py), what the plan table in docs/sweeps.md shows, and what the GPU check
(sweeps/gpu_check.py) measures against. The shape is counted off the model the cell's config builds, on the
meta device, so any backbone family's own modules (biases, Qwen3's q/k norms and head_dim) are counted.

Memory per process (bytes; N = all parameters, W = processes, layout as in sweeps/run/parallelize.py):
- sharded state (FSDP2, bf16 or fp32): float32 parameters 4N/W, float32 gradients 4N/W, AdamW's two float32
  moments 8N/W (a single fp32 process without FSDP: the same with W = 1);
- gathered weights (the compute copies FSDP2 all-gathers, bf16 = 2 bytes, or 4 for fp32):
  ZeRO-3 (`fsdp`): the root's (embedding tied to the LM head, final norm, aggregator), kept through the step,
  two decoder blocks (the one computing and the one prefetched), and a block's unsharded gradient with its
  float32 copy for the reduce-scatter; ZeRO-2 (`ddp`): every block's weights from forward to backward, and
  with gradient accumulation the unsharded float32 gradients as well;
- activations: what autograd saves, calibrated at the real widths (benchmarks/calibrate_memory.py,
  memory_calibration.json): per decoder layer and stream-token (a layer runs once per stream), plus outside
  the layers per input token; with activation checkpointing each block keeps only its bf16 input, and the
  backward pass recomputes one block at a time;
- transient, on top of the activations: the larger of the loss's working set (sweeps/run/loss.py, calibrated:
  its float32 LM-head gradient and bf16 copy, per head parameter, plus one chunk's logits, per chunk token x
  vocabulary entry) and, later in the backward pass, the root's unsharded gradient with one block's backward
  (calibrated as a fraction of the block's saved activations);
- margin: 10% of everything that is allocated and freed during a step (caching-allocator fragmentation)
  plus 0.5 GiB of workspaces (cuBLAS, compiled kernels, NCCL).
The sum is the predicted peak of reserved memory. A cell fits a GPU when it stays within the GPU's memory as
its datasheet gives it (decimal GB), about 6% below what the device reports in GiB: that gap holds the CUDA
context and communication buffers.

Time: model FLOPs per input token = P x (6 x the blocks' matrix parameters + 12 x layers x heads x head_dim
(the hidden size in the paper's shapes, not in Qwen3's) x the mean causal context, prefix included) + 6 x
(aggregator + LM head) matrix parameters, the LM head running once after aggregation (Chen et al. 2025; the
6N rule of Kaplan et al. 2020). Activation checkpointing adds a second forward of the blocks. A step takes
(model + recomputed) FLOPs / (W x peak bf16 FLOP/s x utilisation) at an assumed utilisation (`mfu`, the
fraction of peak that goes into FLOPs); MFU as reported counts model FLOPs only. A checkpoint writes the
float32 parameters and both moments (12N bytes) from all processes at once."""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from importlib import resources

GIB = 2**30
CALIBRATION_FILE = "memory_calibration.json"  # package data, written by benchmarks/calibrate_memory.py
FRAGMENTATION = 0.10
WORKSPACE_BYTES = 0.5 * GIB
STATE_BYTES_PER_PARAM = 16  # fp32 parameter, fp32 gradient, two fp32 AdamW moments
CHECKPOINT_BYTES_PER_PARAM = 12  # what a checkpoint writes: the parameter and the two moments


@dataclass(frozen=True)
class Shape:
    """What the cost depends on in a model: its widths and its parameter counts by where they live."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    vocab_size: int
    prefix_tokens: int
    parscale_n: int
    attention_width: int  # query heads x head_dim (Qwen3 sets head_dim apart from hidden_size / heads)
    backbone: str  # the decoder family (the memory calibration measured the released qwen2 layout)
    total_params: int
    layer_params: int  # one decoder block, its prefixes (and a family's q/k norms) included
    layer_matrix_params: int  # one block's projection weights (what multiplies every token)
    root_params: int  # embedding (tied LM head), final norm, aggregator
    aggregator_matrix_params: int


@functools.cache
def shape_of(size: str, parscale_n: int, overrides: tuple = ()) -> Shape:
    """A named size's shape and parameter counts; `overrides`: (field, value) pairs, `backbone` among them."""
    from models import parscale_config

    return shape_from_config(parscale_config(size, parscale_n=parscale_n, **dict(overrides)))


def shape_of_model(model: Mapping, parscale_n: int) -> Shape:
    """The shape of a run's conf/model mapping (any backbone family, any overridden field) at P = parscale_n."""
    return _shape_of_mapping(json.dumps({**model, "parscale_n": parscale_n}, sort_keys=True))


@functools.cache
def _shape_of_mapping(mapping: str) -> Shape:
    from models import config_from_mapping

    return shape_from_config(config_from_mapping(json.loads(mapping)))


def shape_from_config(config) -> Shape:
    """Counted on the meta device (nothing allocated) from the model the config builds, so that every family's
    own modules (biases, q/k norms, head_dim) are counted as they are."""
    import torch

    from models.presets import backbone_of, new_model

    with torch.device("meta"):
        model = new_model(config)
    backbone = backbone_of(config)
    block = model.model.layers[0]
    matrices = sum(module.weight.numel() for module in block.modules() if isinstance(module, torch.nn.Linear))
    total = sum(p.numel() for p in model.parameters())
    layer = sum(p.numel() for p in block.parameters())
    aggregator = model.model.aggregate_layer
    aggregator_matrices = 0 if aggregator is None else sum(m.weight.numel() for m in aggregator if hasattr(m, "weight"))
    return Shape(
        hidden_size=backbone.hidden_size, intermediate_size=backbone.intermediate_size,
        num_layers=backbone.num_hidden_layers, vocab_size=backbone.vocab_size,
        prefix_tokens=config.parscale_n_tokens if config.parscale_n > 1 else 0, parscale_n=config.parscale_n,
        attention_width=backbone.num_attention_heads * block.self_attn.head_dim,
        backbone=backbone.model_type.removesuffix("_parscale"),  # qwen2_parscale: the released qwen2 layout
        total_params=total, layer_params=layer, layer_matrix_params=matrices,
        root_params=total - backbone.num_hidden_layers * layer, aggregator_matrix_params=aggregator_matrices,
    )


@dataclass(frozen=True)
class Layout:
    """How one cell runs: everything its memory and time depend on besides the model's shape."""

    seq_len: int
    micro_batch_size: int
    global_batch_size: int
    processes: int = 1
    activation_checkpointing: bool = False
    strategy: str = "fsdp"  # "fsdp" (ZeRO-3), "ddp" (ZeRO-2), or "single" (one fp32 process, no FSDP)
    precision: str = "bf16"
    loss_chunk_tokens: int = 4096

    @property
    def accumulation(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.processes)


@functools.lru_cache(maxsize=1)
def calibration() -> dict:
    return json.loads(resources.files(__package__).joinpath(CALIBRATION_FILE).read_text())


def layer_bytes_per_token(size: str, shape: Shape) -> float:
    """Saved bytes per stream-token of one decoder block: measured at the paper's sizes (of the released qwen2
    layout); for other sizes and families the least-squares fit bytes = a x hidden + b x intermediate over the
    paper's six."""
    measured = calibration()["layer_bytes_per_token"]
    if size in measured and shape.backbone == "qwen2":
        return measured[size]
    return _width_fit("layer")(shape.hidden_size, shape.intermediate_size)


def outside_bytes_per_token(size: str, shape: Shape) -> float:
    """Saved bytes per input token outside the decoder blocks (embedding, final norm, aggregator, the loss's
    saved inputs): measured at the paper's sizes, else from the width fit."""
    entry = calibration()["outside_bytes_per_token"].get(size) if shape.backbone == "qwen2" else None
    if entry is None:
        entry = {key: _width_fit(key)(shape.hidden_size, shape.intermediate_size)
                 for key in ("P1", "base", "per_stream")}
    return entry["P1"] if shape.parscale_n == 1 else entry["base"] + entry["per_stream"] * shape.parscale_n


@functools.cache
def _width_fit(quantity: str):
    import numpy as np

    from models.sizes import PAPER_SIZES

    cal = calibration()
    sizes = [size for size in PAPER_SIZES if size in cal["layer_bytes_per_token"]]
    widths = np.array([[PAPER_SIZES[s].hidden_size, PAPER_SIZES[s].intermediate_size] for s in sizes], float)
    if quantity == "layer":
        values = np.array([cal["layer_bytes_per_token"][s] for s in sizes])
    else:
        values = np.array([cal["outside_bytes_per_token"][s][quantity] for s in sizes])
    coefficients = np.linalg.lstsq(widths, values, rcond=None)[0]
    return lambda hidden, intermediate: float(coefficients @ np.array([hidden, intermediate], float))


@dataclass(frozen=True)
class Memory:
    """Predicted bytes per process at the step's peak, by part."""

    parameters: float
    gradients: float
    optimizer: float
    gathered: float
    activations: float
    transient: float
    margin: float

    @property
    def peak(self) -> float:
        return sum(asdict(self).values())

    def gib(self) -> dict[str, float]:
        return {**{key: value / GIB for key, value in asdict(self).items()}, "peak": self.peak / GIB}


def memory(size: str, shape: Shape, layout: Layout) -> Memory:
    n, w, p = shape.total_params, layout.processes, shape.parscale_n
    compute_bytes = 2 if layout.precision == "bf16" else 4
    sharded = 1 if layout.strategy == "single" else w
    parameters, gradients, optimizer = 4 * n / sharded, 4 * n / sharded, 8 * n / sharded
    block = shape.layer_params
    if layout.strategy == "single":
        gathered = 0.0
    elif layout.strategy == "fsdp":
        gathered = compute_bytes * (shape.root_params + 2 * block) + (compute_bytes + 4) * block
    else:  # ddp: ZeRO-2
        gathered = compute_bytes * n + (4 * n if layout.accumulation > 1 else (compute_bytes + 4) * block)

    tokens = layout.micro_batch_size * layout.seq_len
    stream_tokens = p * tokens
    per_layer = layer_bytes_per_token(size, shape) * stream_tokens * compute_bytes / 2
    outside = outside_bytes_per_token(size, shape) * tokens * compute_bytes / 2
    if layout.activation_checkpointing:
        activations = shape.num_layers * compute_bytes * shape.hidden_size * stream_tokens + per_layer + outside
    else:
        activations = shape.num_layers * per_layer + outside
    cal = calibration()
    head = shape.vocab_size * shape.hidden_size
    loss = (cal["loss_bytes_per_head_param"] * head
            + cal["loss_bytes_per_logit"] * min(layout.loss_chunk_tokens, tokens) * shape.vocab_size)
    root_gradient = 0 if layout.strategy == "single" else compute_bytes * shape.root_params
    transient = max(loss, root_gradient + cal["block_backward_fraction"] * per_layer)
    margin = FRAGMENTATION * (gathered + activations + transient) + WORKSPACE_BYTES
    return Memory(parameters, gradients, optimizer, gathered, activations, transient, margin)


def model_flops_per_token(shape: Shape, seq_len: int) -> float:
    """Training FLOPs (forward and backward) per input token, recomputation not counted."""
    context = (seq_len + 1) / 2 + shape.prefix_tokens
    blocks = 6 * shape.layer_matrix_params + 12 * shape.attention_width * context
    return shape.parscale_n * shape.num_layers * blocks + 6 * (shape.aggregator_matrix_params
                                                               + shape.hidden_size * shape.vocab_size)


def recompute_flops_per_token(shape: Shape, seq_len: int) -> float:
    """The second forward pass of the blocks that activation checkpointing costs, per input token."""
    context = (seq_len + 1) / 2 + shape.prefix_tokens
    return shape.parscale_n * shape.num_layers * (2 * shape.layer_matrix_params + 4 * shape.attention_width * context)


@dataclass(frozen=True)
class StepTime:
    seconds: float
    tokens_per_s: float
    mfu: float  # model FLOPs / (processes x peak) per second


def step_time(shape: Shape, layout: Layout, peak_flops: float, utilisation: float) -> StepTime:
    model = model_flops_per_token(shape, layout.seq_len)
    work = model + (recompute_flops_per_token(shape, layout.seq_len) if layout.activation_checkpointing else 0.0)
    tokens = layout.global_batch_size * layout.seq_len
    seconds = tokens * work / (layout.processes * peak_flops * utilisation)
    return StepTime(seconds, tokens / seconds, utilisation * model / work)


def checkpoint_seconds(shape: Shape, processes: int, write_gbps_per_process: float, filesystem_gbps: float) -> float:
    """A full checkpoint written by all processes at once, at the slower of their own and the file system's rate."""
    rate = min(processes * write_gbps_per_process, filesystem_gbps) * 1e9
    return CHECKPOINT_BYTES_PER_PARAM * shape.total_params / rate

