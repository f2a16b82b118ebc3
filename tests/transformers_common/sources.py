"""Where the runner's test package comes from: transformers' source distribution (downloaded once by pip),
optionally transformers' repository for what the distribution lacks, this folder's stand-ins for what neither
gives, and this folder's tester and family test modules."""

import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Named as in transformers' repository, whose test modules import each other as `tests.*`.
PACKAGE = "tests"
# This folder's file -> its name in the package; pytest collects the test_*_family.py modules.
OWN_MODULES = {"model_tester.py": "model_tester.py", "qwen2_tests.py": "test_qwen2_family.py",
               "qwen3_tests.py": "test_qwen3_family.py"}  # fmt: skip
# What test_modeling_common.py imports, by folder: (this folder's stand-in, the module it stands in for).
STAND_INS = {"generation": ("generation_mixin.py", "test_utils.py"), "exporters": ("export_mixin.py", "test_export.py")}


def cache_dir() -> Path:
    return Path(os.environ.get("PARSCALE_CACHE_DIR", Path.home() / ".cache" / "parscale-toolkit"))


def download_sdist(version: str) -> Path:
    """The transformers==version source distribution, downloaded by pip into the cache on first use."""
    target = cache_dir() / "transformers-sdist"
    existing = sorted(target.glob(f"transformers-{version}.tar.gz"))
    if existing:
        return existing[0]
    target.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"transformers=={version}", "--dest", str(target)]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True)
    found = sorted(target.glob(f"transformers-{version}.tar.gz"))
    if result.returncode != 0 or not found:
        sys.exit(
            f"pip could not download the transformers {version} source distribution ({result.stderr.strip()[-300:]}); "
            f"download transformers-{version}.tar.gz from PyPI yourself and pass it with --sdist."
        )
    return found[0]


def _git(git_dir: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", f"--git-dir={git_dir}", *arguments], capture_output=True)


def git_tests(git_dir: Path, ref: str, target: Path) -> tuple[Path, str]:
    """Extracts tests/<each STAND_INS folder> of transformers' repository at `ref` (git archive: a bare git
    directory will do) under `target`; returns that tests/ folder and a label naming the commit and version."""
    resolved = _git(git_dir, "rev-parse", "--verify", f"{ref}^{{commit}}")
    if resolved.returncode != 0:
        sys.exit(f"git finds no commit {ref} in {git_dir} ({resolved.stderr.decode().strip()[-200:]}); pass --ref.")
    commit = resolved.stdout.decode().strip()
    present = _git(git_dir, "ls-tree", "--name-only", commit, "tests/").stdout.decode().split()
    folders = [f"tests/{folder}" for folder in STAND_INS if f"tests/{folder}" in present]
    if not folders:
        sys.exit(f"{commit} of {git_dir} has none of tests/{{{','.join(STAND_INS)}}}; pass another --ref.")
    archive = _git(git_dir, "archive", "--format=tar", commit, *folders)
    if archive.returncode != 0:
        sys.exit(f"git could not archive the tests of {commit} ({archive.stderr.decode().strip()[-200:]}).")
    target.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tests:
        tests.extractall(target, filter="data")
    init = _git(git_dir, "show", f"{commit}:src/transformers/__init__.py").stdout.decode()
    version = re.search(r'__version__ = "([^"]+)"', init)
    version_label = f", version {version.group(1)}" if version else ""
    return target / "tests", f"transformers' repository at {ref} (commit {commit[:10]}{version_label})"


def assemble(sdist: Path, work: Path, upstream: Path | None = None, upstream_label: str = "") -> tuple[dict, Path]:
    """Writes the test package into `work`; returns where each part of it came from and the package folder.
    `upstream`: a tests/ folder of transformers' repository, preferred to the stand-ins."""
    package = work / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        members = [member for member in archive.getmembers() if member.name.startswith(f"{root}/tests/")]
        archive.extractall(work / "sdist", members=members, filter="data")
    tests = work / "sdist" / root / "tests"
    if not (tests / "test_modeling_common.py").exists():
        sys.exit(f"{sdist.name} has no tests/test_modeling_common.py; pass another version's sdist with --sdist.")
    shutil.copy(tests / "test_modeling_common.py", package / "test_modeling_common.py")
    sources = {"test_modeling_common.py": sdist.name}
    for folder, (stand_in, module) in STAND_INS.items():
        for origin, label in ((tests, sdist.name), (upstream, upstream_label)):
            if origin is not None and (origin / folder / module).exists():
                shutil.copytree(origin / folder, package / folder)
                sources[f"{folder}/{module}"] = label
                break
        else:
            (package / folder).mkdir()
            (package / folder / "__init__.py").write_text("")
            shutil.copy(HERE / stand_in, package / folder / module)
            sources[f"{folder}/{module}"] = f"stand-in: tests/transformers_common/{stand_in}"
    for own, name in OWN_MODULES.items():
        shutil.copy(HERE / own, package / name)
        sources[name] = f"tests/transformers_common/{own}"
    # Our own pytest settings, not the project's (whose strict markers the transformers tests would break).
    (work / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return sources, package
