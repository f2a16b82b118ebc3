"""The runner of transformers' common model tests (tests/transformers_common/run.py, `make
transformers-tests`): how it assembles the test package from a source distribution, and how it reads and
reports pytest's outcomes. The run itself takes minutes and downloads the sdist; its report is in docs/model.md."""

import io
import tarfile

from transformers_common import run


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


def test_stand_ins_fill_in_only_what_the_sdist_lacks(tmp_path):
    sources = run.assemble(fake_sdist(tmp_path / "a.tar.gz", with_generation_tests=True), tmp_path / "work")
    package = tmp_path / "work" / run.PACKAGE
    assert (package / "generation" / "test_utils.py").read_text() == "class GenerationTesterMixin: pass\n"
    assert sources["generation/test_utils.py"] == "a.tar.gz"
    assert sources["exporters/test_export.py"].startswith("stand-in")
    assert "class ExportTesterMixin" in (package / "exporters" / "test_export.py").read_text()
    assert (package / run.TEST_FILE).read_text() == (run.HERE / "qwen2_tester.py").read_text()

    run.assemble(fake_sdist(tmp_path / "b.tar.gz", with_generation_tests=False), tmp_path / "other")
    stand_in = (tmp_path / "other" / run.PACKAGE / "generation" / "test_utils.py").read_text()
    assert stand_in == (run.HERE / "generation_mixin.py").read_text()


JUNIT = """<testsuites><testsuite>
<testcase classname="transformers_tests.test_qwen2_parscale.StockQwen2Test" name="test_a"/>
<testcase classname="transformers_tests.test_qwen2_parscale.ParScaleP1Test" name="test_a"/>
<testcase classname="transformers_tests.test_qwen2_parscale.ParScaleP2Test" name="test_a">
  <failure message="AssertionError: 4 != 2">long traceback</failure></testcase>
<testcase classname="transformers_tests.test_qwen2_parscale.StockQwen2Test" name="test_b">
  <skipped message="test requires CUDA"/></testcase>
<testcase classname="transformers_tests.test_qwen2_parscale.ParScaleP1Test" name="test_b">
  <skipped message="test requires CUDA"/></testcase>
<testcase classname="transformers_tests.test_qwen2_parscale.ParScaleP2Test" name="test_b">
  <skipped message="test requires CUDA"/></testcase>
</testsuite></testsuites>"""


def test_report_counts_each_model_and_lists_the_differing_tests(tmp_path):
    (tmp_path / "junit.xml").write_text(JUNIT)
    outcomes = run.read_outcomes(tmp_path / "junit.xml")
    assert outcomes["test_a"]["ParScale P = 2"] == {"outcome": "failed", "detail": "AssertionError: 4 != 2"}
    report = run.markdown_report(outcomes, {"test_modeling_common.py": "x.tar.gz"}, "9.9.9")
    assert "| Qwen2 | 1 | 0 | 1 |" in report and "| ParScale P = 2 | 0 | 1 | 1 |" in report
    assert "| test_a | passed | passed | failed: AssertionError: 4 != 2 |" in report
    assert "test_b |" not in report  # the same outcome for all three
    assert "3 x test requires CUDA" in report
