"""Records what llm-analysis (https://github.com/cli99/llm-analysis, the inference-cost tool of Chen et al.
2025, arXiv 2505.10475) says ParScale models cost, configured as the paper's released `cost_analysis.py`
configures it, into `llm_analysis.csv` next to this file. `tests/test_analysis_cost.py` holds
`analysis.cost` to these numbers.

    PYTHONPATH=/path/to/llm-analysis python analysis/reference/record_llm_analysis.py

llm-analysis is not a dependency of this toolkit: its PyPI release (0.2.2) predates the API the released
script calls, so run this with a checkout of its current source importable (it needs `fire` too). The
CSV records the commit it was run against when given `--llm-analysis-commit`.

The released script's configuration, restated (its code is not copied here):
- a Qwen2 backbone as an llm-analysis ModelConfig with gated MLP, maximum length 2048 (+ 48 prefix
  positions for P > 1); A100-SXM-80GB with its memory limit lifted; efficiencies 0.7 FLOPs / 0.9 HBM;
- the P streams as a batch of P x batch, each prompt lengthened by the 48 prefix positions for P > 1;
- memory = llm-analysis's weights and KV cache, plus the aggregator's weights ((h + 1) h P parameters),
  plus the larger of one layer's prefill activations (P x batch rows) and the output embedding's (batch rows);
- latency = llm-analysis's total, plus the aggregator (its parameters over one MLP's, times one MLP's
  forward latency at batch rows of input + output positions), with the embedding and LM head moved from
  P x batch rows to batch rows (both at input + output positions).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from llm_analysis.analysis import BYTES_FP16, LLMAnalysis, ModelConfig, get_gpu_config_by_name

from models.sizes import (
    MAX_POSITION_EMBEDDINGS,
    NUM_ATTENTION_HEADS,
    NUM_KEY_VALUE_HEADS,
    NUM_LAYERS,
    PAPER_SIZES,
    PREFIX_TOKENS,
    VOCAB_SIZE,
)

OUTPUT = Path(__file__).with_name("llm_analysis.csv")
GPU, FLOP_EFFICIENCY, HBM_EFFICIENCY = "a100-sxm-80gb", 0.7, 0.9
P_VALUES, BATCHES, LENGTHS = (1, 8), (1, 8), (64, 128, 256, 512)
GIB = 2**30


def released_script_cost(hidden: int, intermediate: int, P: int, batch: int, input_tokens: int,
                         output_tokens: int) -> tuple[float, float]:
    """(memory GiB, latency s) as the released cost_analysis.py computes them with llm-analysis."""
    prefix = PREFIX_TOKENS if P > 1 else 0
    model = ModelConfig(
        name="", num_layers=NUM_LAYERS, n_head=NUM_ATTENTION_HEADS, hidden_dim=hidden, vocab_size=VOCAB_SIZE,
        max_seq_len=MAX_POSITION_EMBEDDINGS + prefix, num_key_value_heads=NUM_KEY_VALUE_HEADS,
        ffn_embed_dim=intermediate, mlp_gated_linear_units=True,
    )
    gpu = get_gpu_config_by_name(GPU)
    gpu.mem_per_GPU_in_GB = 10000  # as the released script: never refuse for lack of memory
    tool = LLMAnalysis(model, gpu, flops_efficiency=FLOP_EFFICIENCY, hbm_memory_efficiency=HBM_EFFICIENCY)
    prompt = input_tokens + prefix
    summary = tool.inference(batch_size_per_gpu=batch * P, seq_len=prompt, num_tokens_to_generate=output_tokens)

    aggregator = (hidden + 1) * hidden * P if P > 1 else 0
    positions = input_tokens + output_tokens
    aggregator_latency = ((aggregator / tool.get_num_params_per_layer_mlp())
                          * tool.get_latency_fwd_per_layer_mlp(batch, positions) if P > 1 else 0.0)
    activations = max(
        tool.get_activation_memory_per_layer(batch * P, prompt, is_inference=True, layernorm_dtype_bytes=BYTES_FP16),
        tool.get_activation_memory_output_embedding(batch, prompt),
    )
    embedding_bytes = tool.dtype_config.embedding_bits

    def embeddings(rows: int) -> float:
        return (tool.get_latency_fwd_input_embedding(rows, positions, dtype_bytes=embedding_bytes)
                + tool.get_latency_fwd_output_embedding_loss(rows, positions))

    memory = (summary["kv_cache_memory_per_gpu"] + summary["weight_memory_per_gpu"]
              + aggregator * tool.dtype_config.weight_bits / 8 + activations)
    latency = summary["total_latency"] + aggregator_latency - embeddings(batch * P) + embeddings(batch)
    return memory / GIB, latency


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llm-analysis-commit", default="",
                        help="the llm-analysis commit this runs against, recorded in the CSV")
    parser.add_argument("--out", type=Path, default=OUTPUT)
    args = parser.parse_args(argv)
    rows = []
    for size, shape in PAPER_SIZES.items():
        for P in P_VALUES:
            for batch in BATCHES:
                for length in LENGTHS:
                    memory, latency = released_script_cost(shape.hidden_size, shape.intermediate_size, P, batch,
                                                           length, length)
                    rows.append({"size": size, "hidden_size": shape.hidden_size,
                                 "intermediate_size": shape.intermediate_size, "P": P, "batch": batch,
                                 "input_tokens": length, "output_tokens": length, "gpu": GPU,
                                 "memory_gb": f"{memory:.6f}", "latency_s": f"{latency:.6f}",
                                 "llm_analysis_commit": args.llm_analysis_commit})
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.out} ({len(rows)} settings)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
