"""transformers' own common model tests against stock Qwen2 and the ParScale model at P = 1 and P = 2, with
passed / failed / skipped side by side: `make transformers-tests` (a few minutes on one core).

1. Downloads the installed transformers version's source distribution with pip (once; kept in
   ~/.cache/parscale-toolkit, or $PARSCALE_CACHE_DIR) or takes it from `--sdist`.
2. Assembles a test package in a temporary directory: the sdist's tests/test_modeling_common.py, its
   tests/generation/ and tests/exporters/ where it has them (5.x source distributions do not: then the
   stand-ins of this folder, generation_mixin.py and export_mixin.py), and this folder's Qwen2 tester
   (qwen2_tester.py), whose three test classes run every test on Qwen2, ParScale P = 1 and P = 2.
3. Runs pytest on it, with the Hub offline (no test may download weights), and writes the report:
   a table of counts, every test whose outcome differs between the three, and why tests were skipped.

    python tests/transformers_common/run.py [--report report.md] [--json outcomes.json] [-k EXPR] [--keep DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PACKAGE = "transformers_tests"
TEST_FILE = "test_qwen2_parscale.py"
CLASSES = {"StockQwen2Test": "Qwen2", "ParScaleP1Test": "ParScale P = 1", "ParScaleP2Test": "ParScale P = 2"}
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
            "download transformers-{version}.tar.gz from PyPI yourself and pass it with --sdist."
        )
    return found[0]


def assemble(sdist: Path, work: Path) -> dict[str, str]:
    """Writes the test package into `work`; returns where each part of it came from."""
    package = work / PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    sources = {}
    with tarfile.open(sdist) as archive:
        root = archive.getnames()[0].split("/")[0]
        members = [member for member in archive.getmembers() if member.name.startswith(f"{root}/tests/")]
        archive.extractall(work / "sdist", members=members, filter="data")
    tests = work / "sdist" / root / "tests"
    if not (tests / "test_modeling_common.py").exists():
        sys.exit(f"{sdist.name} has no tests/test_modeling_common.py; pass another version's sdist with --sdist.")
    shutil.copy(tests / "test_modeling_common.py", package / "test_modeling_common.py")
    sources["test_modeling_common.py"] = f"{sdist.name}"
    for folder, (stand_in, module) in STAND_INS.items():
        if (tests / folder / module).exists():
            shutil.copytree(tests / folder, package / folder)
            sources[f"{folder}/{module}"] = f"{sdist.name}"
        else:
            (package / folder).mkdir()
            (package / folder / "__init__.py").write_text("")
            shutil.copy(HERE / stand_in, package / folder / module)
            sources[f"{folder}/{module}"] = f"stand-in: tests/transformers_common/{stand_in}"
    shutil.copy(HERE / "qwen2_tester.py", package / TEST_FILE)
    sources[TEST_FILE] = "tests/transformers_common/qwen2_tester.py"
    # Our own pytest settings, not the project's (whose strict markers the transformers tests would break).
    (work / "pytest.ini").write_text("[pytest]\naddopts = -p no:cacheprovider\n")
    return sources


def run_pytest(work: Path, junit: Path, selection: str | None) -> int:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(work), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",  # nothing may download weights; tests that need the Hub skip or fail
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, "-m", "pytest", f"{PACKAGE}/{TEST_FILE}", "-q", "-rN", "--timeout", "900",
               f"--junitxml={junit}", "-c", str(work / "pytest.ini"), "--rootdir", str(work)]  # fmt: skip
    if selection:
        command += ["-k", selection]
    return subprocess.run(command, cwd=work, env=environment).returncode


def read_outcomes(junit: Path) -> dict[str, dict[str, dict]]:
    """{test name: {class label: {"outcome": passed|failed|skipped, "detail": first line of the reason}}}."""
    outcomes: dict[str, dict[str, dict]] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        label = CLASSES.get(case.get("classname", "").rsplit(".", 1)[-1])
        if label is None:
            continue
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, detail = "failed", (child.get("message") or child.text or "").strip()
            elif child.tag == "skipped":
                outcome, detail = "skipped", (child.get("message") or "").strip()
        outcomes.setdefault(case.get("name"), {})[label] = {"outcome": outcome,
                                                            "detail": detail.splitlines()[0][:200] if detail else ""}
    return outcomes


def markdown_report(outcomes, sources, version) -> str:
    labels = list(CLASSES.values())
    counts = {label: Counter(result[label]["outcome"] for result in outcomes.values() if label in result)
              for label in labels}
    lines = [f"transformers {version} common model tests (sources: "
             + "; ".join(f"{k} from {v}" for k, v in sources.items()) + ")", ""]
    lines += ["| model | passed | failed | skipped |", "|---|---|---|---|"]
    lines += [f"| {label} | {counts[label]['passed']} | {counts[label]['failed']} | {counts[label]['skipped']} |"
              for label in labels]
    differing = {name: result for name, result in sorted(outcomes.items())
                 if len({r["outcome"] for r in result.values()}) > 1}
    lines += ["", "Tests whose outcome differs between the three:", "", "| test | " + " | ".join(labels) + " |",
              "|---|" + "---|" * len(labels)]
    for name, result in differing.items():
        cells = []
        for label in labels:
            entry = result.get(label, {"outcome": "-", "detail": ""})
            detail = f": {entry['detail']}" if entry["outcome"] == "failed" and entry["detail"] else ""
            cells.append((entry["outcome"] + detail).replace("|", "\\|"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    failing_everywhere = [name for name, result in sorted(outcomes.items())
                          if all(r["outcome"] == "failed" for r in result.values())]
    if failing_everywhere:
        lines += ["", "Failing for all three: " + ", ".join(failing_everywhere)]
    reasons = Counter(r["detail"] for result in outcomes.values() for r in result.values() if r["outcome"] == "skipped")
    lines += ["", "Skip reasons (tests x models):", ""] + [
        f"- {count} x {reason or '(none given)'}" for reason, count in reasons.most_common()
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdist", type=Path,
                        help="a transformers source distribution (default: download the installed version's)")
    parser.add_argument("--report", type=Path, help="write the Markdown report here (it is printed either way)")
    parser.add_argument("--json", type=Path, help="write every test's outcome per model here")
    parser.add_argument("-k", dest="selection", help="pytest -k expression selecting tests")
    parser.add_argument("--keep", type=Path, help="assemble the test package in this (new) directory and keep it")
    args = parser.parse_args(argv)

    import transformers

    version = transformers.__version__
    sdist = args.sdist or download_sdist(version)
    work = args.keep or Path(tempfile.mkdtemp(prefix="transformers-common-"))
    try:
        sources = assemble(sdist, work)
        junit = work / "junit.xml"
        status = run_pytest(work, junit, args.selection)
        if not junit.exists():
            sys.exit(f"pytest did not run (exit status {status}); rerun with --keep DIR and look at DIR.")
        outcomes = read_outcomes(junit)
        if not outcomes:
            sys.exit(f"pytest collected no test (exit status {status}); rerun with --keep DIR to see why.")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)
    report = markdown_report(outcomes, sources, version)
    print(report)
    if args.report:
        args.report.write_text(report)
    if args.json:
        args.json.write_text(json.dumps(outcomes, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
