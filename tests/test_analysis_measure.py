"""Measuring generate on this machine at a tiny scale: the numbers are real measurements, the modelled
column is analysis.cost for the same shape, and the command writes its table and plot."""

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from analysis.cost import ModelShape, inference_cost
from analysis.gpus import GPUSpec
from analysis.measure import device_rates, main, measure, peak_memory, plot
from models import parscale_config

SETTINGS = {"size": "tiny-96", "P_values": (1, 4), "batch_sizes": (1, 4), "input_tokens": 16,
            "output_tokens": 8, "repeats": 1}


# Rates of a slow CPU, fixed so that the modelled columns are reproducible.
RATES = GPUSpec("test cpu", 2e11, 2e10, float("nan"), "fixed for the test")


@pytest.fixture(scope="module")
def measured():
    return measure(**SETTINGS, rates=RATES).set_index(["P", "batch"])


def test_peak_memory_sees_a_large_allocation():
    with peak_memory("cpu") as peak:
        block = torch.ones(32 * 2**20, dtype=torch.uint8)  # 32 MiB, touched
        del block
    if np.isnan(peak["extra_bytes"]):
        pytest.skip("no peak-memory counter for CPUs on this system")
    assert peak["extra_bytes"] >= 30 * 2**20


def test_measured_memory_holds_the_weights_and_grows_with_streams_and_batch(measured):
    weights = ModelShape.from_size("tiny-96").total_params(1) * 2 / 2**30
    assert (measured["measured_memory_gb"] > weights).all()
    assert measured.loc[(4, 4), "measured_memory_gb"] > measured.loc[(1, 1), "measured_memory_gb"]
    assert (measured["measured_latency_per_token_s"] > 0).all()


def test_modelled_columns_are_the_cost_model_at_the_given_rates(measured):
    expected = inference_cost(ModelShape.from_config(parscale_config("tiny-96", 4)), 4, 4, 16, 8, gpu=RATES,
                              flop_efficiency=1.0, memory_efficiency=1.0)
    assert measured.loc[(4, 4), "modelled_memory_gb"] == pytest.approx(expected.memory_gb)
    assert measured.loc[(4, 4), "modelled_latency_per_token_s"] == pytest.approx(expected.latency_s / 8)


def test_device_rates_are_measured():
    rates = device_rates("cpu")
    # Any CPU that runs the suite multiplies and copies bf16 faster than 0.1 GFLOP/s and 0.1 GB/s.
    assert rates.peak_bf16_flops > 1e8 and rates.hbm_bytes_per_s > 1e8


def test_plot_draws_measured_against_modelled(measured):
    frame = measured.reset_index()
    figure = plot(frame)
    drawn = [a for a in figure.axes[0].get_children() if a.get_gid() == "memory_gb P=4"][0].get_offsets()
    rows = frame[frame["P"] == 4]
    np.testing.assert_allclose(drawn, rows[["modelled_memory_gb", "measured_memory_gb"]].to_numpy())


def test_command_writes_table_and_plot(tmp_path, capsys):
    out = tmp_path / "measure"
    assert main(["--size", "tiny-96", "--layers", "1", "--P", "1,2", "--batch", "1", "--input-tokens", "8",
                 "--output-tokens", "4", "--repeats", "1", "--out", str(out)]) == 0
    table = pd.read_csv(out / "measured.csv")
    assert list(table["P"]) == [1, 2] and set(table["size"]) == {"tiny-96"}
    with Image.open(out / "measured_vs_modelled.png") as image:
        assert image.format == "PNG" and image.size == (1400, 540)
    printed = capsys.readouterr().out
    assert "wrote" in printed and "modelled: analysis.cost with cpu's own matmul and copy rates" in printed
    assert main(["--size", "huge", "--out", str(out)]) == 2
