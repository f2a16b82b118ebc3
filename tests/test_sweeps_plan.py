"""The plan of the paper's grid (sweeps/grid/resource_plan.py on sweeps/grid/resources.py): composed and planned on
CPU for all 24 cells of both data sets without SLURM (the models counted on the meta device, nothing allocated), fitting
the common GPUs; one line for a cell that cannot fit; and the memory model against measured memory."""

import dataclasses
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sweeps.grid import resources
from sweeps.grid.resource_plan import Hardware, ResourcePlanError, plan_resources
from sweeps.run.config import load_config

REQUIRED = {"size", "P", "micro_batch_size", "accumulation", "activation_checkpointing", "gpus", "predicted_peak_gb",
            "gpu_mem_gb", "gpu_hours"}


def dry_run(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    no_programs = tmp_path / "empty-path"
    no_programs.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "sweeps.launch", *overrides, "sweep.dry_run=true",
         f"hydra.sweep.dir={tmp_path / 'sweep'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PATH": str(no_programs)},  # no sbatch, no sinfo: a dry run needs no SLURM
    )


@pytest.mark.parametrize("grid", ["pile", "stack"])
def test_dry_run_plans_all_24_paper_cells_within_the_gpu(tmp_path, grid):
    gpu, memory_gb = "A100-40GB", 40
    done = dry_run(tmp_path, f"+grid={grid}", f"hydra.launcher.gpu={gpu}")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    plan = json.loads((tmp_path / "sweep" / "plan.json").read_text())
    assert len(plan) == 24 and {(cell["size"], cell["P"]) for cell in plan} == {
        (size, p) for size in ("0.5B", "0.7B", "1.1B", "1.6B", "2.8B", "4.4B") for p in (1, 2, 4, 8)}
    for cell in plan:
        assert REQUIRED <= set(cell)
        assert cell["gpu_mem_gb"] == memory_gb and cell["predicted_peak_gb"] <= memory_gb
        assert cell["micro_batch_size"] * cell["accumulation"] * cell["gpus"] == 1024  # the global batch is kept
        assert cell["signal_delay_s"] > cell["step_s"] and cell["max_num_timeout"] >= cell["attempts"]
    assert (tmp_path / "sweep" / "plan.md").read_text().count("| 4.4B-P8-s0 |") == 1
    assert "4.4B-P8-s0" in done.stdout and "nothing submitted" in done.stdout
    assert not (tmp_path / "sweep" / "sweep.json").exists()  # a dry run leaves no manifest


def test_the_two_stage_paper_plan_costs_at_most_a_quarter_of_from_scratch(tmp_path):
    """One dry run plans both stages and prices the same 24 cells from scratch beside them (H100-80GB)."""
    done = dry_run(tmp_path, "+grid=pile", "stage2_fraction=0.1")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    plan = json.loads((tmp_path / "sweep" / "plan.json").read_text())
    stage1 = [cell for cell in plan if cell["cell"].endswith("-stage1")]
    assert len(plan) == 30 and len(stage1) == 6 and all(cell["P"] == 1 for cell in stage1)
    # 42B tokens in 20,027 steps of 1024 x 2048: stage 1 trains 18,025, each stage 2 the other 2,002.
    assert {cell["total_steps"] for cell in stage1} == {18025}
    assert {cell["total_steps"] for cell in plan if cell not in stage1} == {2002}
    match = re.search(r"two stages: ([\d,]+) GPU-hours .* from scratch: ([\d,]+) GPU-hours \((\d\.\d+)x\)", done.stdout)
    two_stages, scratch = (float(match.group(i).replace(",", "")) for i in (1, 2))
    assert two_stages <= scratch / 4 and float(match.group(3)) == pytest.approx(two_stages / scratch, abs=0.01)
    assert "from scratch" in (tmp_path / "sweep" / "plan.md").read_text()
    # The price of "from scratch" is the one-stage grid's own plan.
    (tmp_path / "scratch").mkdir()
    assert dry_run(tmp_path / "scratch", "+grid=pile").returncode == 0
    one_stage = json.loads((tmp_path / "scratch" / "sweep" / "plan.json").read_text())
    assert scratch == pytest.approx(sum(cell["gpu_hours"] for cell in one_stage), abs=1)


def test_a_cell_that_cannot_fit_stops_the_grid_with_one_line(tmp_path):
    done = dry_run(tmp_path, "+grid=pile", "hydra.launcher.gpu_mem_gb=6", "hydra.launcher.max_nodes=1")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "does not fit" in lines[0] and "hydra.launcher.max_nodes" in lines[0]
    assert not (tmp_path / "sweep" / "plan.json").exists()


@functools.cache
def _paper_size(size: str, run_dir: str):
    return load_config([f"model={size}", "seq_len=2048", "global_batch_size=1024", "micro_batch_size=1",
                        "precision=bf16", "tokens=42000000000", f"run_dir={run_dir}"])


def paper_cell(tmp_path, size: str, parscale_n: int):
    """The paper scale's config of one cell (composed once per size; P set on it)."""
    config = _paper_size(size, str(tmp_path))
    return dataclasses.replace(config, parscale_n=parscale_n, model={**config.model, "parscale_n": parscale_n})


