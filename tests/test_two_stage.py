"""Two-stage training of one run (sweeps/run/stages.py): a P = 1 stage 2 is exactly the continuation of its stage
1, streams added in stage 2 start sanely and measured, frozen backbones stay put, a preempted stage 2
resumes exactly, and settings that cannot train are refused in one line."""

import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from sweeps.errors import ConfigError
from sweeps.run.config import OptimConfig
from sweeps.run.loop import train
from sweeps.run.schedule import learning_rate
from sweeps.run.stages import branch_dir
from sweeps.run.tracking import read_metrics

from train_helpers import REPO, child_env, corpus_overrides, tiny_config, tiny_overrides, write_corpus

STEPS = 40  # of 4 x 32 tokens; stage 2 is the last quarter (10 steps), branches also at the last half
WSD = ["optim.schedule=wsd", "optim.decay_fraction=0.25", "optim.warmup_fraction=0.1"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return corpus_overrides(write_corpus(tmp_path_factory.mktemp("corpus")))


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, corpus):
    run_dir = tmp_path_factory.mktemp("stage1") / "run"
    result = train(tiny_config(run_dir, STEPS, *corpus, *WSD, "stage=1", "stage2_fraction=0.25",
                               "branch_fractions=[0.5]"))
    return run_dir, result


def stage2(run_dir, stage1_dir, corpus, *overrides):
    return train(tiny_config(run_dir, STEPS, *corpus, *WSD, "stage=2", "stage2_fraction=0.25",
                             f"init_from={stage1_dir}", *overrides))


def test_a_p1_stage2_continues_its_stage1_exactly(tmp_path, stage1, corpus):
    """Weights, AdamW moments, data position, loss average and learning rate all carry over: stage 1 then a
    P = 1 stage 2 is the one-stage run whose WSD decay is the last quarter, step for step."""
    stage1_dir, stage1_row = stage1
    one_stage = train(tiny_config(tmp_path / "one", STEPS, *corpus, *WSD))
    continued = stage2(tmp_path / "two", stage1_dir, corpus)
    reference = read_metrics(tmp_path / "one" / "metrics.jsonl")
    both = read_metrics(stage1_dir / "metrics.jsonl") + read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert [row["step"] for row in both] == list(range(1, STEPS + 1))
    for row, expected in zip(both, reference, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=1e-6) and row["lr"] == pytest.approx(expected["lr"])
    assert continued["loss"] == pytest.approx(one_stage["loss"], abs=1e-6)
    assert continued["eval_loss"] == pytest.approx(one_stage["eval_loss"], abs=1e-6)

    assert stage1_row["stage"] == 1 and stage1_row["tokens"] == 30 * 128 and stage1_row["steps"] == 30
    assert sorted(path.name for path in (stage1_dir / "branches").iterdir()) == ["step-00000020", "step-00000030"]
    assert continued["stage"] == 2 and continued["stage2_fraction"] == 0.25
    assert continued["tokens"] == STEPS * 128 and continued["stage2_tokens"] == 10 * 128
    # The run starts at the branch: its held-out loss there is the stage-1 model's.
    assert continued["eval_loss_start"] == pytest.approx(stage1_row["eval_loss"], abs=1e-6)


