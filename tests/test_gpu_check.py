"""The prepared GPU check (sweeps/gpu_check.py) run on this machine's CPU with the tiny sizes: the same code
path as on a GPU (plan per cell, FSDP2 bf16 on one process, three optimiser steps, plain Qwen2 beside P = 1,
decoding), so that the script works when a GPU can be had."""

import json
import subprocess
import sys

import pytest

from train_helpers import REPO, child_env


@pytest.mark.slow
def test_gpu_check_runs_on_cpu_with_the_tiny_sizes(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "sweeps.gpu_check", "--tiny", "--cells", "tiny-32-P1,tiny-128-P1,tiny-128-P8",
         "--out", str(tmp_path)],
        cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    cells = [row["cell"] for row in result["training"]]
    assert cells[0] == "tiny-128-P8" and "tiny-128-P1 (Qwen2)" in cells and len(cells) == 4
    for row in result["training"]:
        assert row["tokens_per_s"] > 0 and row["predicted_peak_gb"] > 0 and row["step_s"] > 0
        assert 0 < row["loss"] < 10
    assert [row["P"] for row in result["decoding"]] == [1, 2, 4, 8]
    table = (tmp_path / "gpu_check.md").read_text()
    assert "| tiny-128-P8 |" in table and "| decoding |" in table
