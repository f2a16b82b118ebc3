"""Two-stage grids on this machine (sweeps/grid/two_stage.py, the local launcher): one setting makes the stage-1
cells, stage 2 starts only from a stage-1 checkpoint, the results table and the fits are per stage-2 fraction,
a failed stage 1 blocks its stage-2 cells, and the dry run prices both stages against from scratch. Runs real
training subprocesses (a few seconds per cell)."""

import json
import re
from pathlib import Path

import pytest

from parscale_law import read_results
from sweeps.run.stages import branch_dir

from test_sweeps_local import FAST, launch, run_module

SMOKE = ["+grid=pile", "scale=smoke", *FAST]


def branch_meta(sweep_dir: Path, stage1: str, step: int) -> Path:
    return branch_dir(sweep_dir / stage1, step) / "meta.json"


@pytest.fixture(scope="module")
def two_stage_sweep(tmp_path_factory):
    cwd = tmp_path_factory.mktemp("two-stage")
    done = launch(cwd, *SMOKE, "stage2_fraction=0.25")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return cwd, cwd / "multirun" / "pile-smoke", done.stdout


def test_one_setting_makes_stage1_cells_and_stage2_starts_from_their_checkpoint(two_stage_sweep):
    _, sweep_dir, stdout = two_stage_sweep
    manifest = json.loads((sweep_dir / "sweep.json").read_text())
    stages = {cell["name"]: (cell["stage"], cell["after"]) for cell in manifest["cells"]}
    assert stages["tiny-32-P1-s0-stage1"] == (1, None)
    assert stages["tiny-32-P2-s0-F0.25"] == (2, "tiny-32-P1-s0-stage1")
    assert sum(stage == 1 for stage, _ in stages.values()) == 3 and len(stages) == 9
    # 20 steps: stage 1 trains 15 and keeps its checkpoint there; stage 2 starts at step 15 from it.
    for size in ("tiny-32", "tiny-48", "tiny-64"):
        branch = branch_meta(sweep_dir, f"{size}-P1-s0-stage1", 15)
        for P in (1, 2):
            cell = sweep_dir / f"{size}-P{P}-s0-F0.25"
            started = json.loads((cell / "attempts.json").read_text())[0]["started"]
            assert started >= branch.stat().st_mtime, f"{cell.name} started before its stage-1 checkpoint existed"
            steps = [json.loads(line)["step"] for line in (cell / "metrics.jsonl").read_text().splitlines()]
            assert steps == list(range(16, 21))
    assert "9 cells finished, 0 failed" in stdout and "streams act like" in stdout


def test_the_results_table_holds_the_stage2_cells_with_their_fraction(two_stage_sweep):
    _, sweep_dir, _ = two_stage_sweep
    table = read_results(sweep_dir / "results.csv")
    assert len(table) == 6 and set(table["P"]) == {1, 2} and (table["stage"] == 2).all()
    assert (table["stage2_fraction"] == 0.25).all() and (table["tokens"] == 20 * 16 * 64).all()
    assert (table["stage2_tokens"] == 5 * 16 * 64).all()
    at_p2 = table[table["P"] == 2]
    assert at_p2["stream_distance"].gt(0).all() and at_p2["weight_entropy_start"].eq(1.0).all()
    assert (sweep_dir / "fit.json").exists()


def test_status_shows_the_stages_and_a_relaunch_runs_nothing(two_stage_sweep):
    cwd, sweep_dir, _ = two_stage_sweep
    status = run_module(cwd, "sweeps.status", str(sweep_dir))
    lines = {line.split()[0]: line for line in status.stdout.splitlines()[:-1]}
    assert "stage 1" in lines["tiny-48-P1-s0-stage1"] and "stage 2" in lines["tiny-48-P2-s0-F0.25"]
    assert status.stdout.splitlines()[-1].startswith("0 pending, 0 running, 9 done")
    again = launch(cwd, *SMOKE, "stage2_fraction=0.25")
    assert again.returncode == 0 and "9 cells done, 0 to run" in again.stdout


