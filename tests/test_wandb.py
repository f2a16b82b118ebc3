"""wandb across requeues, read back without wandb's servers: a run preempted by a real signal and resumed
writes two offline attempts that read back as one run with every step once and the results row in its
summary; an attempt whose steps wandb never wrote is filled in from metrics.jsonl by the next; and
`sweeps.collect --wandb` on a stand-in for the public API's listing (the rows themselves are parsed by wandb's
own Run and summary classes). Real `wandb.init(mode="offline")` runs throughout; nothing is mocked but the
API listing, which needs wandb's servers."""

import json
import signal
import subprocess
import sys
import time

import pytest

from sweeps.collect import main as collect_main
from sweeps.grid.collect import collect_wandb, collect_wandb_files, rows_from_wandb
from sweeps.run.config import WandbConfig, run_id
from sweeps.run.loop import train
from sweeps.run.tracking import MetricsLog, WandbLogger, read_metrics
from sweeps.run.wandb_files import read_runs

from train_helpers import REPO, child_env, tiny_config, tiny_overrides

wandb = pytest.importorskip("wandb")


@pytest.mark.slow
def test_a_preempted_and_resumed_run_is_one_wandb_run_in_its_offline_files(tmp_path):
    steps = 24
    run_dir = tmp_path / "sweep" / "cell"
    overrides = [item for item in tiny_overrides(run_dir, steps, "wandb.mode=offline", "checkpoint_interval=1000")
                 if not item.startswith("run_dir=")]
    child = subprocess.Popen([sys.executable, "-m", "sweeps.train", *overrides, f"hydra.run.dir={run_dir}"],
                             cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = run_dir / "metrics.jsonl"
    while child.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 6):
        time.sleep(0.01)
    child.send_signal(signal.SIGTERM)  # as on preemption: save at the step boundary, then exit
    output = child.communicate(timeout=120)[0]
    assert child.returncode == 128 + signal.SIGTERM, output[-3000:]
    stopped_at = len(read_metrics(metrics))

    config = tiny_config(run_dir, steps, "wandb.mode=offline", "checkpoint_interval=1000")
    result = train(config)  # the requeued attempt
    [run] = read_runs(tmp_path / "sweep")
    assert run.id == run_id(config) and len(run.attempts) == 2 and run.project == "parscale"
    assert [sorted(attempt.history) for attempt in run.attempts] == [list(range(1, stopped_at + 1)),
                                                                      list(range(stopped_at + 1, steps + 1))]
    assert list(run.history) == list(range(1, steps + 1))
    assert [row["loss"] for row in run.history.values()] == [row["loss"] for row in read_metrics(metrics)]
    assert run.summary["result"] == result and run.config["parscale_n"] == config.parscale_n

    table = collect_wandb_files(tmp_path / "sweep")
    assert len(table) == 1 and table.loc[0, "loss"] == result["loss"] and table.loc[0, "run_id"] == result["run_id"]
    assert table.loc[0, "eval_loss"] == result["eval_loss"] and table.loc[0, "params"] == result["params"]
    assert collect_main([str(tmp_path / "sweep"), "--wandb-files", "--out", str(tmp_path / "rows.csv")]) == 0
    assert collect_wandb_files(tmp_path / "sweep", group="another grid").empty


def test_an_attempt_killed_before_wandb_wrote_its_steps_is_filled_in_by_the_next(tmp_path, monkeypatch):
    """Attempt 1 trained 300 steps (metrics.jsonl has them all, the checkpoint is at 300) but wandb wrote
    only its first 120 before the process died; attempt 2 sends 121 ... 300 from metrics.jsonl, then its own."""
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = WandbConfig(mode="offline", project="parscale", group="grid", name="cell")
    big_config = {"notes": "x" * 70_000}  # a record longer than a 32 KiB block of the log
    log = MetricsLog(tmp_path / "metrics.jsonl", resume_step=0)
    rows = [{"step": step, "loss": 10.0 / step, **{f"metric_{i}": step * i for i in range(12)}}
            for step in range(1, 331)]

    first = WandbLogger(config, tmp_path, "cell0001", big_config)
    for row in rows[:300]:
        log.append(row)
        if row["step"] <= 120:
            first.log(row, row["step"])
    first.run.finish(exit_code=1)

    log = MetricsLog(tmp_path / "metrics.jsonl", resume_step=300)  # the requeued attempt, as train() makes them
    second = WandbLogger(config, tmp_path, "cell0001", big_config)
    assert second.first_step == 121
    for row in rows[300:]:
        log.append(row)
        second.log(row, row["step"])
    second.finish({"status": "done", "loss": 0.5, "params": 1000, "P": 2, "dataset": "corpus"})

    [run] = read_runs(tmp_path)
    assert [min(a.history) for a in run.attempts] == [1, 121] and [max(a.history) for a in run.attempts] == [120, 330]
    assert list(run.history) == list(range(1, 331))
    assert all(run.history[row["step"]]["metric_11"] == row["metric_11"] for row in rows)
    assert run.config["notes"] == big_config["notes"] and run.group == "grid"
    assert run.attempts[0].exit_code == 1 and run.exit_code == 0
    assert rows_from_wandb([run]) == [{"dataset": "corpus", "params": 1000, "P": 2, "loss": 0.5, "status": "done",
                                       "run_id": "cell0001"}]


def api_run(name: str, summary: dict, group: str = "pile-paper"):
    """A public-API Run as `wandb.Api().runs()` builds it from the server's answer (summaryMetrics is JSON)."""
    from wandb.apis.public import Run

    attrs = {"name": name, "state": "finished", "group": group, "summaryMetrics": json.dumps(summary)}
    return Run(None, "entity", "parscale", name, attrs=attrs)


class StandInApi:
    """Stands in for `wandb.Api()`'s run listing, which needs wandb's servers: it answers `runs()` with Run
    objects made from server-shaped attributes and records how it was asked."""

    def __init__(self, runs):
        self.listed, self.asked = runs, []

    def runs(self, path, filters=None, lazy=True):
        self.asked.append((path, filters, lazy))
        return iter(self.listed)


def test_collect_from_the_wandb_api_reads_the_summary_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    row = {"dataset": "pile", "size": "0.5B", "params": 535_000_000, "P": 2, "loss": 2.1, "status": "done",
           "run_id": "a1", "seed": 0, "eval_loss": 2.2, "tokens": 42}
    api = StandInApi([
        api_run("a1", {"loss": 2.9, "step": 100, "result": row}),  # top-level loss: the last raw step's
        api_run("b2", {"loss": 3.0, "step": 50}),  # still running: no result
        api_run("c3", {"dataset": "pile", "params": 10, "P": 1, "loss": 2.5, "status": "done"}),  # an older layout
    ])
    table = collect_wandb("entity/parscale", group="pile-paper", api=api)
    assert api.asked == [("entity/parscale", {"group": "pile-paper"}, False)]
    assert table["run_id"].tolist() == ["c3", "a1"] and table.loc[1, "loss"] == 2.1 and table.loc[1, "eval_loss"] == 2.2

    class Offline(StandInApi):
        def runs(self, path, filters=None, lazy=True):
            raise ConnectionError("Max retries exceeded with url: /graphql\n(more detail)")

    with pytest.raises(RuntimeError, match="wandb API failed for e/p: Max retries exceeded with url: /graphql; check"):
        collect_wandb("e/p", api=Offline([]))
