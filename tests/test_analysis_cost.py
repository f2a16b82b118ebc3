"""The inference-cost model against the paper's numbers (Chen et al. 2025, the inference-cost analysis of Figure 4)."""

import json
import subprocess
import sys

import pytest

from analysis.cost import ModelShape, averaged_cost, compare_scaling, inference_cost, main
from analysis.gpus import GPUS, get_gpu
from models import count_parameters, parscale_config

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


def test_memory_parts_follow_the_accounting():
    one, eight = inference_cost("1.6B", 1), inference_cost("1.6B", 8)
    # Weights: every parameter in bf16, prefixes and aggregator included.
    assert eight.weight_bytes - one.weight_bytes == 2 * (count_parameters(parscale_config("1.6B", 8)).parscale)
    # KV cache: 8 streams, each with 48 prefix positions: 8 * (64 + 48 + 63) positions against 64 + 63.
    assert eight.kv_cache_bytes / one.kv_cache_bytes == pytest.approx(8 * (64 + 48 + 63) / (64 + 63))


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
    assert {"A100-SXM-80GB", "H100-SXM-80GB", "H200-SXM-141GB"} <= set(GPUS)
    for spec in GPUS.values():
        assert spec.source and spec.peak_bf16_flops > 1e13 and spec.hbm_bytes_per_s > 1e11


def test_cli_prints_and_emits_json(capsys):
    assert main(["--size", "1.6B", "--P", "8", "--batch", "1"]) == 0
    assert "memory 3.46" in capsys.readouterr().out
    assert main(["--size", "1.6B", "--P", "8", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert single["memory_gb"] == pytest.approx(3.47, rel=0.03) and single["latency_s"] == pytest.approx(0.144, rel=0.03)
    assert main(["--compare", "--json"]) == 0
    ratios = json.loads(capsys.readouterr().out)
    assert set(ratios) == {"1", "2", "4", "8"}
    assert ratios["1"]["memory_ratio"] == pytest.approx(22, rel=0.1)


def test_cli_refuses_an_unknown_size_in_one_line(capsys):
    assert main(["--size", "9B"]) == 2
    assert "Unknown model size" in capsys.readouterr().err


def test_module_runs_from_the_command_line():
    done = subprocess.run([sys.executable, "-m", "analysis.cost", "--compare"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "memory_ratio" in done.stdout and "RuntimeWarning" not in done.stderr
