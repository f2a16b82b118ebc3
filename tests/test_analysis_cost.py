"""The inference-cost model against the paper's numbers (Chen et al. 2025, the inference-cost analysis of Figure 4)."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analysis.cost import (
    ModelShape,
    averaged_cost,
    compare_scaling,
    inference_cost,
    main,
    shape_for_params,
    training_flops,
)
from analysis.gpus import ALIASES, GPUS, get_gpu, gpu_names
from models import count_parameters, parscale_config
from models.sizes import PAPER_SIZES

# What llm-analysis (the paper's tool, its current source), configured as the paper's released
# cost_analysis.py, says; recorded by analysis/reference/record_llm_analysis.py.
LLM_ANALYSIS = Path(__file__).resolve().parent.parent / "analysis" / "reference" / "llm_analysis.csv"

# The paper: 1.6B, batch 1, 64 input + 64 output tokens, A100-SXM-80GB, efficiencies 0.7 (FLOPs) / 0.9 (memory).
PAPER_SINGLE = {1: (3.38, 0.128), 8: (3.47, 0.144)}
# Parallel scaling's memory / latency increase is this many times smaller than parameter scaling's (Figure 4).
PAPER_RATIOS = {1: (22, 6), 2: (13, 3), 4: (7, 1.7), 8: (3.6, 0.9)}


@pytest.mark.parametrize("size", ["1.6B", "4.4B", "tiny-96"])
@pytest.mark.parametrize("P", [1, 8])
def test_parameter_counts_match_the_model(size, P):
    counts = count_parameters(parscale_config(size, P))
    shape = ModelShape.from_size(size)
    assert shape.total_params(P) == counts.total
    assert shape.non_embedding_params(P) == counts.non_embedding


@pytest.mark.parametrize("P", [1, 8])
def test_reproduces_paper_memory_and_latency_within_3_percent(P):
    memory, latency = PAPER_SINGLE[P]
    cost = inference_cost("1.6B", P, batch=1, input_tokens=64, output_tokens=64)
    assert cost.memory_gb == pytest.approx(memory, rel=0.03)
    assert cost.latency_s == pytest.approx(latency, rel=0.03)


def test_reproduces_parallel_vs_parameter_scaling_ratios_within_10_percent():
    table = compare_scaling().set_index("batch")
    for batch, (memory_ratio, latency_ratio) in PAPER_RATIOS.items():
        assert table.loc[batch, "memory_ratio"] == pytest.approx(memory_ratio, rel=0.10), batch
        assert table.loc[batch, "latency_ratio"] == pytest.approx(latency_ratio, rel=0.10), batch


@pytest.fixture(scope="module")
def llm_analysis():
    return pd.read_csv(LLM_ANALYSIS)


def test_llm_analysis_record_is_of_this_package_s_sizes(llm_analysis):
    # The record was made for the shapes models/ defines; a changed size would make it stale.
    for row in llm_analysis.drop_duplicates("size").itertuples():
        assert ((PAPER_SIZES[row.size].hidden_size, PAPER_SIZES[row.size].intermediate_size)
                == (row.hidden_size, row.intermediate_size))
    assert (set(llm_analysis["size"]) == set(PAPER_SIZES) and set(llm_analysis["P"]) == {1, 8}
            and set(llm_analysis["batch"]) == {1, 8})


def test_agrees_with_llm_analysis_within_3_percent_at_the_papers_setting(llm_analysis):
    # The six sizes at P in {1, 8} and batch in {1, 8}, 64 input + 64 output tokens (the paper's single setting).
    at_64 = llm_analysis[(llm_analysis["input_tokens"] == 64) & (llm_analysis["output_tokens"] == 64)]
    assert len(at_64) == 24
    for row in at_64.itertuples():
        modelled = inference_cost(row.size, row.P, row.batch, row.input_tokens, row.output_tokens)
        assert modelled.memory_gb == pytest.approx(row.memory_gb, rel=0.03), (row.size, row.P, row.batch)
        assert modelled.latency_s == pytest.approx(row.latency_s, rel=0.03), (row.size, row.P, row.batch)


def test_agrees_with_llm_analysis_at_longer_lengths_up_to_the_kv_cache_accounting(llm_analysis):
    # Memory stays within 1%. Latency parts with length: llm-analysis charges every decoding step two passes
    # over the final KV cache, this model three over the cache as it grows (a dynamic cache's concatenation
    # plus attention's read), which at 512 + 512 tokens, P = 8 and batch 8 is 4-7% more.
    for row in llm_analysis.itertuples():
        modelled = inference_cost(row.size, row.P, row.batch, row.input_tokens, row.output_tokens)
        assert modelled.memory_gb == pytest.approx(row.memory_gb, rel=0.01)
        assert modelled.latency_s == pytest.approx(row.latency_s, rel=0.07)


def test_memory_parts_follow_the_accounting():
    one, eight = inference_cost("1.6B", 1), inference_cost("1.6B", 8)
    # Weights: every parameter in bf16, prefixes and aggregator included.
    assert eight.weight_bytes - one.weight_bytes == 2 * (count_parameters(parscale_config("1.6B", 8)).parscale)
    # KV cache: 8 streams, each with 48 prefix positions: 8 * (64 + 48 + 63) positions against 64 + 63.
    assert eight.kv_cache_bytes / one.kv_cache_bytes == pytest.approx(8 * (64 + 48 + 63) / (64 + 63))
    # Activations: the larger of a layer's MLP intermediate (8 streams) and the logits (the batch row).
    shape = ModelShape.from_size("1.6B")
    assert eight.activation_bytes == 2 * max(8 * 112 * shape.intermediate_size, 112 * shape.vocab_size)


def test_streams_cost_less_than_their_count_at_batch_1():
    # Decoding at batch 1 is bound by reading the weights, which P streams share: far below P times.
    one, eight = inference_cost("1.6B", 1), inference_cost("1.6B", 8)
    assert 1.0 < eight.latency_s / one.latency_s < 1.3
    assert inference_cost("1.6B", 8, gpu="H100-SXM-80GB").latency_s < eight.latency_s


def test_averaged_cost_is_the_mean_over_lengths():
    memory, latency = averaged_cost("1.6B", 2, 1, lengths=(64, 128))
    costs = [inference_cost("1.6B", 2, 1, n, n) for n in (64, 128)]
    assert memory == pytest.approx(sum(c.memory_gb for c in costs) / 2)
    assert latency == pytest.approx(sum(c.latency_s for c in costs) / 2)


def test_bad_settings_say_what_to_do():
    with pytest.raises(ValueError, match="choose one of"):
        get_gpu("A99")
    with pytest.raises(ValueError, match=">= 1"):
        inference_cost("1.6B", 0)
    with pytest.raises(ValueError, match="add a larger size"):
        compare_scaling(larger=("2.8B",))  # 1.6B at P = 8 beats 2.8B: nothing to interpolate to


def test_gpu_table_cites_its_numbers():
    assert {"A100-SXM-40GB", "A100-SXM-80GB", "H100-SXM-80GB", "H200-SXM-141GB"} <= set(GPUS)
    for spec in GPUS.values():
        assert spec.source and spec.peak_bf16_flops > 1e13 and spec.hbm_bytes_per_s > 1e11
    a100_40 = get_gpu("A100-SXM-40GB")
    assert (a100_40.peak_bf16_flops, a100_40.hbm_bytes_per_s, a100_40.memory_bytes) == (312e12, 1555e9, 40e9)


@pytest.mark.parametrize("short, full", [("A100-40GB", "A100-SXM-40GB"), ("A100-80GB", "A100-SXM-80GB"),
                                         ("H100-80GB", "H100-SXM-80GB"), ("H200-141GB", "H200-SXM-141GB")])
def test_short_gpu_names_resolve(short, full):
    assert get_gpu(short) is GPUS[full] and ALIASES[short] == full and short in gpu_names()


def test_shapes_for_any_parameter_count_widen_the_paper_family():
    for size in ("0.5B", "1.6B", "4.4B"):  # the named sizes come back exactly
        shape = ModelShape.from_size(size)
        for P in (1, 8):
            assert shape_for_params(shape.non_embedding_params(P), P) == shape
    wide = shape_for_params(7e9, 1)
    assert wide.non_embedding_params(1) >= 7e9 > shape_for_params(7e9 * 0.97, 1).non_embedding_params(1) * 0.97
    assert (wide.num_layers == 36 and wide.hidden_size % 16 == 0
            and 5.3 < wide.intermediate_size / wide.hidden_size < 5.5)
    assert shape_for_params(3e5, 2, family="tiny").num_layers == 2


def test_training_flops_is_6ND_with_the_streams_explicit():
    shape = ModelShape.from_size("1.6B")
    one, eight = training_flops(shape, 1, 42e9), training_flops(shape, 8, 42e9)
    # + attention and the LM head
    assert one / (6 * shape.non_embedding_params(1) * 42e9) == pytest.approx(1.2, abs=0.1)
    assert 7.0 < eight / one < 8.0  # the backbone runs 8 times, the LM head once


def test_cli_prints_and_emits_json(capsys):
    assert main(["--size", "1.6B", "--P", "8", "--batch", "1"]) == 0
    assert "memory 3.47" in capsys.readouterr().out
    assert main(["--size", "1.6B", "--P", "8", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert (single["memory_gb"] == pytest.approx(3.47, rel=0.03)
            and single["latency_s"] == pytest.approx(0.144, rel=0.03))
    assert main(["--compare", "--json"]) == 0
    ratios = json.loads(capsys.readouterr().out)
    assert set(ratios) == {"1", "2", "4", "8"}
    assert ratios["1"]["memory_ratio"] == pytest.approx(22, rel=0.1)


def test_cli_refuses_an_unknown_size_in_one_line(capsys):
    assert main(["--size", "9B"]) == 2
    assert "Unknown model size" in capsys.readouterr().err


def test_module_runs_from_the_command_line():
    done = subprocess.run([sys.executable, "-m", "analysis.cost", "--compare"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "memory_ratio" in done.stdout and "RuntimeWarning" not in done.stderr
