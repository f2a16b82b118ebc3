"""The wheel installs and runs outside the checkout: built from a copy of the working tree, installed into a
fresh folder and run from an empty directory, it finds conf/ and its data files as package data: the paper
grid's dry run, a fit of the published losses and the figures."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
IMPORTED = ("sweeps", "sweeps.run.config", "sweeps.grid.resources", "parscale_law", "models", "analysis", "conf",
            "hydra_plugins.parscale_sweeps")


def run_python(arguments: list[str], cwd: Path, env: dict | None = None) -> str:
    done = subprocess.run([sys.executable, *arguments], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def checkout_state() -> str:
    """Every changed, untracked and ignored path of the checkout (ignored ones too: outputs/, runs/)."""
    return subprocess.run(["git", "status", "--porcelain", "--ignored"], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout


def copy_working_tree(destination: Path) -> None:
    """The tracked and untracked, not ignored, files: a build in the checkout would leave build/ there, whose
    stale modules a later wheel would ship."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, text=True, check=True).stdout
    for name in filter(None, listed.split("\0")):
        source = REPO / name
        if source.is_file():  # not one deleted from the working tree but still in the index
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


@pytest.mark.slow
def test_the_wheel_runs_from_an_empty_directory(tmp_path):
    before = checkout_state()
    source, dist, site, empty = (tmp_path / name for name in ("source", "dist", "site", "empty"))
    empty.mkdir()
    copy_working_tree(source)
    run_python(["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(dist),
                str(source)], cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    run_python(["-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
               cwd=tmp_path)
    # PYTHONPATH comes before the editable install's finder, so the imports below must land in site.
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONNOUSERSITE": "1"}

    found = json.loads(run_python(["-c", f"""
import importlib, json
from sweeps.run.config import CONF_DIR
from sweeps.run.tracking import git_revision
print(json.dumps({{"files": {{name: importlib.import_module(name).__file__ for name in {IMPORTED!r}}},
                  "conf_dir": str(CONF_DIR), "revision": git_revision()}}))
"""], cwd=empty, env=env))
    outside = {name: path for name, path in found["files"].items() if not Path(path).is_relative_to(site)}
    assert not outside, f"imported from outside the installed wheel: {outside}"
    assert Path(found["conf_dir"]) == site / "conf"
    assert found["revision"] == "unknown"  # no clone around the installed packages

    planned = run_python(["-m", "sweeps.launch", "+grid=pile", "sweep.dry_run=true"], cwd=empty, env=env)
    assert re.search(r"^total: [\d,]+ GPU-hours on H100-80GB$", planned, re.MULTILINE), planned[-2000:]
    assert "nothing submitted" in planned
    assert len(json.loads((empty / "multirun" / "pile-paper" / "plan.json").read_text())) == 24

    fitted = run_python(["-m", "parscale_law", "fit", "--published", "pile"], cwd=empty, env=env)
    assert re.search(r"^\s+k\s+0\.3344", fitted, re.MULTILINE), fitted

    run_python(["-m", "analysis.figures", "--published", "pile", "--out", "figs", "--format", "png",
                "--bootstrap", "0"], cwd=empty, env=env)
    assert (empty / "figs" / "loss_vs_params.png").read_bytes().startswith(b"\x89PNG")

    assert checkout_state() == before, "the commands wrote into the checkout"
