"""The tutorials in ``tutorials/``: the quick start runs top to bottom in a real Jupyter kernel.

Only the quick start runs here: it uses the synthetic data and takes about a minute. The other tutorials need
the her2st data and several minutes of training; they are stored with their outputs and rendered as they are
by the documentation (``nb_execution_mode = "off"``), so this module only checks that they are valid notebooks
with outputs and no errors, and that they run anywhere and read well: data only through ``sepal.datasets``
(its download cache), code lines that fit the page, and PNG figures sharp enough for a high-resolution screen,
each with alt text.
"""

import ast
import base64
import os
import re
import shutil
import struct
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


MAX_LINE = 88  # the documentation's code blocks show 88 characters without scrolling
MIN_DPI = 150
# Calls that read files: a tutorial reads data only through sepal.datasets, which downloads into its own cache.
READERS = re.compile(r"^(open|imread|read|read_[a-z0-9_]+|load_[a-z0-9_]+|loadtxt|genfromtxt)$")


def _source(cell) -> str:
    """A code cell's Python, with IPython magics and shell escapes (``%...``, ``!...``) blanked out."""
    return "\n".join("" if line.lstrip().startswith(("%", "!")) else line for line in cell.source.splitlines())


def _path_problems(source: str) -> list[str]:
    """Paths and file reads in one cell's code that bypass ``sepal.datasets``."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if re.match(r"^(/|~|\.\.?/|[A-Za-z]:\\)", text) or "../" in text or "shared/data" in text:
                problems.append(f"path string {text!r}")
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if READERS.match(name):
                problems.append(f"file read {name}(...)")
            problems += [f"{name}(path=...)" for kw in node.keywords if kw.arg == "path"]
    return problems


def _png_dpi(data: str) -> float | None:
    """Horizontal resolution recorded in a base64 PNG's pHYs chunk (dots per inch), ``None`` without one."""
    raw = base64.b64decode(data)
    at = raw.find(b"pHYs")
    if at < 0:
        return None
    per_unit, _, unit = struct.unpack(">IIB", raw[at + 4 : at + 13])
    return per_unit * 0.0254 if unit == 1 else None


def _figure_problems(cell) -> list[str]:
    """Figures of one cell that are not PNG at MIN_DPI or that lack alt text in the cell's myst-nb metadata."""
    problems = []
    images = [
        output.data for output in cell.outputs if "data" in output and any(k.startswith("image/") for k in output.data)
    ]
    if not images:
        return problems
    alt = cell.metadata.get("mystnb", {}).get("image", {}).get("alt", "")
    if len(alt.split()) < 8:
        problems.append(f"alt text {alt!r} (write what the figure shows, in at least 8 words)")
    for data in images:
        formats = sorted(k for k in data if k.startswith("image/"))
        if formats != ["image/png"]:
            problems.append(f"image formats {formats}, not PNG")
            continue
        dpi = _png_dpi(data["image/png"])
        if dpi is None or dpi < MIN_DPI - 1:
            problems.append(f"PNG at {dpi} dpi, below {MIN_DPI}")
    return problems


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


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.stem)
def test_tutorial_reads_data_only_through_sepal_datasets(path):
    nb = nbformat.read(path, as_version=4)
    problems = {
        i: found
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (found := _path_problems(_source(cell)))
    }
    assert not problems, f"{path.name} reads data outside sepal.datasets (cell index: problems): {problems}"


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.stem)
def test_tutorial_code_fits_the_page_without_setup_boilerplate(path):
    nb = nbformat.read(path, as_version=4)
    long_lines = [line for cell in _code_cells(nb) for line in cell.source.splitlines() if len(line) > MAX_LINE]
    assert not long_lines, f"{path.name}: {len(long_lines)} code lines over {MAX_LINE} characters: {long_lines}"
    code = "\n".join(cell.source for cell in _code_cells(nb))
    assert "filterwarnings" not in code, f"{path.name} hides warnings; fix them at their source or let them show"


@pytest.mark.parametrize("path", ALL, ids=lambda path: path.stem)
def test_tutorial_figures_are_sharp_png_with_alt_text(path):
    nb = nbformat.read(path, as_version=4)
    problems = {
        i: found for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and (found := _figure_problems(cell))
    }
    assert not problems, f"{path.name} (cell index: problems): {problems}"


def test_the_checks_catch_what_they_are_for():
    """The helpers above flag a local data path, a file read, a path= argument and a low-resolution figure."""
    assert _path_problems('adata = sepal.datasets.her2st(["C2"])') == []
    assert _path_problems('x = sepal.datasets.her2st("C2", path=HER2ST)') == ["her2st(path=...)"]
    assert _path_problems('HER2ST = Path("../../shared/data/her2st")') == ["path string '../../shared/data/her2st'"]
    assert _path_problems('a = sc.read_h5ad("data.h5ad")') == ["file read read_h5ad(...)"]
    assert sorted(_path_problems('w = open("/etc/hosts").read()')) == [
        "file read open(...)",
        "file read read(...)",
        "path string '/etc/hosts'",
    ]
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(1, 1))
    pngs = {}
    for dpi in (80, 150):
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=dpi)
        pngs[dpi] = base64.b64encode(buffer.getvalue()).decode()
    plt.close(fig)
    assert round(_png_dpi(pngs[80])) == 80 and round(_png_dpi(pngs[150])) == 150
    cell = nbformat.v4.new_code_cell("plot()")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"image/png": pngs[80]})]
    assert _figure_problems(cell) == [
        "alt text '' (write what the figure shows, in at least 8 words)",
        f"PNG at {_png_dpi(pngs[80])} dpi, below {MIN_DPI}",
    ]
    cell.metadata["mystnb"] = {"image": {"alt": "A blank white square, drawn only to test this check."}}
    cell.outputs[0]["data"] = {"image/png": pngs[150]}
    assert _figure_problems(cell) == []


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
    assert figures >= 6
    nbformat.validate(nb)
