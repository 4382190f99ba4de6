"""Hostile command lines: bad values fail before step 1 with exit code 2 and one line naming the key; outputs are
written atomically under a lock, with the report last; internal failures exit 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_cli import TINY_RUN

from sepal_tl._atomic import LOCK_NAME, FolderLock
from sepal_tl._cli import main
from sepal_tl._cli._output import INCOMPLETE, output_folder, write_h5ad

CONFIG = TINY_RUN


def _config(tmp_path: Path, text: str | None = None) -> Path:
    path = tmp_path / "run.toml"
    path.write_text(textwrap.dedent(text if text is not None else CONFIG.format(out=tmp_path / "out")))
    return path


def _option(old: str, new: str):
    return lambda text: text.replace(old, new)


def _model_option(option: str):
    return _option("hidden = [16] }", f"hidden = [16], {option} }}")


BAD_RUN_CONFIGS = [
    # data
    (_option("n_slides = 3", "n_slides = 0"), "data.n_slides"),
    (_option("seed = 1", "seed = -1"), "data.seed"),
    (_option("n_slides = 3", "n_slides = 2"), "slide2"),
    (_option("n_slides = 3", "n_slides = true"), "data.n_slides"),
    (_option("n_slides = 3", 'n_slides = "3"'), "data.n_slides"),
    # split
    (_option('test = ["slide2"]', 'test = ["slide9"]'), "slide9"),
    (_option('test = ["slide2"]', "test = []"), "slide2"),
    (_option('train = ["slide0"]', "train = []"), "split.train"),
    (_option('val = ["slide1"]', 'val = ["slide0"]'), "one split only"),
    # preprocess
    (_option('preset = "synthetic"', 'preset = "xenium"'), "preprocess.preset"),
    (_option("n_top = 12", "n_top = 0"), "n_top"),
    (_option("n_top = 12", 'n_top = "12"'), "n_top"),
    (_option("n_top = 12", "n_top = 1.5"), "n_top"),
    (_option("n_top = 12", "n_top = 12, min_counts_spot = -1"), "min_counts_spot"),
    (_option("n_top = 12", 'n_top = 12, min_counts_spot = "100"'), "min_counts_spot"),
    (_option("n_top = 12", "n_top = 12, min_counts_spot = true"), "min_counts_spot"),
    (_option("n_top = 12", "n_top = 12, min_frac_slide = 1.5"), "min_frac_slide"),
    (_option("n_top = 12", "n_top = 12, min_frac_global = -0.1"), "min_frac_global"),
    (_option("n_top = 12", "n_top = 12, min_counts_gene = 10, max_counts_gene = 5"), "min_counts_gene"),
    (_option('combat_key = "none"', "combat_key = 3"), "combat_key"),
    (_option("n_top = 12", "ntop = 12"), "ntop"),
    # model
    (_option("encoder_epochs = 1", "encoder_epochs = 0"), "epochs"),
    (_option("encoder_epochs = 1", 'encoder_epochs = "1"'), "epochs"),
    (_option("encoder_epochs = 1", "encoder_epochs = 1.5"), "epochs"),
    (_option("spatial_epochs = 2", "spatial_epochs = -2"), "epochs"),
    (_option("encoder_epochs = 1", "encoder_epoch = 1"), "encoder_epoch"),
    (_model_option("spatial_lr = 0"), "lr"),
    (_model_option("encoder_lr = -0.1"), "lr"),
    (_model_option('encoder_lr = "fast"'), "lr"),
    (_model_option("encoder_batch_size = 0"), "batch_size"),
    (_model_option("spatial_batch_size = 2.5"), "batch_size"),
    (_model_option("spatial_weight_decay = -1"), "weight_decay"),
    (_model_option("encoder_patience = -1"), "patience"),
    (_option("hidden = [16]", "hidden = []"), "hidden"),
    (_option("hidden = [16]", "hidden = [0]"), "hidden"),
    (_option("hidden = [16]", 'hidden = ["16"]'), "hidden"),
    (_option("hidden = [16]", "hidden = 16"), "hidden"),
    (_model_option("pre = [-1]"), "pre"),
    (_model_option("n_hops = 4"), "n_hops"),
    (_model_option("n_hops = true"), "n_hops"),
    (_model_option('operator = "FooConv"'), "operator"),
    (_model_option('pooling = "max"'), "pooling"),
    (_model_option('aggregation = "avg"'), "aggregation"),
    (_model_option('target = "Delta"'), "target"),
    (_model_option('loss = "l1"'), "loss"),
    (_model_option('geometry = "hexagon"'), "geometry"),
    (_option("patch_size = 32", "patch_size = 0"), "patch_size"),
    (_model_option("patch_scale = 0"), "patch_scale"),
    (_model_option("random_state = -1"), "random_state"),
    (_model_option("num_workers = -1"), "num_workers"),
    (_option('device = "cpu"', 'device = "gpu"'), "device"),
    (_option('device = "cpu"', "device = 3"), "device"),
    (_option('device = "cpu"', 'device = "cuda:x"'), "device"),
    (_option('preset = "cpu"', 'preset = "tiny"'), "preset"),
    # output
    (_option("genes_to_plot = 1", "genes_to_plot = -1"), "genes_to_plot"),
    (_option("genes_to_plot = 1", 'genes_to_plot = "1"'), "genes_to_plot"),
    (_option("[output]", "[output]\ncolour = 'red'"), "output.colour"),
]


@pytest.mark.parametrize(("edit", "key"), BAD_RUN_CONFIGS)
def test_bad_run_values_exit_2_before_any_work(tmp_path, capsys, edit, key):
    path = _config(tmp_path, edit(CONFIG.format(out=tmp_path / "out")))
    assert main(["run", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert key in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing was created


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_refused_before_work(tmp_path, capsys, device):
    path = _config(tmp_path, CONFIG.format(out=tmp_path / "out").replace('device = "cpu"', f'device = "{device}"'))
    assert main(["run", str(path)]) == 2
    assert "CUDA is not available" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_output_folder_that_is_a_file(tmp_path, capsys):
    (tmp_path / "out").write_text("precious")
    assert main(["run", str(_config(tmp_path))]) == 2
    assert "output.dir" in capsys.readouterr().err
    assert (tmp_path / "out").read_text() == "precious"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions and a non-root user")
def test_output_folder_that_is_not_writable(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        text = CONFIG.format(out=locked / "out")
        assert main(["run", str(_config(tmp_path, text))]) == 2
        assert "not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o700)


def test_model_folder_with_foreign_files_is_refused_before_work(tmp_path, capsys):
    (tmp_path / "out" / "model").mkdir(parents=True)
    (tmp_path / "out" / "model" / "notes.txt").write_text("precious")
    assert main(["run", str(_config(tmp_path))]) == 2
    assert "not part of a saved model" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model"]


def test_missing_config_and_invalid_toml(tmp_path, capsys):
    assert main(["run", str(tmp_path / "missing.toml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", str(_config(tmp_path, "[data\nreader = "))]) == 2
    assert "not valid TOML" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- locking


_HOLD_LOCK = """
import sys, time
from sepal_tl._atomic import FolderLock
lock = FolderLock(sys.argv[1])
lock.acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _holder(folder: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_second_run_into_a_locked_folder_exits_2_and_touches_nothing(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("the other run's report")
    proc = _holder(out)
    try:
        assert main(["run", str(_config(tmp_path))]) == 2
        err = capsys.readouterr().err
        assert "is in use by process" in err and str(proc.pid) in err
        assert (out / "report.md").read_text() == "the other run's report"
        assert not (out / INCOMPLETE).exists()
    finally:
        proc.kill()
        proc.wait()


def test_lock_of_a_killed_run_does_not_block_the_next(tmp_path):
    proc = _holder(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (tmp_path / LOCK_NAME).exists()  # the file is left behind, the OS lock is gone
    with FolderLock(tmp_path):
        pass
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_is_exclusive_within_one_process(tmp_path):
    from sepal_tl._atomic import FolderLockedError

    with FolderLock(tmp_path), pytest.raises(FolderLockedError, match="in use"):
        FolderLock(tmp_path).acquire()


# ---------------------------------------------------------------------------------------------- interruptions


_KILLED_DURING_FINAL_SAVE = """
import os, signal, sys
import anndata as ad, numpy as np
from sepal_tl._cli._output import output_folder, write_h5ad
out = sys.argv[1]
with output_folder(out):
    write_h5ad(ad.AnnData(np.ones((3, 2), dtype=np.float32)), __import__("pathlib").Path(out) / "processed.h5ad")
    os.kill(os.getpid(), signal.SIGKILL)  # Ctrl-C / kill before the report is written
"""


def test_run_killed_before_the_report_leaves_a_marker_and_no_stale_report(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.md").write_text("report of the previous run")
    result = subprocess.run([sys.executable, "-c", _KILLED_DURING_FINAL_SAVE, str(out)], timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert not (out / "report.md").exists()  # never a report describing other files
    assert "has not finished" in (out / INCOMPLETE).read_text()
    from anndata import read_h5ad

    assert read_h5ad(out / "processed.h5ad").shape == (3, 2)  # each file is whole
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]


_KILLED_DURING_WRITE = """
import os, signal, sys
import anndata as ad, numpy as np
from sepal_tl._atomic import atomic_path
path = sys.argv[1]
with atomic_path(path) as tmp:
    ad.AnnData(np.zeros((50, 4), dtype=np.float32)).write_h5ad(tmp)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def test_write_killed_midway_leaves_the_old_file(tmp_path):
    import anndata as ad

    path = tmp_path / "processed.h5ad"
    ad.AnnData(np.ones((3, 2), dtype=np.float32)).write_h5ad(path)
    before = path.read_bytes()
    result = subprocess.run([sys.executable, "-c", _KILLED_DURING_WRITE, str(path)], timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert path.read_bytes() == before
    assert ad.read_h5ad(path).shape == (3, 2)


def test_failed_block_keeps_marker_and_success_removes_it(tmp_path):
    import anndata as ad

    with pytest.raises(RuntimeError), output_folder(tmp_path):
        raise RuntimeError("boom")
    assert (tmp_path / INCOMPLETE).exists() and not (tmp_path / LOCK_NAME).exists()
    with output_folder(tmp_path) as out:
        write_h5ad(ad.AnnData(np.ones((2, 2), dtype=np.float32)), out / "x.h5ad")
    assert not (tmp_path / INCOMPLETE).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5ad"]


# ------------------------------------------------------------------------------------------------- exit codes


@pytest.fixture
def fast_pipeline(monkeypatch):
    """``sepal run`` with a tiny dataset whose pipeline raises what the test asks for."""

    def install(error: BaseException):
        import sepal_tl._cli._pipeline as pipeline

        def run_pipeline(adata, **kwargs):
            raise error

        monkeypatch.setattr(pipeline, "run_pipeline", run_pipeline)
        monkeypatch.setattr("sepal_tl._cli._data.load_data", lambda data: _tiny_synthetic())

    return install


def _tiny_synthetic():
    import sepal_tl as sepal

    return sepal.datasets.synthetic(n_slides=3, n_spots=20, n_genes=20, random_state=0)


@pytest.mark.parametrize(
    ("error", "code", "text"),
    [
        (RuntimeError("numba exploded"), 1, "internal error (RuntimeError: numba exploded)"),
        (AttributeError("no such thing"), 1, "internal error (AttributeError"),
        (IndexError("index 9 is out of bounds"), 1, "internal error (IndexError"),
        (ValueError("n_top=500 is larger than the 300 genes left"), 2, "error: n_top=500"),
        (KeyError("layer 'x' is missing"), 2, "error: layer 'x' is missing"),
        (FileNotFoundError("image.tif not found"), 2, "error: image.tif not found"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_exit_codes_user_vs_internal(tmp_path, capsys, fast_pipeline, error, code, text):
    fast_pipeline(error)
    assert main(["run", str(_config(tmp_path))]) == code
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err
    assert (tmp_path / "out" / INCOMPLETE).exists()  # the failed run is marked


def test_debug_shows_the_traceback(tmp_path, capsys, fast_pipeline):
    fast_pipeline(RuntimeError("numba exploded"))
    assert main(["--debug", "run", str(_config(tmp_path))]) == 1
    assert "Traceback" in capsys.readouterr().err
    fast_pipeline(ValueError("bad"))
    assert main(["run", "--debug", str(_config(tmp_path))]) == 2
    assert "Traceback" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from test_hostile_model_files import tiny_model

    path = tmp_path_factory.mktemp("cli") / "model"
    tiny_model().save(path)
    return path


@pytest.fixture(scope="module")
def he_png(tmp_path_factory) -> Path:
    yy, xx = np.mgrid[:200, :200]
    image = np.full((200, 200, 3), 245, dtype=np.uint8)
    image[(yy - 100) ** 2 + (xx - 100) ** 2 < 80**2] = (200, 120, 170)
    path = tmp_path_factory.mktemp("he") / "he.png"
    Image.fromarray(image).save(path)
    return path


BAD_PREDICT_ARGS = [
    (["--genes", "-1"], "--genes"),
    (["--genes", "two"], "--genes"),
    (["--spot-diameter", "0"], "--spot-diameter"),
    (["--spot-diameter", "-5"], "--spot-diameter"),
    (["--spot-diameter", "nan"], "--spot-diameter"),
    (["--spot-diameter", "inf"], "--spot-diameter"),
    (["--spot-diameter", "abc"], "--spot-diameter"),
    (["--pitch", "0"], "--pitch"),
    (["--pitch", "-3"], "--pitch"),
    (["--geometry", "hexagon"], "--geometry"),
]


@pytest.mark.parametrize(("args", "name"), BAD_PREDICT_ARGS)
def test_bad_predict_arguments_exit_2(tmp_path, capsys, model_dir, he_png, args, name):
    base = [str(model_dir), str(he_png), "--spot-diameter", "10", "--out", str(tmp_path / "pred")]
    with pytest.raises(SystemExit) as info:
        main(["predict", *base, *args])
    assert info.value.code == 2
    assert name in capsys.readouterr().err
    assert not (tmp_path / "pred").exists()


def _truncated_png(tmp_path, he_png):
    path = tmp_path / "cut.png"
    path.write_bytes(he_png.read_bytes()[:200])
    return path


def _text_as_tif(tmp_path, he_png):
    path = tmp_path / "notes.tif"
    path.write_text("not an image")
    return path


def _corrupt_model(tmp_path, model_dir):
    import shutil

    path = Path(shutil.copytree(model_dir, tmp_path / "bad_model"))
    (path / "config.json").write_text("{")
    return path


BAD_PREDICT_INPUTS = [
    (lambda t, m, h: (m, t / "missing.png", []), "does not exist"),
    (lambda t, m, h: (m, _truncated_png(t, h), []), "cut.png"),
    (lambda t, m, h: (m, _text_as_tif(t, h), []), "notes.tif"),
    (lambda t, m, h: (t / "no_model", h, []), "no_model"),
    (lambda t, m, h: (_corrupt_model(t, m), h, []), "not valid JSON"),
    (lambda t, m, h: (m, h, ["--library-id", "a b"]), "library_id"),
    (lambda t, m, h: (m, h, ["--device", "gpu"]), "--device"),
    (lambda t, m, h: (h, h, []), "is a file"),
]


@pytest.mark.parametrize(("build", "text"), BAD_PREDICT_INPUTS)
def test_bad_predict_inputs_exit_2_before_any_output(tmp_path, capsys, model_dir, he_png, build, text):
    model, image, extra = build(tmp_path, model_dir, he_png)
    out = tmp_path / "pred"
    assert main(["predict", str(model), str(image), "--spot-diameter", "10", "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and len(err.splitlines()) == 1
    assert not (out / "predicted.h5ad").exists() and not (out / INCOMPLETE).exists()


def test_predict_output_is_a_file(tmp_path, capsys, model_dir, he_png):
    (tmp_path / "pred").write_text("precious")
    code = main(["predict", str(model_dir), str(he_png), "--spot-diameter", "10", "--out", str(tmp_path / "pred")])
    assert code == 2 and "--out" in capsys.readouterr().err
    assert (tmp_path / "pred").read_text() == "precious"


def test_config_json_is_not_rewritten_by_a_failed_predict(tmp_path, model_dir, he_png):
    before = json.loads((model_dir / "config.json").read_text())
    main(["predict", str(model_dir), str(he_png), "--spot-diameter", "10", "--device", "gpu", "--out", str(tmp_path)])
    assert json.loads((model_dir / "config.json").read_text()) == before
