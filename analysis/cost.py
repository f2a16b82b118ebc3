"""Analytic inference cost of a ParScale model: memory and latency of generation, no GPU needed.

    python -m analysis.cost --size 1.6B --P 8 --batch 1        # one setting (64 input + 64 output tokens)
    python -m analysis.cost --compare                          # parallel vs parameter scaling, per batch size
    python -m analysis.cost --compare --json                   # the same as JSON

What it reproduces (`tests/test_analysis_cost.py` checks it): the paper's inference-cost analysis (Figure 4),
made with llm-analysis as its released cost_analysis.py configures it. Against that tool's current source
(`analysis/reference/`: the recording script and the 96 settings it recorded) the model agrees within 0.5%
on memory everywhere and, at 64 + 64 tokens, within 2.7% on latency for the six sizes at P in {1, 8} and
batch in {1, 8} (it is 0.7-2.7% below: it runs 63 decoding steps after the prefill where the tool runs 64).
1.6B at batch 1, 64 + 64 tokens, A100-SXM-80GB, efficiencies 0.7 / 0.9: P = 1 3.383 GB, 0.1263 s (paper
3.38 GB, 0.128 s); P = 8 3.475 GB, 0.1424 s (3.47 GB, 0.144 s). Parallel scaling's memory / latency increase
is 21.1 / 5.6 times smaller than parameter scaling's at batch 1 (paper 22 / 6), 12.4 / 2.9 at batch 2
(13 / 3), 6.8 / 1.53 at 4 (7 / 1.7) and 3.6 / 0.81 at 8 (3.6 / 0.9).

The accounting:

Parameters are counted from the model's shape exactly as ``models.count_parameters`` counts them: 36
Qwen2 layers (q/k/v with biases, o, a gated MLP of three matrices, two RMSNorms), the final norm, the
token embedding tied to the LM head, and for P > 1 each layer's key/value prefixes (P streams x 48
positions) and the aggregator (Linear(P h -> h), SiLU, Linear(h -> P)). Another backbone family's shape
(``ModelShape.from_config`` of a ``ParScaleConfig``) counts its own head_dim, biases and Qwen3's q/k norms.

Memory = weights + KV cache + activations, everything in bf16:
- weights: every parameter, embedding included, 2 bytes each;
- KV cache: 2 (K, V) x layers x KV heads x head_dim per position, for P x batch rows, each holding the
  prompt, the 48 prefix positions (P > 1) and the generated tokens but the last;
- activations: the prefill peak, the larger of a layer's largest tensor (the MLP's intermediate, for
  the P x batch rows) and the logits of the batch rows (the LM head runs once, after aggregation), both
  over every prefill position, the prefix's included, as the paper's analysis counts them. (Recent
  transformers keep only the last position's logits in ``generate``, so real activations are smaller.)
Memory is reported in GiB (2**30 bytes), which the paper's tool prints as "GB".

Latency = prefill + (output tokens - 1) decode steps (the prefill already yields the first token). In a
forward pass each part costs the larger of its FLOPs / (peak x FLOP efficiency) and its bytes /
(bandwidth x memory efficiency); per layer the parts are
- attention: FLOPs 2 x positions x (q, k, v, o matrices) + 4 x positions x context x hidden (scores and
  their weighted sum over every visible key), positions = P x batch x new positions; bytes: its weights,
  three hidden states per position (input, attention output, projection) and the KV-cache traffic: the
  prefill writes the cache once; each decode step moves it three times at its current length, because a
  dynamic cache grows by concatenation (read the old cache, write the new one) and attention then reads it;
- the MLP: FLOPs 2 x positions x its three matrices; bytes: its weights and the intermediate per position;
- two RMSNorms, each reading and writing the hidden states (memory-bound).
The prefix is processed as 48 extra positions per stream at prefill, as the paper's analysis does (the
released implementation and this package's model only prepend it to keys and values, so this slightly
overestimates its prefill). The embedding lookup (negligible), the aggregator and the LM head run once per
batch row, not P times; the last two each cost the larger of their FLOPs and reading their weights.
Where the model and the tool part: at longer outputs the tool charges every decoding step two passes over
the final KV cache, this model three over the cache as it grows, 4-7% more latency at 512 + 512 tokens,
P = 8, batch 8.

The paper's comparison (``compare_scaling``) averages memory and latency over input = output length in
{64, 128, 256, 512}, then compares the 1.6B model at P = 8 with parameter scaling to the same loss: the
P = 1 sizes' averaged memory and latency interpolated linearly in their published losses.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd

from models import parscale_config
from models.presets import backbone_of
from models.sizes import PAPER_SIZES, TINY_SIZES
from parscale_law import load_published
from parscale_law.arguments import CommandParser, fraction, positive_int
from parscale_law.errors import report_error

from .gpus import PAPER_GPU, GPUSpec, get_gpu, gpu_name, gpu_names

BYTES_PER_VALUE = 2  # bf16
GIB = 2**30
PAPER_LENGTHS = (64, 128, 256, 512)
PAPER_BATCHES = (1, 2, 4, 8)
PAPER_FLOP_EFFICIENCY = 0.7
PAPER_MEMORY_EFFICIENCY = 0.9
# The paper's Figure 4: the 1.6B model at P = 8 against the 2.8B and 4.4B models, on Stack-V2-Python losses.
PAPER_BASE, PAPER_LARGER, PAPER_COMPARE_P, PAPER_DATASET = "1.6B", ("2.8B", "4.4B"), 8, "stack-v2-python"
# Backbone families whose q/k/v projections always have biases (the released layout's model_type included), and
# those with an RMSNorm over each query and key head (a parameter vector of head_dim each).
QKV_BIAS_FAMILIES = ("qwen2", "qwen2_parscale")
QK_NORM_FAMILIES = ("qwen3",)


@dataclass(frozen=True)
class ModelShape:
    """What the cost depends on: a decoder backbone's shape and the ParScale prefix length. The defaults are the
    released Qwen2 layout (biases on q, k and v; head_dim = hidden / heads); other families set theirs."""

    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    vocab_size: int
    prefix_tokens: int
    tied_embeddings: bool = True
    explicit_head_dim: int | None = None  # a family's own head_dim (Qwen3's); None: hidden / heads
    qkv_bias: bool = True  # biases on the q, k and v projections (Qwen2's; others' attention_bias)
    output_bias: bool = False  # a bias on the attention's output projection (attention_bias outside Qwen2)
    mlp_bias: bool = False  # biases on the MLP's three projections (Llama's mlp_bias)
    qk_norm: bool = False  # Qwen3's RMSNorm over each head of the queries and keys

    @classmethod
    def from_config(cls, config) -> ModelShape:
        """From a ``Qwen2ParScaleConfig``, or a ``ParScaleConfig`` whose backbone config holds the shape (its
        head_dim, biases and q/k norms)."""
        backbone = backbone_of(config)
        attention_bias = bool(getattr(backbone, "attention_bias", False))
        return cls(
            hidden_size=backbone.hidden_size,
            intermediate_size=backbone.intermediate_size,
            num_layers=backbone.num_hidden_layers,
            num_heads=backbone.num_attention_heads,
            num_kv_heads=backbone.num_key_value_heads,
            vocab_size=backbone.vocab_size,
            prefix_tokens=config.parscale_n_tokens,
            tied_embeddings=backbone.tie_word_embeddings,
            explicit_head_dim=getattr(backbone, "head_dim", None),
            qkv_bias=backbone.model_type in QKV_BIAS_FAMILIES or attention_bias,
            output_bias=attention_bias,
            mlp_bias=bool(getattr(backbone, "mlp_bias", False)),
            qk_norm=backbone.model_type in QK_NORM_FAMILIES,
        )

    @classmethod
    def from_size(cls, size: str, **overrides) -> ModelShape:
        """A named size of ``models`` ("1.6B", "tiny-96", ...); ``overrides`` set config fields (``backbone``
        among them)."""
        return cls.from_config(parscale_config(size, **overrides))

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim or self.hidden_size // self.num_heads

    @property
    def kv_bytes_per_position(self) -> int:
        """KV-cache bytes of one position of one row, one layer."""
        return 2 * self.num_kv_heads * self.head_dim * BYTES_PER_VALUE

    @property
    def attention_matrix_params(self) -> int:
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return 2 * h * q + 2 * h * kv  # q and o, k and v

    @property
    def attention_bias_params(self) -> int:
        q, kv = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        return (q + 2 * kv if self.qkv_bias else 0) + (self.hidden_size if self.output_bias else 0)

    @property
    def layer_matrix_params(self) -> int:
        return self.attention_matrix_params + 3 * self.hidden_size * self.intermediate_size

    @property
    def layer_params(self) -> int:
        mlp_biases = 2 * self.intermediate_size + self.hidden_size if self.mlp_bias else 0
        norms = 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)  # two RMSNorms (+ q/k norms)
        return self.layer_matrix_params + self.attention_bias_params + mlp_biases + norms

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size * (1 if self.tied_embeddings else 2)

    def prefixes_per_stream(self, P: int) -> int:
        """Prefix positions each stream attends to (none at P = 1, where the model is plain Qwen2)."""
        return self.prefix_tokens if P > 1 else 0

    def aggregator_params(self, P: int) -> int:
        h = self.hidden_size
        return (P * h * h + h + h * P + P) if P > 1 else 0

    def non_embedding_params(self, P: int) -> int:
        prefixes = self.num_layers * 2 * P * self.num_kv_heads * self.prefixes_per_stream(P) * self.head_dim
        return self.num_layers * self.layer_params + self.hidden_size + prefixes + self.aggregator_params(P)

    def total_params(self, P: int) -> int:
        return self.non_embedding_params(P) + self.embedding_params


# Size families a planner can widen to any parameter count: the named sizes share every shape but the width.
FAMILIES = {"paper": PAPER_SIZES, "tiny": TINY_SIZES}
# Intermediate sizes are rounded to these multiples, as the family's named sizes are.
INTERMEDIATE_MULTIPLE = {"paper": 128, "tiny": 8}
TRAINING_SEQUENCE = {"paper": 2048, "tiny": 64}


def family_of(size: str) -> str:
    """The family ("paper" or "tiny") a named size belongs to."""
    for family, sizes in FAMILIES.items():
        if size in sizes:
            return family
    raise ValueError(f"unknown size {size!r}; choose one of {[name for sizes in FAMILIES.values() for name in sizes]}")


def shape_for_params(params: float, P: int, family: str = "paper") -> ModelShape:
    """The narrowest model of ``family`` whose non-embedding parameter count with P streams (prefixes and
    aggregator included, as the fitter's N) reaches ``params`` (to a relative 1e-6, so a named size's own
    count gives that size). Widths are multiples of the head count; the intermediate size follows the
    family's named sizes, interpolated in width (their ratio ~5.4)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown family {family!r}; choose one of {list(FAMILIES)}")
    if not (math.isfinite(params) and params > 0):
        raise ValueError(f"params={params!r} must be finite and positive")
    named = sorted(FAMILIES[family].values(), key=lambda shape: shape.hidden_size)
    base = ModelShape.from_size(named[0].name)
    widths = [shape.hidden_size for shape in named]
    ratios = [shape.intermediate_size / shape.hidden_size for shape in named]
    multiple = INTERMEDIATE_MULTIPLE[family]

    def at(units: int) -> ModelShape:
        width = units * base.num_heads
        inner = multiple * max(1, round(float(np.interp(width, widths, ratios)) * width / multiple))
        return replace(base, hidden_size=width, intermediate_size=inner)

    params = params * (1 - 1e-6)
    low, high = 1, 1
    while at(high).non_embedding_params(P) < params:
        low, high = high, 2 * high
        if high > 2**20:
            raise ValueError(f"params={params:.3g} is beyond any width of the {family} family")
    while low < high:  # smallest width reaching params
        middle = (low + high) // 2
        low, high = (middle + 1, high) if at(middle).non_embedding_params(P) < params else (low, middle)
    return at(low)