def test_a_boundary_sweep_shares_one_stage1_per_size_and_fits_each_fraction(tmp_path):
    done = launch(tmp_path, *SMOKE, "stage2_fraction=0.25,0.5")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sweep_dir = tmp_path / "multirun" / "pile-smoke"
    stage1s = [f"{size}-P1-s0-stage1" for size in ("tiny-32", "tiny-48", "tiny-64")]
    assert sorted(path.name for path in sweep_dir.glob("*-stage1")) == stage1s
    for stage1 in stage1s:
        assert branch_meta(sweep_dir, stage1, 10).exists() and branch_meta(sweep_dir, stage1, 15).exists()
    table = read_results(sweep_dir / "results.csv")
    assert len(table) == 12 and sorted(set(table["stage2_fraction"])) == [0.25, 0.5]
    for fraction in ("0.25", "0.5"):
        assert (sweep_dir / f"F{fraction}" / "fit.json").exists(), fraction
    assert "stage2_fraction=0.25:" in done.stdout and "stage2_fraction=0.5:" in done.stdout

    # More P at one of its fractions reuses the stage-1 cells; a fraction they did not keep is refused.
    more = launch(tmp_path, *SMOKE, "stage2_fraction=0.25", "scale.P='1,4'")
    assert more.returncode == 0, more.stdout[-3000:] + more.stderr[-3000:]
    assert "6 cells done, 3 to run" in more.stdout and len(read_results(sweep_dir / "results.csv")) == 15
    other = launch(tmp_path, *SMOKE, "stage2_fraction=0.3")
    assert other.returncode == 2 and "keeps checkpoints for stage2_fraction [0.25, 0.5], not [0.3]" in other.stderr


def test_a_failed_stage1_blocks_its_stage2_cells(tmp_path):
    overrides = [*SMOKE, "scale.sizes=tiny-32", "optim.lr=1e30", "optim.warmup_fraction=0", "sweep.max_failures=1",
                 "stage2_fraction=0.25"]
    done = launch(tmp_path, *overrides)
    assert done.returncode == 1, done.stdout[-3000:]
    assert "tiny-32-P2-s0-F0.25: blocked (its stage 1, tiny-32-P1-s0-stage1, failed)" in done.stdout
    sweep_dir = tmp_path / "multirun" / "pile-smoke"
    assert not (sweep_dir / "tiny-32-P2-s0-F0.25" / "metrics.jsonl").exists()
    status = run_module(tmp_path, "sweeps.status", str(sweep_dir))
    line = next(line for line in status.stdout.splitlines() if line.startswith("tiny-32-P1-s0-F0.25"))
    assert "blocked" in line and "its stage 1, tiny-32-P1-s0-stage1, failed" in line
    assert status.stdout.splitlines()[-1] == "0 pending, 0 running, 0 done, 1 failed, 2 blocked"


def test_the_dry_run_prices_both_stages_against_from_scratch(tmp_path):
    done = launch(tmp_path, *SMOKE, "stage2_fraction=0.25", "sweep.dry_run=true", timeout=120)
    assert done.returncode == 0, done.stderr
    assert ("tiny-64-P1-s0-stage1 (stage 1): 15 steps" in done.stdout
            and "tiny-64-P2-s0-F0.25 (stage 2): 5 steps" in done.stdout)
    # Per size: stage 1 is 15 steps at P = 1, stage 2 is 5 steps at P = 1 and 2: 30 step-passes against 60.
    ratio = float(re.search(r"from scratch for the same cells \((\d\.\d+)x\)", done.stdout).group(1))
    assert ratio == pytest.approx(30 / 60, abs=0.01)
    assert not (tmp_path / "multirun" / "pile-smoke" / "sweep.json").exists()