def hardware(gpu: str, **changes) -> Hardware:
    settings = {"gpu": gpu, "gpus_per_node": 8, "max_nodes": 8, "mfu": 0.4, "target_hours": 72, "startup_min": 10,
                "checkpoint_write_gbps": 1.0, "filesystem_gbps": 20.0, **changes}
    return Hardware.from_settings(settings, timeout_min=2880)


@pytest.mark.parametrize("gpu", ["A100-80GB", "H100-80GB", "H200-141GB"])
def test_every_paper_cell_fits_the_common_gpus(tmp_path, gpu):
    for size in ("0.5B", "0.7B", "1.1B", "1.6B", "2.8B", "4.4B"):
        for parscale_n in (1, 2, 4, 8):
            plan = plan_resources(f"{size}-P{parscale_n}", paper_cell(tmp_path, size, parscale_n), hardware(gpu))
            assert plan.predicted_peak_gb <= plan.gpu_mem_gb


def test_activation_checkpointing_only_where_needed_and_gpus_from_the_cost(tmp_path):
    small = plan_resources("0.5B-P1", paper_cell(tmp_path, "0.5B", 1), hardware("H200-141GB"))
    large = plan_resources("4.4B-P8", paper_cell(tmp_path, "4.4B", 8), hardware("A100-40GB"))
    assert not small.activation_checkpointing and large.activation_checkpointing
    assert small.gpus < large.gpus and small.wall_hours <= 72
    # The same cell on one GPU at most: it still fits (checkpointing, micro-batch 1 at worst) but takes longer.
    one_gpu = hardware("H200-141GB", gpus_per_node=1, max_nodes=1)
    alone = plan_resources("0.5B-P1", paper_cell(tmp_path, "0.5B", 1), one_gpu)
    assert alone.gpus == 1 and alone.wall_hours > small.wall_hours
    with pytest.raises(ResourcePlanError, match="4.4B-P8 does not fit"):
        plan_resources("4.4B-P8", paper_cell(tmp_path, "4.4B", 8), hardware("A100-40GB", max_nodes=1, gpus_per_node=1))


def test_flops_per_token_follow_the_paper_and_p_streams_cost_p_times_the_backbone():
    one, eight = resources.shape_of("1.6B", 1), resources.shape_of("1.6B", 8)
    head = 6 * one.hidden_size * one.vocab_size
    assert resources.model_flops_per_token(one, 2048) == pytest.approx(6 * 1.58e9 + head, rel=0.08)
    backbone_one = resources.model_flops_per_token(one, 2048) - head
    backbone_eight = resources.model_flops_per_token(eight, 2048) - head
    assert backbone_eight / backbone_one == pytest.approx(8, rel=0.02)  # + the prefix keys and the aggregator


@pytest.mark.slow
@pytest.mark.parametrize("parscale_n, seq_len, vocab_size", [(1, 256, 151936), (2, 256, 151936), (4, 1024, 4096)])
def test_memory_model_matches_a_measured_forward_and_backward_at_a_real_width(parscale_n, seq_len, vocab_size):
    """The activations and the loss's working set predicted by the model against the peak of live memory that
    torch's MemTracker measures on a 2-layer model at the 0.5B width (bf16, as FSDP2 computes): at the
    paper's vocabulary, where the loss dominates, and at a small one, where the activations do."""
    from torch.distributed._tools.mem_tracker import MemTracker

    from models import Qwen2ParScaleForCausalLM, parscale_config
    from sweeps.run.loss import CausalLMLoss

    torch.manual_seed(0)
    changes = (("num_hidden_layers", 2), ("vocab_size", vocab_size))
    config = parscale_config("0.5B", parscale_n=parscale_n, **dict(changes))
    config._attn_implementation = "sdpa"
    trained = CausalLMLoss(Qwen2ParScaleForCausalLM(config).to(torch.bfloat16), chunk_tokens=128)
    ids = torch.randint(0, vocab_size - 300, (1, seq_len))
    tracker = MemTracker()
    tracker.track_external(trained)
    with tracker:
        trained(ids).backward()
    weights = sum(p.numel() * p.element_size() for p in trained.parameters())
    measured = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"] - weights

    shape = resources.shape_of("0.5B", parscale_n, changes)
    layout = resources.Layout(seq_len=seq_len, micro_batch_size=1, global_batch_size=1, strategy="single",
                              loss_chunk_tokens=128)
    predicted = resources.memory("0.5B", shape, layout)
    assert predicted.activations + predicted.transient == pytest.approx(measured, rel=0.05)


def test_the_signal_delay_covers_the_longest_save_the_cell_measured(tmp_path):
    before = plan_resources("1.6B-P4", paper_cell(tmp_path, "1.6B", 4), hardware("H100-80GB"))
    measured = tmp_path / "checkpoints" / "step-00000500"
    measured.mkdir(parents=True)
    (measured / "meta.json").write_text(json.dumps({"step": 500, "save_s": 1000.0}))
    after = plan_resources("1.6B-P4", paper_cell(tmp_path, "1.6B", 4), hardware("H100-80GB"))
    assert before.checkpoint_s < 1000 and after.checkpoint_s == 1500.0
    assert after.signal_delay_s >= before.signal_delay_s + 1500 - before.checkpoint_s - 1
