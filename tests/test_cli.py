"""The ``sepal`` command line: configuration errors fail fast; a tiny ``sepal run`` and ``sepal predict`` work."""

import textwrap

import numpy as np
import pytest
from anndata import read_h5ad
from PIL import Image

import sepal_tl as sepal
from sepal_tl._cli import main
from sepal_tl._cli._config import ConfigError, load_config

TINY_RUN = """
[data]
reader = "synthetic"
n_slides = 3
seed = 1

[split]
train = ["slide0"]
val = ["slide1"]
test = ["slide2"]

[preprocess]
preset = "synthetic"
overrides = {{ n_top = 12, combat_key = "none" }}

[model]
preset = "cpu"
spatial = true
options = {{ device = "cpu", patch_size = 32, encoder_epochs = 1, spatial_epochs = 2, hidden = [16] }}

[output]
dir = "{out}"
genes_to_plot = 1
"""


def _write(tmp_path, text, name="run.toml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("[output]", "[output]\ncolour = 'red'"), "Unknown key 'output.colour'"),
        (lambda t: t.replace("n_slides = 3", "n_slides = 'three'"), "'data.n_slides' must be int"),
        (lambda t: t.replace('reader = "synthetic"', 'reader = "xenium"'), "'data.reader'"),
        (lambda t: t.replace("[split]", "[splits]"), "Unknown section"),
        (lambda t: t.replace('test = ["slide2"]', 'test = ["slide0"]'), "one split only"),
        (lambda t: t.replace('reader = "synthetic"', 'reader = "her2st"\npath = "nowhere"'), "does not exist"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, edit, message):
    path = _write(tmp_path, edit(TINY_RUN.format(out=tmp_path / "out")))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_bad_model_and_preprocess_options_fail_before_any_work(tmp_path, capsys):
    text = TINY_RUN.format(out=tmp_path / "out").replace("encoder_epochs", "encoder_epoch")
    assert main(["run", str(_write(tmp_path, text))]) == 2
    assert "encoder_epoch" in capsys.readouterr().err
    text = TINY_RUN.format(out=tmp_path / "out").replace("n_top = 12", "ntop = 12")
    assert main(["run", str(_write(tmp_path, text))]) == 2
    assert "ntop" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing was started
    assert main(["run", str(tmp_path / "missing.toml")]) == 2


@pytest.mark.slow
def test_run_and_predict_end_to_end(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", str(_write(tmp_path, TINY_RUN.format(out=out)))]) == 0
    report = (out / "report.md").read_text()
    for text in ("train mean", "local encoder only", "SEPAL", "PCC-Gene", "test split", "Imputed fraction"):
        assert text in report
    figures = sorted(p.name for p in (out / "figures").iterdir())
    assert "pcc_histogram.png" in figures and "training_curves.png" in figures
    assert any(name.startswith("gene_map_") for name in figures)
    adata = read_h5ad(out / "processed.h5ad")
    assert {"sepal", "sepal_local", "denoised", "observed"} <= set(adata.layers) and adata.n_vars == 12
    model = sepal.tl.SepalModel.load(out / "model")
    assert model.n_genes == 12 and model.spatial is not None

    # H&E-only inference: a pink tissue disc on white glass
    yy, xx = np.mgrid[:600, :600]
    image = np.full((600, 600, 3), 245, dtype=np.uint8)
    image[(yy - 300) ** 2 + (xx - 300) ** 2 < 250**2] = (200, 120, 170)
    Image.fromarray(image).save(tmp_path / "he.png")
    code = main(
        [
            "predict",
            str(out / "model"),
            str(tmp_path / "he.png"),
            "--spot-diameter",
            "30",
            "--out",
            str(tmp_path / "pred"),
            "--genes",
            "1",
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    predicted = read_h5ad(tmp_path / "pred" / "predicted.h5ad")
    assert list(predicted.var_names) == model.genes and predicted.n_obs > 20
    assert np.isfinite(predicted.layers["sepal"]).all()
    assert len(list((tmp_path / "pred" / "figures").glob("gene_map_*.png"))) == 1

    # the spots of a .h5ad and of a SpatialData .zarr (no --spot-diameter: their spots carry their sizes)
    sepal.io.to_spatialdata(adata).write(tmp_path / "processed.zarr")
    for name, source in (("h5ad", out / "processed.h5ad"), ("zarr", tmp_path / "processed.zarr")):
        assert (
            main(
                [
                    "predict",
                    str(out / "model"),
                    str(source),
                    "--out",
                    str(tmp_path / name),
                    "--genes",
                    "1",
                    "--device",
                    "cpu",
                ]
            )
            == 0
        )
        predicted = read_h5ad(tmp_path / name / "predicted.h5ad")
        assert list(predicted.var_names) == model.genes and predicted.n_obs == adata.n_obs
        assert np.isfinite(predicted.layers["sepal"]).all()
    assert main(["predict", str(out / "model"), str(tmp_path / "he.png"), "--out", str(tmp_path / "x")]) == 2
    assert "--spot-diameter is required" in capsys.readouterr().err
