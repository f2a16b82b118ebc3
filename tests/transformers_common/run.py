"""transformers' own common model tests against stock Qwen2 and Qwen3 and the ParScale models built on them,
with passed / failed / skipped side by side: `make transformers-tests` (several minutes on one core).

1. Downloads the installed transformers version's source distribution with pip (once; kept in
   ~/.cache/parscale-toolkit, or $PARSCALE_CACHE_DIR) or takes it from `--sdist`.
2. Assembles a test package `tests` in a temporary directory: the sdist's tests/test_modeling_common.py; its
   tests/generation/ and tests/exporters/ where it has them. 5.x source distributions do not: then they come
   from transformers' repository when one is given (`--transformers-git GITDIR` at `--ref`, default the
   installed version's tag, or `--upstream-tests DIR`, a checkout's tests/ folder; read, never downloaded),
   else from the stand-ins of this folder (generation_mixin.py, export_mixin.py). Beside them go this folder's
   tester (model_tester.py) and one test module per family (qwen2_tests.py, qwen3_tests.py).
3. Runs pytest on it, with the Hub offline (no test may download weights), and writes the report: a table of
   counts per model and family (and of GenerationTesterMixin's tests alone), every test whose outcome differs
   between the models, and why tests were skipped.

    python tests/transformers_common/run.py [--report report.md] [--json outcomes.json] [-k EXPR] [--keep DIR]
        [--transformers-git GITDIR [--ref REF] | --upstream-tests DIR]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script: the sibling modules import as transformers_common.*

from transformers_common.report import markdown_report, read_outcomes  # noqa: E402
from transformers_common.sources import assemble, download_sdist, git_tests  # noqa: E402

REPO = HERE.parents[1]


def run_pytest(work: Path, package: Path, junit: Path, selection: str | None) -> int:
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(work), str(REPO), os.environ.get("PYTHONPATH", "")]),
        "HF_HUB_OFFLINE": "1",  # nothing may download weights; tests that need the Hub skip or fail
        "TOKENIZERS_PARALLELISM": "false",
    }
    test_files = sorted(str(path.relative_to(work)) for path in package.glob("test_*_family.py"))
    command = [sys.executable, "-m", "pytest", *test_files, "-q", "-rN", "--timeout", "900",
               f"--junitxml={junit}", "-c", str(work / "pytest.ini"), "--rootdir", str(work)]  # fmt: skip
    if selection:
        command += ["-k", selection]
    return subprocess.run(command, cwd=work, env=environment).returncode


def parse_arguments(argv):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sdist", type=Path,
                        help="a transformers source distribution (default: download the installed version's)")
    upstream = parser.add_mutually_exclusive_group()
    upstream.add_argument("--transformers-git", type=Path,
                          help="a git directory of transformers' repository: tests/generation and tests/exporters "
                               "are taken from it at --ref")  # fmt: skip
    upstream.add_argument("--upstream-tests", type=Path,
                          help="the tests/ folder of a transformers checkout, used like --transformers-git")
    parser.add_argument("--ref", help="the commit, tag or branch of --transformers-git (default: v<installed version>)")
    parser.add_argument("--report", type=Path, help="write the Markdown report here (it is printed either way)")
    parser.add_argument("--json", type=Path, help="write every test's outcome per model here")
    parser.add_argument("-k", dest="selection", help="pytest -k expression selecting tests or test classes")
    parser.add_argument("--keep", type=Path, help="assemble the test package in this (new) directory and keep it")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_arguments(argv)
    import transformers

    version = transformers.__version__
    sdist = args.sdist or download_sdist(version)
    work = args.keep or Path(tempfile.mkdtemp(prefix="transformers-common-"))
    try:
        upstream, upstream_label = args.upstream_tests, f"{args.upstream_tests}"
        if args.transformers_git:
            upstream, upstream_label = git_tests(args.transformers_git, args.ref or f"v{version}", work / "upstream")
        sources, package = assemble(sdist, work, upstream, upstream_label)
        junit = work / "junit.xml"
        status = run_pytest(work, package, junit, args.selection)
        if not junit.exists():
            sys.exit(f"pytest did not run (exit status {status}); rerun with --keep DIR and look at DIR.")
        outcomes = read_outcomes(junit, package / "generation" / "test_utils.py")
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
