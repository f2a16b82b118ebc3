"""Every command refuses nonsense the same way: one line on stderr naming the cause, exit status 2, nothing
written (no file in the working directory, none in the inputs' folders). One row per command and class of bad
input: a new command or option gets its rows the day it is added.

Each case runs the real command in a subprocess from an empty working directory, so a traceback, a numpy or
torch warning, or a file left behind (a run directory, a results.csv, a stale lock) fails it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from parscale_law import load_published

# (id, module, arguments, words the one stderr line must hold). Arguments name the prepared inputs as
# {notsweep} (a folder with a text file), {empty} (an empty folder), {dryrun} (a sweep folder holding only a
# dry run's plan), {sweep} (a finished smoke sweep, wandb disabled), {results} (a valid results table),
# {blank} (an empty CSV), {file} (a plain file, for output paths onto a file) and {missing} (a path whose
# folder does not exist).
FIT = ["parscale_law", "fit"]
PILE = [*FIT, "--published", "pile"]
OPTIMAL = ["parscale_law", "optimal", "--published", "chinchilla"]
PLAN = ["analysis.plan", "--published", "pile", "--bootstrap", "0"]
COST = ["analysis.cost"]
SLURM_DRY = ["sweeps.launch", "+grid=pile", "hydra/launcher=parscale_slurm", "sweep.dry_run=true"]
CASES = [
    # the fitter
    ("fit-missing-table", FIT, ["{missing}"], ["no-such"]),
    ("fit-empty-table", FIT, ["{blank}"], ["blank.csv"]),
    ("fit-not-a-table", FIT, ["{notsweep}"], ["notsweep"]),
    ("fit-fix-unreachable-E", PILE, ["--fix", "E=5"], ["E=5"]),
    ("fit-fix-unknown-name", PILE, ["--fix", "Q=1"], ["Q"]),
    ("fit-fix-not-a-number", PILE, ["--fix", "E=abc"], ["--fix"]),
    ("fit-fix-nan", PILE, ["--fix", "E=nan"], ["E"]),
    ("fit-predict-garbage", PILE, ["--predict", "garbage"], ["--predict"]),
    ("fit-predict-P0", PILE, ["--predict", "1e10,0"], ["P"]),
    ("fit-predict-nan", PILE, ["--predict", "nan,2"], ["N"]),
    ("fit-predict-negative-N", PILE, ["--predict", "-5,2"], ["N"]),
    ("fit-bootstrap-negative", PILE, ["--bootstrap", "-3"], ["--bootstrap"]),
    ("fit-rollout-negative", PILE, ["--rollout", "-1"], ["--rollout"]),
    ("fit-json-missing-folder", PILE, ["--json", "{missing}/fit.json"], ["no-such"]),
    ("fit-json-onto-folder", PILE, ["--json", "{empty}"], ["empty"]),
    ("fit-json-under-a-file", PILE, ["--json", "{file}/fit.json"], ["file.txt"]),
    ("fit-unknown-form", PILE, ["--form", "cubic"], ["cubic"]),
    ("fit-unknown-holdout", PILE, ["--holdout", "sideways"], ["sideways"]),
    ("fit-unknown-loss-column", FIT, ["{results}", "--loss-column", "nope"], ["nope"]),
    ("fit-unknown-weights", FIT, ["{results}", "--weights", "nope"], ["nope"]),
    ("fit-unknown-dataset", FIT, ["{results}", "--dataset", "nope"], ["nope"]),
    ("fit-no-source", FIT, [], ["--published"]),
    ("optimal-flops-nan", OPTIMAL, ["--flops", "nan"], ["--flops"]),
    ("optimal-flops-negative", OPTIMAL, ["--flops", "-1e21"], ["--flops"]),
    ("optimal-P0", OPTIMAL, ["--flops", "1e21", "--P", "0"], ["--P"]),
    ("optimal-json-missing-folder", OPTIMAL, ["--flops", "1e21", "--json", "{missing}/o.json"], ["no-such"]),
    ("optimal-bootstrap-negative", OPTIMAL, ["--flops", "1e21", "--bootstrap", "-3"], ["--bootstrap"]),
    ("compare-unknown-split", ["parscale_law", "compare", "--published", "pile"], ["--split", "sideways"],
     ["sideways"]),
    # the planner
    ("plan-target-nan", PLAN, ["--target-loss", "nan"], ["--target-loss"]),
    ("plan-target-negative", PLAN, ["--target-loss", "-1"], ["--target-loss"]),
    ("plan-P0", PLAN, ["--target-loss", "2.5", "--P", "0,1"], ["--P"]),
    ("plan-P-garbage", PLAN, ["--target-loss", "2.5", "--P", "two"], ["--P"]),
    ("plan-flops-nan", PLAN, ["--flops", "nan"], ["--flops"]),
    ("plan-fit-missing", ["analysis.plan", "--fit", "{missing}/fit.json", "--target-loss", "2.5"], [], ["no-such"]),
    ("plan-fit-is-a-csv", ["analysis.plan", "--fit", "{results}", "--target-loss", "2.5"], [], ["results.csv"]),
    ("plan-figure-missing-folder", PLAN, ["--target-loss", "2.5", "--figure", "{missing}/plan.png"], ["no-such"]),
    ("plan-unknown-gpu", PLAN, ["--target-loss", "2.5", "--gpu", "Z100"], ["Z100", "H100"]),
    ("plan-batch-zero", PLAN, ["--target-loss", "2.5", "--batch", "0"], ["--batch"]),
    ("plan-bootstrap-negative", ["analysis.plan", "--published", "pile", "--target-loss", "2.5"],
     ["--bootstrap", "-3"], ["--bootstrap"]),
    ("plan-results-missing", ["analysis.plan", "--results", "{missing}/r.csv", "--target-loss", "2.5"], [],
     ["no-such"]),
    # the cost model
    ("cost-batch-does-not-fit", COST, ["--batch", "100000", "--gpu", "L4-24GB"], ["L4-24GB", "GB"]),
    ("cost-P0", COST, ["--P", "0"], ["--P"]),
    ("cost-batch-zero", COST, ["--batch", "0"], ["--batch"]),
    ("cost-unknown-gpu", COST, ["--gpu", "Z100"], ["Z100", "H100"]),
    ("cost-flop-efficiency-above-1", COST, ["--flop-efficiency", "2"], ["--flop-efficiency"]),
    ("cost-memory-efficiency-zero", COST, ["--memory-efficiency", "0"], ["--memory-efficiency"]),
    ("cost-unknown-size", COST, ["--size", "7Q"], ["7Q"]),
    ("cost-output-tokens-zero", COST, ["--output-tokens", "0"], ["--output-tokens"]),
    # figures
    ("figures-out-onto-a-file", ["analysis.figures", "--published", "pile", "--bootstrap", "0"],
     ["--out", "{file}"], ["file.txt"]),
    ("figures-results-missing", ["analysis.figures", "--results", "{missing}/r.csv"], [], ["no-such"]),
    ("figures-bootstrap-negative", ["analysis.figures", "--published", "pile"], ["--bootstrap", "-1"],
     ["--bootstrap"]),
    ("figures-unknown-format", ["analysis.figures", "--published", "pile", "--bootstrap", "0"],
     ["--format", "xyz", "--out", "{missing}"], ["xyz"]),
    ("figures-unknown-gpu", ["analysis.figures", "--published", "pile"], ["--gpu", "Z100"], ["Z100"]),
    ("scaling-results-missing", ["analysis.scaling", "--results", "{missing}/r.csv"], [], ["no-such"]),
    ("scaling-out-onto-a-file", ["analysis.scaling", "--published", "chinchilla"], ["--out", "{file}"],
     ["file.txt"]),
    ("scaling-rollout-negative", ["analysis.scaling", "--published", "chinchilla"], ["--rollout", "-1"],
     ["--rollout"]),
    ("measure-P0", ["analysis.measure"], ["--P", "0"], ["--P"]),
    ("measure-batch-zero", ["analysis.measure"], ["--batch", "0"], ["--batch"]),
    ("measure-repeats-zero", ["analysis.measure"], ["--repeats", "0"], ["--repeats"]),
    ("measure-out-onto-a-file", ["analysis.measure"], ["--out", "{file}"], ["file.txt"]),
    # the sweep's folders
    ("status-not-a-sweep", ["sweeps.status"], ["{notsweep}"], ["notsweep", "sweep"]),
    ("status-empty-folder", ["sweeps.status"], ["{empty}"], ["empty", "sweep"]),
    ("status-dry-run-only", ["sweeps.status"], ["{dryrun}"], ["dry run"]),
    ("status-missing", ["sweeps.status"], ["{missing}"], ["no-such"]),
    ("report-not-a-sweep", ["sweeps.report"], ["{notsweep}"], ["notsweep", "sweep"]),
    ("report-empty-folder", ["sweeps.report"], ["{empty}"], ["empty", "sweep"]),
    ("report-dry-run-only", ["sweeps.report"], ["{dryrun}"], ["dry run"]),
    ("report-bootstrap-negative", ["sweeps.report"], ["{sweep}", "--bootstrap", "-3"], ["--bootstrap"]),
    ("collect-not-a-sweep", ["sweeps.collect"], ["{notsweep}"], ["notsweep", "sweep"]),
    ("collect-empty-folder", ["sweeps.collect"], ["{empty}"], ["empty", "sweep"]),
    ("collect-dry-run-only", ["sweeps.collect"], ["{dryrun}"], ["dry run"]),
    ("collect-out-xlsx", ["sweeps.collect"], ["{sweep}", "--out", "{empty}/x.xlsx"], ["x.xlsx", ".csv"]),
    ("collect-out-missing-folder", ["sweeps.collect"], ["{sweep}", "--out", "{missing}/r.csv"], ["no-such"]),
    ("collect-wandb-disabled", ["sweeps.collect"], ["{sweep}", "--wandb-files"], ["wandb", "disabled"]),
    ("collect-nothing", ["sweeps.collect"], [], ["sweep"]),
    # preparing data
    ("prepare-workers-zero", ["sweeps.prepare", "data=stdlib-code", "out={empty}/prepared"], ["workers=0"],
     ["workers"]),
    ("prepare-out-onto-a-file", ["sweeps.prepare", "data=stdlib-code"], ["out={file}"], ["file.txt"]),
    ("prepare-unknown-data", ["sweeps.prepare", "out={empty}/prepared"], ["data=nope"], ["nope"]),
    ("prepare-hub-offline", ["sweeps.prepare", "out={empty}/pile"], ["data=pile"], ["pile"]),
    # one training run
    ("train-negative-lr", ["sweeps.train", "model=tiny-32", "tokens=2048"], ["optim.lr=-1"], ["optim.lr"]),
    ("train-P0", ["sweeps.train", "model=tiny-32", "tokens=2048"], ["parscale_n=0"], ["parscale_n"]),
    ("train-run-dir-onto-a-file", ["sweeps.train", "model=tiny-32", "tokens=2048"], ["hydra.run.dir={file}"],
     ["file.txt"]),
    ("train-unknown-model", ["sweeps.train"], ["model=tiny-7"], ["tiny-7"]),
    ("train-unknown-backbone", ["sweeps.train", "model=tiny-32", "tokens=2048"], ["model.backbone=nope"],
     ["nope", "backbone"]),
    ("train-nan-tokens", ["sweeps.train", "model=tiny-32"], ["tokens=nan"], ["tokens"]),
    # launching a grid
    ("launch-unknown-gpu", SLURM_DRY, ["hydra.launcher.gpu=Z100"], ["Z100", "H100"]),
    ("launch-mfu-above-1", SLURM_DRY, ["hydra.launcher.mfu=2"], ["mfu"]),
    ("launch-max-nodes-zero", SLURM_DRY, ["hydra.launcher.max_nodes=0"], ["max_nodes"]),
    ("launch-sweep-dir-onto-a-file", ["sweeps.launch", "+grid=pile", "scale=smoke"], ["hydra.sweep.dir={file}"],
     ["file.txt"]),
    ("launch-P0", ["sweeps.launch", "+grid=pile", "scale=smoke"], ["scale.P=0"], ["P"]),
    ("launch-unknown-grid", ["sweeps.launch"], ["+grid=nope"], ["nope"]),
    ("launch-parallel-zero", ["sweeps.launch", "+grid=pile", "scale=smoke"], ["hydra.launcher.parallel=0"],
     ["parallel"]),
    # the GPU check
    ("gpu-check-unknown-cell", ["sweeps.gpu_check", "--tiny"], ["--cells", "9B-P3"], ["9B-P3"]),
    ("gpu-check-budget-negative", ["sweeps.gpu_check", "--tiny"], ["--budget-s", "-1"], ["--budget-s"]),
    ("gpu-check-out-onto-a-file", ["sweeps.gpu_check", "--tiny"], ["--out", "{file}"], ["file.txt"]),
    ("gpu-check-unknown-gpu", ["sweeps.gpu_check", "--tiny"], ["--gpu", "Z100"], ["Z100"]),
]


def snapshot(folder: Path) -> dict[str, float | None]:
    """Every path below ``folder``, with the files' modification times (a folder's own changes when a command
    makes and removes something inside it, which leaves nothing written)."""
    return {str(path.relative_to(folder)): None if path.is_dir() else path.stat().st_mtime
            for path in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """The prepared inputs, one set for every case (each case must leave them as they were)."""
    return make_inputs(tmp_path_factory.mktemp("inputs"))


def make_inputs(root: Path) -> dict[str, Path]:
    (root / "notsweep").mkdir()
    (root / "notsweep" / "notes.txt").write_text("not a sweep\n")
    (root / "empty").mkdir()
    (root / "file.txt").write_text("a plain file\n")
    (root / "blank.csv").write_text("")
    load_published("pile").to_csv(root / "results.csv", index=False)
    dry = subprocess.run([sys.executable, "-m", *SLURM_DRY, "scale.sizes=0.5B", "scale.P=1",
                          f"hydra.sweep.dir={root / 'dryrun'}"], cwd=root, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and (root / "dryrun" / "plan.json").exists(), dry.stdout[-2000:] + dry.stderr[-2000:]
    smoke = subprocess.run([sys.executable, "-m", "sweeps.launch", "+grid=pile", "scale=smoke", "scale.sizes=tiny-32",
                            "scale.P=1", "tokens=2048", f"hydra.sweep.dir={root / 'sweep'}",
                            "hydra.callbacks.report.n_bootstrap=0"],
                           cwd=root, capture_output=True, text=True, timeout=300)
    assert (root / "sweep" / "tiny-32-P1-s0" / "result.json").exists(), smoke.stdout[-2000:] + smoke.stderr[-2000:]
    names = {"notsweep", "empty", "file", "blank", "results", "dryrun", "sweep"}
    paths = {name: root / name for name in names}
    paths.update(file=root / "file.txt", blank=root / "blank.csv", results=root / "results.csv",
                 missing=root / "no-such-folder")
    return paths


@pytest.mark.slow
@pytest.mark.parametrize(("module", "arguments", "words"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES])
def test_bad_input_is_refused_in_one_line(inputs, tmp_path, module, arguments, words):
    argv = [part.format(**inputs) for part in [*module[1:], *arguments]]
    root = inputs["file"].parent
    before = snapshot(root)
    # Offline as on a compute node without internet: the hub case must fail fast, not hang on retries.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    done = subprocess.run([sys.executable, "-m", module[0], *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300, env=env)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, f"exit {done.returncode}\nstdout: {done.stdout[-1500:]}\nstderr: {done.stderr[-3000:]}"
    assert len(lines) == 1, done.stderr[-3000:]
    assert all(word.lower() in lines[0].lower() for word in words), lines[0]
    assert not list(tmp_path.iterdir()), f"written: {list(tmp_path.iterdir())}"
    assert snapshot(root) == before, "an input folder changed"


def test_the_table_covers_every_command():
    commands = {case[1][0] if case[1][0] != "parscale_law" else " ".join(case[1][:2]) for case in CASES}
    assert commands >= {"parscale_law fit", "parscale_law optimal", "parscale_law compare", "analysis.plan",
                        "analysis.cost", "analysis.figures", "analysis.scaling", "analysis.measure", "sweeps.status",
                        "sweeps.report", "sweeps.collect", "sweeps.prepare", "sweeps.train", "sweeps.launch",
                        "sweeps.gpu_check"}
    assert len(CASES) >= 60 and len({case[0] for case in CASES}) == len(CASES)
    assert json.dumps(CASES)  # every case is plain data


@pytest.mark.slow
@pytest.mark.parametrize("command", [
    ["parscale_law", "fit", "--published", "pile", "--bootstrap", "200", "--predict", "1.1e10,8"],
    ["analysis.plan", "--published", "pile", "--target-loss", "1.9", "--bootstrap", "100"],
    ["analysis.cost", "--size", "4.4B", "--P", "8", "--batch", "64"],
], ids=["fit", "plan", "cost"])
def test_good_input_reaches_the_terminal_without_library_warnings(tmp_path, command):
    done = subprocess.run([sys.executable, "-m", *command], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Warning" not in done.stderr and "warnings.warn" not in done.stderr, done.stderr[-3000:]
