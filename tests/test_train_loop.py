"""The training loop end to end on CPU: a golden loss, the run dir's record, preemption by a real signal and
an exact resume, a finished run that returns at once, two-stage training, and wandb (offline, and broken)."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from parscale_law.table import RESULT_COLUMNS, read_results, write_results
from sweeps.errors import ConfigError
from sweeps.run.checkpoint import complete_checkpoints, latest_checkpoint, read_meta
from sweeps.run.config import run_id
from sweeps.run.loop import train
from sweeps.run.tracking import read_metrics

from train_helpers import REPO, child_env, corpus_overrides, tiny_config, tiny_overrides, write_corpus

# The result.json of the golden_run config below, run once with torch 2.13.0+cpu and transformers 5.25 on one
# thread (loss 2.8721839794710724, eval_loss 2.5339291095733643): tiny-96 (4 heads, 4 prefix tokens) at P = 2,
# seed 0, 30 steps of 4 x 32 bytes of the synthetic corpus of train_helpers.write_corpus. A change in the model,
# its initialisation, the data order, the packing, the loss, the optimiser or the schedule moves these numbers;
# record them again only for an intended change (last: weights drawn per module from the run's seed, so that
# any number of processes starts from the same weights).
GOLDEN_LOSS = 2.87218
GOLDEN_EVAL_LOSS = 2.53393


@pytest.fixture(scope="module")
def golden_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("golden")
    config = tiny_config(root / "run", 30, "parscale_n=2", *corpus_overrides(write_corpus(root / "corpus")))
    return config, train(config)


def test_golden_loss(golden_run):
    config, result = golden_run
    assert result["loss"] == pytest.approx(GOLDEN_LOSS, abs=1e-4)
    assert result["eval_loss"] == pytest.approx(GOLDEN_EVAL_LOSS, abs=1e-4)


def test_run_dir_holds_the_record(golden_run, tmp_path):
    config, result = golden_run
    run_dir = Path(config.run_dir)
    assert set(RESULT_COLUMNS) <= set(result)
    assert result["status"] == "done" and result["P"] == 2 and result["tokens"] == 30 * 4 * 32
    assert result["run_id"] == run_id(config) and result["dataset"] == "jsonl" and result["size"] == "tiny-96"
    assert result["params"] > 0 and result["wall_time_s"] > 0
    assert json.loads((run_dir / "result.json").read_text()) == result
    write_results(pd.DataFrame([result]), tmp_path / "results.csv")
    assert read_results(tmp_path / "results.csv").loc[0, "loss"] == pytest.approx(result["loss"])

    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, 31))
    assert {"step", "tokens", "loss", "smoothed_loss", "lr", "tokens_per_s", "memory_gb", "elapsed_s"} <= set(rows[0])
    assert [row["step"] for row in rows if "eval_loss" in row] == [5, 10, 15, 20, 25, 30]
    assert rows[-1]["smoothed_loss"] == result["loss"] and rows[-1]["eval_loss"] == result["eval_loss"]
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    assert (run_dir / "model" / "model.safetensors").exists() and (run_dir / "config.yaml").exists()
    assert not (run_dir / "checkpoints").exists()  # the weights are in model/, optimiser state is dropped


def test_finished_run_returns_at_once(golden_run):
    config, result = golden_run
    metrics = (Path(config.run_dir) / "metrics.jsonl").read_text()
    start = time.perf_counter()
    assert train(config) == result
    assert time.perf_counter() - start < 2.0
    assert (Path(config.run_dir) / "metrics.jsonl").read_text() == metrics


SIGNAL_TEST_STEPS = 200  # long enough that the child is still training when the signal arrives


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    return train(tiny_config(run_dir, SIGNAL_TEST_STEPS)), read_metrics(run_dir / "metrics.jsonl")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGUSR2, signal.SIGTERM])
def test_signal_saves_a_checkpoint_and_the_resumed_run_matches_an_uninterrupted_one(tmp_path, signum, uninterrupted):
    """SIGUSR2 arrives with a handler already installed (as under submitit), SIGTERM with none."""
    steps = SIGNAL_TEST_STEPS
    reference, reference_rows = uninterrupted

    run_dir = tmp_path / "interrupted"
    stop_after = random.Random().randint(3, 80)
    overrides = [item for item in tiny_overrides(run_dir, steps) if not item.startswith("run_dir=")]
    child = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "train_signal_child.py"), str(tmp_path / "marker"), *overrides,
         f"hydra.run.dir={run_dir}"],
        cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    metrics = run_dir / "metrics.jsonl"
    while child.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= stop_after):
        time.sleep(0.005)
    child.send_signal(signum)
    output = child.communicate(timeout=60)[0]
    assert child.returncode == 128 + signum, output
    if signum == signal.SIGUSR2:
        assert (tmp_path / "marker").read_text() == "checkpoint present: True"  # saved before the handler ran
    saved_step = read_meta(latest_checkpoint(run_dir))["step"]
    assert stop_after <= saved_step < steps and f"saved the checkpoint at step {saved_step}" in output

    resumed = train(tiny_config(run_dir, steps))
    assert resumed["loss"] == pytest.approx(reference["loss"], abs=1e-6)
    assert resumed["eval_loss"] == pytest.approx(reference["eval_loss"], abs=1e-6)
    rows = read_metrics(metrics)
    assert [row["step"] for row in rows] == list(range(1, steps + 1))  # nothing lost, nothing twice
    for row, expected in zip(rows, reference_rows, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=1e-6)


def cut_shard_short(checkpoint: Path) -> None:
    shard = next(checkpoint.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])


def remove_dcp_metadata(checkpoint: Path) -> None:
    (checkpoint / ".metadata").unlink()


@pytest.mark.slow
@pytest.mark.parametrize("damage", [cut_shard_short, remove_dcp_metadata])
def test_a_damaged_newest_checkpoint_is_passed_over_with_one_warning(tmp_path, damage, uninterrupted, capsys):
    """A run killed (SIGKILL) once it has two checkpoints; its newest is then damaged on disk. The restart
    says so in one line naming that directory, resumes from the one before, and ends on the uninterrupted
    run's curve."""
    steps = SIGNAL_TEST_STEPS
    reference, reference_rows = uninterrupted
    run_dir = tmp_path / "run"
    overrides = [item for item in tiny_overrides(run_dir, steps) if not item.startswith("run_dir=")]
    child = subprocess.Popen([sys.executable, "-m", "sweeps.train", *overrides, f"hydra.run.dir={run_dir}"],
                             cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    while child.poll() is None and len(complete_checkpoints(run_dir)) < 2:
        time.sleep(0.005)
    child.kill()
    output = child.communicate(timeout=60)[0]
    assert child.returncode == -signal.SIGKILL, output[-2000:]
    *_, previous, newest = complete_checkpoints(run_dir)
    damage(newest)

    resumed = train(tiny_config(run_dir, steps))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and str(newest) in warnings[0] and previous.name in warnings[0], warnings
    assert resumed["loss"] == pytest.approx(reference["loss"], abs=1e-6)
    rows = read_metrics(run_dir / "metrics.jsonl")
    assert [row["step"] for row in rows] == list(range(1, steps + 1))  # nothing lost, nothing twice
    for row, expected in zip(rows, reference_rows, strict=True):
        assert row["loss"] == pytest.approx(expected["loss"], abs=1e-6)


def test_two_stage_training_from_a_finished_run_with_frozen_backbone(tmp_path):
    stage_one = train(tiny_config(tmp_path / "stage1", 20))
    stage_two = train(tiny_config(
        tmp_path / "stage2", 5, f"init_from={tmp_path / 'stage1'}", "parscale_n=2", "freeze_backbone=true",
        "optim.lr=1e-3", "optim.schedule=constant",
    ))
    assert stage_two["P"] == 2 and stage_two["params"] > stage_one["params"]
    before = load_file(tmp_path / "stage1" / "model" / "model.safetensors")
    after = load_file(tmp_path / "stage2" / "model" / "model.safetensors")
    assert all(torch.equal(before[name], after[name]) for name in before)  # the backbone did not move
    assert any(name.endswith("prefix_k") for name in after) and any("aggregate_layer" in name for name in after)
    # The streams start from the trained backbone, not from scratch (a new model starts near ln 259 = 5.6).
    first = read_metrics(tmp_path / "stage2" / "metrics.jsonl")[0]
    assert first["loss"] < stage_one["loss"] + 0.5


def test_two_stage_from_a_qwen2_checkpoint_and_refusals(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from models import parscale_config

    fields = parscale_config("tiny-96").to_dict()
    qwen2 = Qwen2ForCausalLM(Qwen2Config(**{key: value for key, value in fields.items()
                                            if not key.startswith("parscale")}))
    qwen2.save_pretrained(tmp_path / "qwen2")
    result = train(tiny_config(tmp_path / "stage2", 2, f"init_from={tmp_path / 'qwen2'}", "parscale_n=4"))
    assert result["P"] == 4 and result["status"] == "done"

    (tmp_path / "unfinished").mkdir()
    (tmp_path / "unfinished" / "config.yaml").write_text("{}")
    with pytest.raises(ConfigError, match="has not finished"):
        train(tiny_config(tmp_path / "other", 2, f"init_from={tmp_path / 'unfinished'}", "parscale_n=2"))
    with pytest.raises(ConfigError, match="hidden_size"):
        train(tiny_config(tmp_path / "wider", 2, f"init_from={tmp_path / 'qwen2'}", "parscale_n=2",
                          "model=tiny-128"))


def test_wandb_offline_run_has_the_cell_id(tmp_path):
    pytest.importorskip("wandb")
    config = tiny_config(tmp_path / "run", 3, "wandb.mode=offline")
    train(config)
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert [path.name.rsplit("-", 1)[1] for path in runs] == [run_id(config)]


def test_wandb_failure_warns_once_and_training_finishes(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` now fails as if it were not installed
    result = train(tiny_config(tmp_path / "run", 3, "wandb.mode=online"))
    warnings = [line for line in capsys.readouterr().err.splitlines() if "wandb" in line]
    assert len(warnings) == 1 and warnings[0].startswith("warning: wandb is off")
    assert result["status"] == "done" and len(read_metrics(tmp_path / "run" / "metrics.jsonl")) == 3


def test_activation_checkpointing_keeps_the_numbers_and_bf16_stays_close(tmp_path):
    plain = train(tiny_config(tmp_path / "plain", 4, "parscale_n=2"))
    checkpointed = train(tiny_config(tmp_path / "checkpointed", 4, "parscale_n=2", "activation_checkpointing=true"))
    assert checkpointed["loss"] == pytest.approx(plain["loss"], abs=1e-6)
    bf16 = train(tiny_config(tmp_path / "bf16", 4, "parscale_n=2", "precision=bf16"))
    assert bf16["loss"] != plain["loss"] and bf16["loss"] == pytest.approx(plain["loss"], abs=0.05)


def test_parscale_parameters_get_their_own_learning_rate_and_decay(tmp_path):
    from sweeps.run.build import build_optimizer, build_trained, model_config
    from sweeps.run.distributed import Environment

    config = tiny_config(tmp_path / "run", 5, "parscale_n=2", "optim.parscale_lr_scale=4",
                         "optim.parscale_weight_decay=0")
    trained, model = build_trained(config, model_config(config, 259), Environment(0, 1, 0, torch.device("cpu")),
                                   "ddp", False)
    optimizer = build_optimizer(trained, config.optim)
    by_scale = {}
    for group in optimizer.param_groups:
        by_scale.setdefault(group["lr_scale"], []).append(group)
    parscale = {id(p) for g in by_scale[4.0] for p in g["params"]}
    assert parscale == {id(p) for p in model.parscale_state_dict().values()}
    assert all(g["weight_decay"] == 0 for g in by_scale[4.0])
    assert {g["weight_decay"] for g in by_scale[1.0]} == {config.optim.weight_decay, 0.0}


def test_checkpoints_keep_the_newest_and_an_interrupted_save_never_replaces_a_good_one(tmp_path):
    from sweeps.run.checkpoint import Checkpointer, complete_checkpoints
    from sweeps.run.distributed import Environment

    env = Environment(0, 1, 0, torch.device("cpu"))
    checkpointer = Checkpointer(tmp_path, env, keep=2)
    for step in (5, 10, 15):
        checkpointer.save(step, {"model": {"w": torch.full((3,), float(step))}}, {"data": {}}, {"run_id": "x"})
    assert [path.name for path in complete_checkpoints(tmp_path)] == ["step-00000010", "step-00000015"]
    # A save killed half way leaves a .tmp directory: never read, removed by the next start.
    torn = tmp_path / "checkpoints" / ".step-00000020.tmp"
    torn.mkdir()
    (torn / "__0_0.distcp").write_bytes(b"half")
    restarted = Checkpointer(tmp_path, env, keep=2)
    assert not torn.exists() and latest_checkpoint(tmp_path).name == "step-00000015"
    state = {"model": {"w": torch.zeros(3)}}
    restarted.load(latest_checkpoint(tmp_path), state)
    assert state["model"]["w"].tolist() == [15.0] * 3 and read_meta(latest_checkpoint(tmp_path))["save_s"] >= 0


def test_a_checkpoint_interval_in_minutes_saves_whatever_the_step_interval(tmp_path):
    train(tiny_config(tmp_path / "run", 8, "checkpoint_interval=1000", "checkpoint_interval_min=1e-6"))
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [row["step"] for row in rows if "checkpoint_s" in row] == list(range(1, 8))  # every step but the last
