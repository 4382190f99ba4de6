"""The tutorials in ``tutorials/``: the quick start runs top to bottom in a real Jupyter kernel.

Only the quick start runs here: it uses the synthetic data and takes about a minute. The other tutorials need
the her2st data and several minutes of training; they are stored with their outputs and rendered as they are
by the documentation (``nb_execution_mode = "off"``), so this module only checks that they are valid notebooks
with outputs and no errors.
"""

import os
import shutil
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
QUICKSTART = TUTORIALS / "01_quickstart.ipynb"
ALL = sorted(TUTORIALS.glob("*.ipynb"))


def _code_cells(nb):
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _text(nb) -> str:
    """Everything the notebook printed or displayed as text."""
    parts = []
    for cell in _code_cells(nb):
        for output in cell.outputs:
            if output.output_type == "stream":
                parts.append(output.text)
            elif output.output_type in ("execute_result", "display_data"):
                parts.append(output.data.get("text/plain", ""))
    return "\n".join(parts)


def _errors(nb) -> list[str]:
    return [
        f"{output.ename}: {output.evalue}"
        for cell in _code_cells(nb)
        for output in cell.outputs
        if output.output_type == "error"
    ]


def test_the_five_tutorials_exist():
    assert [path.name for path in ALL] == [
        "01_quickstart.ipynb",
        "02_her2st.ipynb",
        "03_he_only_prediction.ipynb",
        "04_squidpy.ipynb",
        "05_spatialdata.ipynb",
    ]


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.stem)
def test_stored_tutorial_is_executed_in_order_without_errors(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    cells = _code_cells(nb)
    counts = [cell.execution_count for cell in cells]
    # run once, top to bottom, in a fresh kernel: execution counts 1, 2, 3, ...
    assert counts == list(range(1, len(cells) + 1)), f"{path.name} was not executed top to bottom: {counts}"
    assert not _errors(nb)


@pytest.mark.slow
def test_quickstart_runs_top_to_bottom(tmp_path, monkeypatch):
    """Execute the quick start in a fresh kernel, in a temporary copy (the stored outputs are not touched)."""
    work = tmp_path / QUICKSTART.name
    shutil.copy(QUICKSTART, work)
    nb = nbformat.read(work, as_version=4)
    for cell in _code_cells(nb):
        cell.outputs = []
        cell.execution_count = None
    # One torch thread: on a machine whose cores are busy with other work (CI, the rest of the suite running in
    # parallel), torch's OpenMP threads oversubscribe the cores and training gets an order of magnitude slower.
    monkeypatch.setenv("OMP_NUM_THREADS", os.environ.get("OMP_NUM_THREADS", "1"))
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    )
    client.execute()  # raises CellExecutionError, with the failing cell and traceback, on any error

    assert not _errors(nb)
    text = _text(nb)
    # the metrics table of sepal.tl.evaluate: the model, the local encoder alone and the mean baseline
    for expected in ("PCC-Gene", "R2-Patch", "sepal ", "sepal_local", "mean_baseline"):
        assert expected in text, f"{expected!r} missing from the notebook's output"
    # every plotting cell drew its figure
    figures = sum(
        "image/jpeg" in output.get("data", {}) or "image/png" in output.get("data", {})
        for cell in _code_cells(nb)
        for output in cell.outputs
    )
    assert figures >= 7
    nbformat.validate(nb)
