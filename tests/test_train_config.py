"""Bad configurations fail before training with one line saying what to change; a run dir holding a
different run is refused; the Hydra app prints just that line and exits non-zero."""

import pytest

from sweeps.errors import ConfigError
from sweeps.run.config import load_config, run_id
from sweeps.run.loop import train

from train_helpers import run_app, tiny_config, tiny_overrides


@pytest.mark.parametrize(
    "override, expected",
    [
        ("model=tiny-999", "choose one of"),
        ("data=wikipedia", "unknown data 'wikipedia'"),
        ("tokens=100", "raise tokens to at least 128"),
        ("parscale_n=0", "P must be at least 1"),
        ("seed=-1", "must be 0 or more"),
        ("model.parscale_n=4", "with parscale_n=4"),
        ("micro_batch_size=3", "not a multiple of micro_batch_size"),
        ("optim.schedule=linear", "use one of cosine, wsd, constant"),
        ("seq_len=512 tokens=100000", "max_position_embeddings"),
        ("freeze_backbone=true", "needs init_from"),
        ("data=jsonl", "data.data_files"),
        ("tokns=5", "tokns"),
    ],
)
def test_bad_config_fails_with_one_line(tmp_path, override, expected):
    with pytest.raises(ConfigError) as error:
        config = tiny_config(tmp_path / "run", 10, *override.split())
        train(config)
    message = str(error.value)
    assert expected in message and "\n" not in message
    assert not (tmp_path / "run").exists()  # nothing was started


def test_model_with_unknown_field_fails_before_training(tmp_path):
    config = tiny_config(tmp_path / "run", 10)
    config.model["hiden_size"] = 64
    with pytest.raises(ConfigError, match="hiden_size"):
        train(config)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_run_dir_of_another_config_is_refused_and_harmless_changes_are_not(tmp_path):
    run_dir = tmp_path / "run"
    first = train(tiny_config(run_dir, 2))
    with pytest.raises(ConfigError, match=r"different config \(optim.lr: 0.003 -> 0.001\)"):
        train(tiny_config(run_dir, 2, "optim.lr=1e-3"))
    with pytest.raises(ConfigError, match="parscale_n"):
        train(tiny_config(run_dir, 2, "parscale_n=2"))
    # Reporting settings may change between attempts: the finished run is returned as it is.
    again = train(tiny_config(run_dir, 2, "log_interval=1", "checkpoint_interval=1"))
    assert again == first


def test_run_id_is_stable_and_names_the_cell(tmp_path):
    a = tiny_config(tmp_path / "a", 10)
    assert run_id(a) == run_id(tiny_config(tmp_path / "elsewhere", 10, "wandb.mode=offline"))
    assert run_id(a) != run_id(tiny_config(tmp_path / "a", 10, "seed=1"))
    assert run_id(a) != run_id(tiny_config(tmp_path / "a", 10, "parscale_n=2"))


def test_load_config_needs_a_run_dir():
    with pytest.raises(ConfigError, match="run_dir=PATH"):
        load_config(["model=tiny-96"])


@pytest.mark.slow
@pytest.mark.parametrize("override", ["model=tiny-999", "tokens=100"])
def test_app_prints_one_line_and_exits_2(tmp_path, override):
    overrides = [item for item in tiny_overrides(tmp_path, 10, override) if not item.startswith("run_dir=")]
    done = run_app(*overrides, f"hydra.run.dir={tmp_path / 'run'}")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