def training_flops(shape: ModelShape, P: int, tokens: float, sequence_length: int | None = None) -> float:
    """FLOPs to train on ``tokens`` tokens: 3 x the forward pass (forward + backward), where a token's
    forward pass runs the backbone P times (2 FLOPs per matrix parameter, plus causal attention over
    ``sequence_length`` positions: 2 x sequence_length x hidden per layer), then the aggregator and the
    LM head once. The 6ND rule with the streams made explicit."""
    length = sequence_length or TRAINING_SEQUENCE["tiny" if shape.vocab_size < 1000 else "paper"]
    per_stream = shape.num_layers * (2 * shape.layer_matrix_params + 2 * length * shape.num_heads * shape.head_dim)
    per_token = P * per_stream + 2 * shape.aggregator_params(P) + 2 * shape.vocab_size * shape.hidden_size
    return 3.0 * per_token * float(tokens)


@dataclass(frozen=True)
class InferenceCost:
    """Memory (bytes) and latency (seconds) of generating ``output_tokens`` after ``input_tokens``."""

    size: str
    P: int
    batch: int
    input_tokens: int
    output_tokens: int
    gpu: str
    weight_bytes: float
    kv_cache_bytes: float
    activation_bytes: float
    prefill_s: float
    decode_s: float

    @property
    def memory_bytes(self) -> float:
        return self.weight_bytes + self.kv_cache_bytes + self.activation_bytes

    @property
    def memory_gb(self) -> float:
        """GiB, the unit the paper calls GB."""
        return self.memory_bytes / GIB

    @property
    def latency_s(self) -> float:
        return self.prefill_s + self.decode_s

    def to_dict(self) -> dict:
        return {**asdict(self), "memory_gb": self.memory_gb, "latency_s": self.latency_s}


