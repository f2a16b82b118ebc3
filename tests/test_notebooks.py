"""The notebooks run top to bottom in a real kernel of this interpreter, are stored without outputs, and the
example table they read is what its generator writes."""

import sys
import time
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_reproduce_paper.ipynb", "02_fit_your_sweep.ipynb", "03_inference_cost.ipynb"]
KERNEL = "python3"
# Each notebook should take well under a minute on a CPU; this leaves room for a busy machine.
TIME_LIMIT_S = 120


@pytest.fixture(scope="module", autouse=True)
def kernel_available():
    try:
        KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        pytest.fail(f"no {KERNEL!r} Jupyter kernel; install the dev extra (ipykernel) into this environment")


def run(notebook):
    # jupyter_client launches a kernelspec whose command is "python" with this interpreter (sys.executable).
    NotebookClient(notebook, timeout=TIME_LIMIT_S, kernel_name=KERNEL,
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


def test_the_kernel_is_this_interpreter():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import sys; print(sys.executable)")])
    output = run(notebook).cells[0].outputs[0]["text"].strip()
    assert Path(output).resolve() == Path(sys.executable).resolve()


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    started = time.perf_counter()
    run(notebook)  # raises CellExecutionError, naming the cell, if any cell fails
    assert time.perf_counter() - started < TIME_LIMIT_S
    produced = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert any("image/png" in output.get("data", {}) for output in produced), "no figure was drawn"


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_stored_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: clear outputs before committing"


def test_example_table_is_what_its_generator_writes():
    sys.path.insert(0, str(NOTEBOOKS))
    try:
        from make_example_results import OUTPUT, example_results
    finally:
        sys.path.remove(str(NOTEBOOKS))
    shipped = pd.read_csv(OUTPUT)
    pd.testing.assert_frame_equal(shipped, example_results().reset_index(drop=True), check_dtype=False)