def test_streams_added_in_stage2_start_from_the_backbone_and_are_measured(tmp_path, stage1, corpus):
    stage1_dir, stage1_row = stage1
    result = stage2(tmp_path / "P4", stage1_dir, corpus, "parscale_n=4")
    weights = load_file(tmp_path / "P4" / "model" / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert result["P"] == 4 and result["tokens"] == STEPS * 128
    assert result["weight_entropy_start"] == pytest.approx(1.0, abs=1e-9)  # the aggregator starts uniform
    assert 0 < result["stream_distance_start"] < 0.01  # the prefixes differ a little, per stream
    assert 0 < result["stream_distance"] and 0 < result["weight_entropy"] <= 1
    # The new prefix slots move the loss at step 0, but it starts from the trained backbone, not from scratch.
    assert abs(result["eval_loss_start"] - stage1_row["eval_loss"]) < 0.3
    rows = read_metrics(tmp_path / "P4" / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(31, STEPS + 1))
    assert [row["step"] for row in rows if "stream_distance" in row] == [35, 40]


def test_a_frozen_stage2_keeps_the_backbone_and_a_frozen_p1_trains_nothing(tmp_path, stage1, corpus):
    stage1_dir, _ = stage1
    backbone = load_file(stage1_dir / "model" / "model.safetensors")  # stage 1 ends at the last branch
    stage2(tmp_path / "P2", stage1_dir, corpus, "parscale_n=2", "freeze_backbone=true")
    stage2(tmp_path / "P1", stage1_dir, corpus, "freeze_backbone=true")
    for cell in ("P2", "P1"):
        after = load_file(tmp_path / cell / "model" / "model.safetensors")
        assert all(torch.equal(backbone[name], after[name]) for name in backbone), cell
    assert any(name.endswith("prefix_k") for name in load_file(tmp_path / "P2" / "model" / "model.safetensors"))
    assert all(row["grad_norm"] == 0.0 for row in read_metrics(tmp_path / "P1" / "metrics.jsonl"))


def test_stage2_settings_change_its_start(tmp_path, stage1, corpus):
    stage1_dir, _ = stage1
    carried = stage2(tmp_path / "carry", stage1_dir, corpus, "parscale_n=2")
    reset = stage2(tmp_path / "reset", stage1_dir, corpus, "parscale_n=2", "stage2.optimizer_state=reset")
    warm = stage2(tmp_path / "warm", stage1_dir, corpus, "parscale_n=2", "stage2.warmup_fraction=0.5")
    assert (reset["loss"] != pytest.approx(carried["loss"], abs=1e-6)
            and warm["loss"] != pytest.approx(carried["loss"], abs=1e-6))
    first_rates = [row["lr"] for row in read_metrics(tmp_path / "warm" / "metrics.jsonl")][:5]
    assert first_rates == sorted(first_rates) and first_rates[0] < first_rates[4] / 2
    zero = stage2(tmp_path / "zero", stage1_dir, corpus, "parscale_n=2", "stage2.prefix_init=zero-values")
    # With the values at 0 the prefix changes a layer's output only by diluting attention: the streams start
    # closer together than with drawn values.
    assert zero["stream_distance_start"] < carried["stream_distance_start"]


@pytest.mark.slow
def test_a_preempted_stage2_resumes_exactly(tmp_path, stage1, corpus):
    stage1_dir, _ = stage1
    steps, common = 240, [*corpus, *WSD, "stage=2", "stage2_fraction=0.95"]
    reference = train(tiny_config(tmp_path / "stage1-long", steps, *corpus, *WSD, "stage=1", "stage2_fraction=0.95"))
    long_stage1 = ["parscale_n=2", f"init_from={tmp_path / 'stage1-long'}"]
    uninterrupted = train(tiny_config(tmp_path / "whole", steps, *common, *long_stage1))
    assert reference["steps"] == steps - int(0.95 * steps)

    run_dir = tmp_path / "interrupted"
    overrides = [item for item in tiny_overrides(run_dir, steps, *common, *long_stage1)
                 if not item.startswith("run_dir=")]
    child = subprocess.Popen([sys.executable, "-m", "sweeps.train", *overrides, f"hydra.run.dir={run_dir}"], cwd=REPO,
                             env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    while child.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 30):
        time.sleep(0.005)
    child.send_signal(signal.SIGTERM)
    output = child.communicate(timeout=60)[0]
    assert child.returncode == 128 + signal.SIGTERM, output
    resumed = train(tiny_config(run_dir, steps, *common, *long_stage1))
    assert resumed["loss"] == pytest.approx(uninterrupted["loss"], abs=1e-6)
    assert resumed["eval_loss_start"] == pytest.approx(uninterrupted["eval_loss_start"], abs=1e-9)
    first = steps - int(0.95 * steps)
    assert [row["step"] for row in read_metrics(metrics)] == list(range(first + 1, steps + 1))


def test_stage2_needs_its_stage1_checkpoint(tmp_path, stage1, corpus):
    stage1_dir, _ = stage1
    with pytest.raises(ConfigError, match="no checkpoint at step 28"):
        train(tiny_config(tmp_path / "F0.3", STEPS, *corpus, *WSD, "stage=2", "stage2_fraction=0.3",
                          f"init_from={stage1_dir}"))
    with pytest.raises(ConfigError, match="not a stage-1 run of tokens"):
        train(tiny_config(tmp_path / "longer", 2 * STEPS, *corpus, *WSD, "stage=2", "stage2_fraction=0.25",
                          f"init_from={stage1_dir}"))
    assert branch_dir(stage1_dir, 30).is_dir()


@pytest.mark.parametrize("overrides, message", [
    (["stage2_fraction=0.1"], "trains in two stages: a grid"),
    (["stage=1", "stage2_fraction=0.5", "tokens=128"], "leaves stage 1 no step"),
    (["stage=1", "stage2_fraction=0.1", "parscale_n=2"], "stage=1 trains the P = 1 backbone"),
    (["stage=1"], "needs stage2_fraction in (0, 1)"),
    (["stage=2", "stage2_fraction=0.1"], "set init_from=<its run dir>"),
    (["stage=1", "stage2_fraction=1.0"], "must lie in [0, 1)"),
    (["stage=1", "stage2_fraction=0.2", "branch_fractions=[0.1]"], "must each lie in (stage2_fraction=0.2, 1)"),
    (["stage=3"], "stage=3 is unknown"),
    (["stage=2", "stage2_fraction=0.1", "init_from=x", "stage2.prefix_init=ones"],
     "stage2.prefix_init='ones' is unknown"),
    (["stage=2", "stage2_fraction=0.1", "init_from=x", "stage2.warmup_fraction=1"], "stage2.warmup_fraction=1"),
    (["freeze_backbone=true"], "freeze_backbone=true needs init_from"),
])
def test_stage_settings_that_cannot_train_are_refused_in_one_line(tmp_path, overrides, message):
    with pytest.raises(ConfigError) as error:
        tiny_config(tmp_path / "run", 40, *overrides)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_two_stage_schedule_holds_the_peak_through_stage1_and_decays_over_stage2():
    optim = OptimConfig(lr=1.0, schedule="cosine", warmup_fraction=0.1, min_lr_ratio=0.1)
    rates = [learning_rate(step, 100, 1.0, optim, decay_steps=20) for step in range(100)]
    assert rates[:10] == pytest.approx([(step + 1) / 10 for step in range(10)])
    assert rates[10:81] == pytest.approx([1.0] * 71)  # stage 1 and the first step of stage 2: the peak
    assert rates[81:] == sorted(rates[81:], reverse=True) and rates[-1] == pytest.approx(0.1)
    warm = [learning_rate(step, 100, 1.0, optim, decay_steps=20, stage2_warmup_steps=4) for step in range(100)]
    assert warm[80:84] == pytest.approx([rate * (k + 1) / 4 for k, rate in enumerate(rates[80:84])])
    assert warm[84:] == rates[84:] and warm[:80] == rates[:80]
    one_stage = [learning_rate(step, 100, 1.0, optim) for step in range(100)]
    assert one_stage[50] < 1.0 and math.isclose(one_stage[10], 1.0)  # cosine from the end of warmup, as before
