"""The runner of transformers' common model tests (tests/transformers_common/run.py, `make
transformers-tests`): how it assembles the test package from a source distribution and, for what that lacks,
from transformers' repository or this project's stand-ins, and how it reads and reports pytest's outcomes.
The run itself takes minutes and downloads the sdist; its report is docs/transformers-common-tests.md."""

import io
import subprocess
import tarfile

from transformers_common import report, sources


def fake_sdist(path, with_generation_tests):
    files = {"transformers-9.9.9/tests/test_modeling_common.py": "class ModelTesterMixin: pass\n"}
    if with_generation_tests:
        files["transformers-9.9.9/tests/generation/test_utils.py"] = "class GenerationTesterMixin: pass\n"
        files["transformers-9.9.9/tests/generation/__init__.py"] = ""
    with tarfile.open(path, "w:gz") as archive:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


UPSTREAM_TEST_UTILS = """class GenerationTesterMixin:
    def test_greedy_generate(self): pass
    @parameterized.expand([("a",), ("b",)])
    def test_beam_search_generate(self, case): pass
    def helper(self): pass
"""


def fake_transformers_repository(path):
    """A bare-enough git repository: tests/generation/ and the version line of src/transformers/__init__.py."""
    (path / "tests" / "generation").mkdir(parents=True)
    (path / "tests" / "generation" / "test_utils.py").write_text(UPSTREAM_TEST_UTILS)
    (path / "src" / "transformers").mkdir(parents=True)
    (path / "src" / "transformers" / "__init__.py").write_text('__version__ = "9.9.9"\n')
    for command in (["init", "-q"], ["add", "."], ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
                    ["tag", "v9.9.9"]):  # fmt: skip
        subprocess.run(["git", "-C", str(path), *command], check=True)
    return path / ".git"


def test_stand_ins_fill_in_only_what_the_sdist_lacks(tmp_path):
    found, package = sources.assemble(fake_sdist(tmp_path / "a.tar.gz", with_generation_tests=True), tmp_path / "work")
    assert package == tmp_path / "work" / sources.PACKAGE
    assert (package / "generation" / "test_utils.py").read_text() == "class GenerationTesterMixin: pass\n"
    assert found["generation/test_utils.py"] == "a.tar.gz"
    assert found["exporters/test_export.py"].startswith("stand-in")
    assert "class ExportTesterMixin" in (package / "exporters" / "test_export.py").read_text()
    for own, name in sources.OWN_MODULES.items():
        assert (package / name).read_text() == (sources.HERE / own).read_text()

    _, other = sources.assemble(fake_sdist(tmp_path / "b.tar.gz", with_generation_tests=False), tmp_path / "other")
    assert (other / "generation" / "test_utils.py").read_text() == (sources.HERE / "generation_mixin.py").read_text()


def test_the_repository_replaces_the_stand_ins_at_the_requested_tag(tmp_path):
    git_dir = fake_transformers_repository(tmp_path / "transformers")
    tests, label = sources.git_tests(git_dir, "v9.9.9", tmp_path / "upstream")
    assert label.startswith("transformers' repository at v9.9.9 (commit ") and label.endswith(", version 9.9.9)")
    sdist = fake_sdist(tmp_path / "a.tar.gz", with_generation_tests=False)
    found, package = sources.assemble(sdist, tmp_path / "work", tests, label)
    assert (package / "generation" / "test_utils.py").read_text() == UPSTREAM_TEST_UTILS
    assert found["generation/test_utils.py"] == label
    assert found["exporters/test_export.py"].startswith("stand-in")  # the repository has no tests/exporters
    assert report.generation_tests(package / "generation" / "test_utils.py") == {
        "test_greedy_generate", "test_beam_search_generate"}  # fmt: skip


JUNIT = """<testsuites><testsuite>
<testcase classname="tests.test_qwen2_family.StockQwen2Test" name="test_a"/>
<testcase classname="tests.test_qwen2_family.ParScaleP1Test" name="test_a"/>
<testcase classname="tests.test_qwen3_family.ParScaleLMQwen3P2Test" name="test_a">
  <failure message="AssertionError: 4 != 2">long traceback</failure></testcase>
<testcase classname="tests.test_qwen2_family.StockQwen2Test" name="test_greedy_generate_0_x">
  <skipped message="test requires CUDA"/></testcase>
<testcase classname="tests.test_qwen2_family.ParScaleP1Test" name="test_greedy_generate_0_x">
  <skipped message="test requires CUDA"/></testcase>
<testcase classname="tests.test_qwen3_family.ParScaleLMQwen3P2Test" name="test_greedy_generate_0_x">
  <skipped message="test requires CUDA"/></testcase>
</testsuite></testsuites>"""


def test_report_counts_each_model_per_family_and_lists_the_differing_tests(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    (tmp_path / "test_utils.py").write_text(UPSTREAM_TEST_UTILS)
    outcomes = report.read_outcomes(tmp_path / "junit.xml", tmp_path / "test_utils.py")
    assert outcomes["test_a"]["Qwen3 ParScaleForCausalLM P = 2"] == {
        "outcome": "failed", "detail": "AssertionError: 4 != 2", "generation": False}  # fmt: skip
    assert outcomes["test_greedy_generate_0_x"]["Qwen2 stock"]["generation"]
    text = report.markdown_report(outcomes, {"test_modeling_common.py": "x.tar.gz"}, "9.9.9")
    all_tests, generation_tests = text.split("Of which GenerationTesterMixin's:")
    assert "| stock | 1 / 0 / 1 | - |" in all_tests
    assert "| ParScaleForCausalLM P = 2 | - | 0 / 1 / 1 |" in all_tests
    assert "| ParScaleForCausalLM P = 2 | - | 0 / 0 / 1 |" in generation_tests
    assert "| test_a | passed | passed | failed: AssertionError: 4 != 2 |" in text
    assert "test_greedy_generate_0_x |" not in text  # the same outcome for all three
    assert "3 x test requires CUDA" in text