def inference_cost(
    size: str | ModelShape,
    P: int,
    batch: int = 1,
    input_tokens: int = 64,
    output_tokens: int = 64,
    gpu: str | GPUSpec = PAPER_GPU,
    flop_efficiency: float = PAPER_FLOP_EFFICIENCY,
    memory_efficiency: float = PAPER_MEMORY_EFFICIENCY,
) -> InferenceCost:
    """The modelled cost of ``generate`` for one setting (see the module docstring for the accounting)."""
    if P < 1 or batch < 1 or input_tokens < 1 or output_tokens < 1:
        raise ValueError("P, batch, input_tokens and output_tokens must be >= 1; "
                         f"got {P}, {batch}, {input_tokens}, {output_tokens}")
    if not (0 < flop_efficiency <= 1 and 0 < memory_efficiency <= 1):
        raise ValueError("efficiencies are fractions of the peak: give values in (0, 1]")
    shape = size if isinstance(size, ModelShape) else ModelShape.from_size(size)
    spec = get_gpu(gpu)
    flop_rate = spec.peak_bf16_flops * flop_efficiency
    byte_rate = spec.hbm_bytes_per_s * memory_efficiency
    rows = P * batch
    prompt = input_tokens + shape.prefixes_per_stream(P)  # positions per stream at prefill

    prefill = _forward_seconds(shape, P, batch, prompt, input_tokens, prompt, prompt, flop_rate, byte_rate)
    decode = 0.0
    for step in range(1, output_tokens):
        context = prompt + step
        decode += _forward_seconds(shape, P, batch, 1, 1, context, 3 * context, flop_rate, byte_rate)

    cached_positions = prompt + output_tokens - 1
    return InferenceCost(
        size=size if isinstance(size, str) else "custom",
        P=P,
        batch=batch,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        gpu=spec.name,
        weight_bytes=BYTES_PER_VALUE * shape.total_params(P),
        kv_cache_bytes=rows * cached_positions * shape.num_layers * shape.kv_bytes_per_position,
        activation_bytes=BYTES_PER_VALUE * max(rows * prompt * shape.intermediate_size,
                                               batch * prompt * shape.vocab_size),
        prefill_s=prefill,
        decode_s=decode,
    )


