"""The benchmark's measurements on a toy workload (its timings are not checked, only what they rest on)."""

import pytest

from benchmarks.model_throughput import Shape, benchmark_shape, format_table, wrapped_ratios


def test_benchmark_rows_compare_qwen2_and_each_p():
    shape = Shape("toy", "tiny-96", {}, train_batch=2, train_length=16, prompt_length=4, new_tokens=3)
    rows = {row["model"]: row for row in benchmark_shape(shape, [1, 2], repeats=1)}
    assert list(rows) == ["Qwen2", "P=1", "P=2"]
    assert rows["P=1"]["train_cost"] == rows["P=1"]["decode_cost"] == 1.0
    assert rows["Qwen2"]["activation_mib"] == pytest.approx(rows["P=1"]["activation_mib"], rel=0.05)
    assert rows["P=2"]["activation_mib"] > 1.5 * rows["P=1"]["activation_mib"]
    # The cache holds the real tokens of every stream, the prefixes are not cached.
    assert rows["P=2"]["kv_cache_mib"] == pytest.approx(2 * rows["P=1"]["kv_cache_mib"])
    assert "P=2" in format_table(list(rows.values()))


def test_wrapped_rows_are_the_general_model_with_the_same_weights():
    shape = Shape("toy", "tiny-96", {}, train_batch=2, train_length=16, prompt_length=4, new_tokens=3)
    rows = {row["model"]: row for row in benchmark_shape(shape, [1, 2], repeats=1, wrapped=True)}
    assert list(rows) == ["Qwen2", "P=1", "P=2", "wrapped P=1", "wrapped P=2"]
    for parscale_n in (1, 2):  # same model, same activations and cache
        wrapped, released = rows[f"wrapped P={parscale_n}"], rows[f"P={parscale_n}"]
        assert wrapped["activation_mib"] == pytest.approx(released["activation_mib"], rel=0.05)
        assert wrapped["kv_cache_mib"] == pytest.approx(released["kv_cache_mib"])
    assert "P=2" in wrapped_ratios(list(rows.values())).splitlines()[-1]