def _forward_seconds(shape: ModelShape, P, batch, positions_per_row, logit_positions, context, cache_traffic, flop_rate,
                     byte_rate) -> float:
    """One forward pass: ``positions_per_row`` new positions in each of the P x batch rows, attending to
    ``context`` keys, moving ``cache_traffic`` positions of KV cache per row and layer, and producing
    ``logit_positions`` outputs per batch row. Each part costs the larger of its FLOPs and its bytes."""
    rows = P * batch
    positions = rows * positions_per_row
    h, inner = shape.hidden_size, shape.intermediate_size
    attention_matrices = shape.attention_matrix_params
    attention_flops = 2 * positions * attention_matrices + 4 * positions * context * shape.num_heads * shape.head_dim
    attention_bytes = (
        BYTES_PER_VALUE * (attention_matrices + shape.attention_bias_params + 3 * positions * h)
        + rows * cache_traffic * shape.kv_bytes_per_position
    )
    mlp_flops = 2 * positions * 3 * h * inner
    mlp_bytes = BYTES_PER_VALUE * (3 * h * inner + positions * inner)
    norm_bytes = BYTES_PER_VALUE * 2 * positions * h  # each RMSNorm reads and writes the hidden states
    layer = (
        max(attention_flops / flop_rate, attention_bytes / byte_rate)
        + max(mlp_flops / flop_rate, mlp_bytes / byte_rate)
        + 2 * norm_bytes / byte_rate
    )
    seconds = shape.num_layers * layer
    outputs = batch * logit_positions
    for params in (shape.aggregator_params(P), shape.vocab_size * shape.hidden_size):  # aggregator, LM head
        seconds += max(2 * outputs * params / flop_rate, BYTES_PER_VALUE * params / byte_rate)
    return seconds


def averaged_cost(size: str | ModelShape, P: int, batch: int, lengths=PAPER_LENGTHS, **settings) -> tuple[float, float]:
    """(memory GiB, latency s) averaged over input = output length in ``lengths``, as the paper's Figure 4."""
    costs = [inference_cost(size, P, batch, length, length, **settings) for length in lengths]
    return float(np.mean([c.memory_gb for c in costs])), float(np.mean([c.latency_s for c in costs]))


def published_losses(dataset: str = PAPER_DATASET) -> dict[tuple[str, int], float]:
    """{(size, P): loss} of the paper's runs on ``dataset``."""
    table = load_published(dataset)
    return {(row.size, int(row.P)): float(row.loss) for row in table.itertuples()}


def compare_scaling(
    batch_sizes=PAPER_BATCHES,
    base: str = PAPER_BASE,
    larger=PAPER_LARGER,
    P: int = PAPER_COMPARE_P,
    losses: dict[tuple[str, int], float] | None = None,
    lengths=PAPER_LENGTHS,
    **settings,
) -> pd.DataFrame:
    """Per batch size: how much memory and latency ``base`` gains with P streams, how much parameter
    scaling to the same loss gains, and their ratios (parameter increase / parallel increase)."""
    losses = published_losses() if losses is None else losses
    sizes = (base, *larger)
    missing = [key for key in [(s, 1) for s in sizes] + [(base, P)] if key not in losses]
    if missing:
        raise ValueError(f"no loss for (size, P) {missing}; pass losses={{(size, P): loss}} covering them")
    target = losses[(base, P)]
    size_losses = np.array([losses[(s, 1)] for s in sizes])
    if not size_losses.min() <= target <= size_losses.max():
        raise ValueError(
            f"{base} at P={P} reaches loss {target:.4f}, outside the P=1 sizes' range "
            f"[{size_losses.min():.4f}, {size_losses.max():.4f}]; "
            "add a larger size so parameter scaling is interpolated"
        )
    order = np.argsort(size_losses)
    rows = []
    for batch in batch_sizes:
        single = np.array([averaged_cost(s, 1, batch, lengths, **settings) for s in sizes])
        parallel = np.array(averaged_cost(base, P, batch, lengths, **settings))
        matched = np.array([np.interp(target, size_losses[order], single[order, i]) for i in range(2)])
        by_params, by_streams = matched - single[0], parallel - single[0]
        rows.append(
            {
                "batch": batch,
                "memory_increase_parameters_gb": by_params[0],
                "memory_increase_parallel_gb": by_streams[0],
                "memory_ratio": by_params[0] / by_streams[0],
                "latency_increase_parameters_s": by_params[1],
                "latency_increase_parallel_s": by_streams[1],
                "latency_ratio": by_params[1] / by_streams[1],
            }
        )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m analysis.cost", description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", action="store_true",
                        help="parallel vs parameter scaling ratios per batch size (the paper's Figure 4)")
    parser.add_argument("--size", default="1.6B", help="model size, e.g. 1.6B (default) or tiny-96")
    parser.add_argument("--P", type=positive_int, default=1, help="parallel streams (default 1)")
    parser.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    parser.add_argument("--input-tokens", type=positive_int, default=64)
    parser.add_argument("--output-tokens", type=positive_int, default=64)
    parser.add_argument("--gpu", default=PAPER_GPU, type=gpu_name, help=f"one of {', '.join(gpu_names())}")
    parser.add_argument("--flop-efficiency", type=fraction, default=PAPER_FLOP_EFFICIENCY)
    parser.add_argument("--memory-efficiency", type=fraction, default=PAPER_MEMORY_EFFICIENCY)
    parser.add_argument("--ignore-memory", action="store_true",
                        help="cost a batch even when its memory exceeds the GPU's (refused otherwise)")
    parser.add_argument("--json", action="store_true", help="print JSON (memory in GB = GiB, latency in s)")
    args = parser.parse_args(argv)
    settings = {"gpu": args.gpu, "flop_efficiency": args.flop_efficiency, "memory_efficiency": args.memory_efficiency}
    try:
        if args.compare:
            table = compare_scaling(**settings)
            if args.json:
                print(json.dumps({str(row.pop("batch")): row for row in table.to_dict(orient="records")}, indent=2))
            else:
                print(f"{PAPER_BASE} at P={PAPER_COMPARE_P} vs parameter scaling to the same loss ({args.gpu}, "
                      f"lengths {PAPER_LENGTHS}):")
                print(table.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        else:
            cost = inference_cost(args.size, args.P, args.batch, args.input_tokens, args.output_tokens, **settings)
            capacity = get_gpu(args.gpu).memory_bytes / GIB
            if cost.memory_gb > capacity and not args.ignore_memory:
                raise ValueError(f"--batch {args.batch} needs {cost.memory_gb:,.1f} GiB, more than the {args.gpu}'s "
                                 f"{capacity:,.1f} GiB; lower --batch or --P, or add --ignore-memory to cost it anyway")
            if args.json:
                print(json.dumps(cost.to_dict(), indent=2))
            else:
                print(
                    f"{cost.size} P={cost.P} batch={cost.batch}, "
                    f"{cost.input_tokens} in + {cost.output_tokens} out on {cost.gpu}: "
                    f"memory {cost.memory_gb:.3f} GB, latency {cost.latency_s:.4f} s "
                    f"(prefill {cost.prefill_s * 1e3:.1f} ms + decode {cost.decode_s * 1e3:.1f} ms)"
                )
    except ValueError as error:
        return report_error(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
