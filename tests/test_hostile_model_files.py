"""Hostile model folders: every edited, damaged or mismatched file is refused with the file and field named.

The model is a small head-only SEPAL model (a linear head on 8-dimensional embeddings and a spatial head), built
without training, so that each case costs milliseconds.
"""

from __future__ import annotations

import hashlib
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

from sepal_tl.tl import SepalModel
from sepal_tl.tl._encoder import LocalEncoder
from sepal_tl.tl._gnn import SpatialHead
from sepal_tl.tl._model_schema import ModelFileError
from sepal_tl.tl._patches import PatchGeometry

GENES = ["g0", "g1", "g2"]


def tiny_model(seed: int = 0, *, means=(1.0, 2.0, 3.0)) -> SepalModel:
    torch.manual_seed(seed)
    config = {
        "target": "delta",
        "layer": "denoised",
        "encoder": {"backbone": "obsm['X_emb']", "spec": None, "embedding_dim": 8},
        "spatial": {
            "architecture": {"in_dim": 8, "n_genes": 3, "hidden": [4]},
            "training": {"n_hops": 1, "geometry": "auto", "lattice": "hex"},
        },
    }
    return SepalModel(
        genes=GENES,
        gene_means=np.asarray(means, dtype=np.float32),
        geometry=PatchGeometry(patch_size=32),
        config=config,
        encoder=LocalEncoder(None, 3, embedding_dim=8),
        spatial=SpatialHead(8, 3, hidden=(4,)),
        history={"encoder": [{"epoch": 0, "train_mse": 1.0}]},
    )


def snapshot(folder: Path) -> dict[str, str]:
    """Name -> SHA-256 of every file under ``folder`` (hidden temporary entries included)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def saved(tmp_path) -> Path:
    path = tmp_path / "model"
    tiny_model().save(path)
    return path


def _edit(path: Path, change) -> None:
    meta = json.loads((path / "config.json").read_text())
    change(meta)
    (path / "config.json").write_text(json.dumps(meta))


def _set(*keys, value):
    def change(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _drop(*keys):
    def change(meta):
        target = meta
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


def test_round_trip_records_and_checks_the_weights_checksum(saved):
    meta = json.loads((saved / "config.json").read_text())
    assert meta["format_version"] == 2
    assert meta["weights_sha256"] == hashlib.sha256((saved / "model.safetensors").read_bytes()).hexdigest()
    loaded = SepalModel.load(saved)
    original = tiny_model()
    np.testing.assert_array_equal(loaded.gene_means, original.gene_means)
    for key, value in original.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temporary left behind


FIELD_EDITS = [
    # (change, field named in the error)
    (_set("gene_means", value=[0.0]), "gene_means"),
    (_set("gene_means", value=[1.0, 2.0, 3.0, 4.0]), "gene_means"),
    (_set("gene_means", value=[1.0, float("nan"), 3.0]), "gene_means[1]"),
    (_set("gene_means", value=[1.0, float("inf"), 3.0]), "gene_means[1]"),
    (_set("gene_means", value=[1.0, "2", 3.0]), "gene_means[1]"),
    (_set("gene_means", value=[1.0, None, 3.0]), "gene_means[1]"),
    (_set("gene_means", value=[1.0, True, 3.0]), "gene_means[1]"),
    (_set("gene_means", value="1,2,3"), "gene_means"),
    (_set("gene_means", value=None), "gene_means"),
    (_drop("gene_means"), "gene_means"),
    (_set("genes", value="g0g1g2"), "genes"),
    (_set("genes", value=[]), "genes"),
    (_set("genes", value=["g0", "g0", "g2"]), "genes"),
    (_set("genes", value=["g0", 1, "g2"]), "genes[1]"),
    (_set("genes", value=["g0", "", "g2"]), "genes[1]"),
    (_set("genes", value=["g0", "g1"]), "gene_means"),
    (_drop("genes"), "genes"),
    (_set("config", "target", value="Delta"), "config.target"),
    (_set("config", "target", value="relative"), "config.target"),
    (_set("config", "target", value=1), "config.target"),
    (_drop("config", "target"), "config.target"),
    (_set("config", "layer", value=5), "config.layer"),
    (_set("config", value=[]), "config"),
    (_drop("config"), "config"),
    (_drop("config", "encoder"), "config.encoder"),
    (_set("config", "encoder", value="vit"), "config.encoder"),
    (_set("config", "encoder", "backbone", value=5), "config.encoder.backbone"),
    (_set("config", "encoder", "backbone", value=""), "config.encoder.backbone"),
    (_set("config", "encoder", "spec", value="vit_tiny"), "config.encoder.spec"),
    (_set("config", "encoder", "spec", value={"architecture": "vit"}), "config.encoder.spec.mean"),
    (_set("config", "encoder", "embedding_dim", value=0), "config.encoder.embedding_dim"),
    (_set("config", "encoder", "embedding_dim", value="8"), "config.encoder.embedding_dim"),
    (_set("config", "spatial", "architecture", "n_genes", value=4), "config.spatial.architecture.n_genes"),
    (_set("config", "spatial", "architecture", "in_dim", value=-8), "config.spatial.architecture.in_dim"),
    (_set("config", "spatial", "architecture", "operator", value="FooConv"), "config.spatial.architecture.operator"),
    (_set("config", "spatial", "architecture", "pooling", value="max"), "config.spatial.architecture.pooling"),
    (_set("config", "spatial", "architecture", "aggregation", value="avg"), "config.spatial.architecture.aggregation"),
    (_set("config", "spatial", "architecture", "hidden", value=["4"]), "config.spatial.architecture.hidden[0]"),
    (_set("config", "spatial", "architecture", "hidden", value=[0]), "config.spatial.architecture.hidden[0]"),
    (_set("config", "spatial", "architecture", "hidden", value=4), "config.spatial.architecture.hidden"),
    (_set("config", "spatial", "architecture", "dropout", value=0.5), "config.spatial.architecture"),
    (_drop("config", "spatial", "architecture"), "config.spatial.architecture"),
    (_drop("config", "spatial", "training", "n_hops"), "config.spatial.training.n_hops"),
    (_set("config", "spatial", "training", "n_hops", value=0), "config.spatial.training.n_hops"),
    (_set("config", "spatial", "training", value=None), "config.spatial.training"),
    (_set("config", "spatial", value="yes"), "config.spatial"),
    (_drop("geometry"), "geometry"),
    (_set("geometry", "patch_size", value=0), "geometry.patch_size"),
    (_set("geometry", "patch_size", value=1.5), "geometry.patch_size"),
    (_set("geometry", "patch_size", value="32"), "geometry.patch_size"),
    (_set("geometry", "patch_scale", value=-1), "geometry.patch_scale"),
    (_set("geometry", "patch_scale", value="1"), "geometry.patch_scale"),
    (_set("geometry", "mean", value=[0.5, 0.5]), "geometry.mean"),
    (_set("geometry", "std", value=[0.2, 0.0, 0.2]), "geometry.std[1]"),
    (_set("geometry", "colour", value="rgb"), "geometry"),
    (_set("format_version", value="2"), "format_version"),
    (_set("format_version", value=0), "format_version"),
    (_set("format_version", value=True), "format_version"),
    (_drop("format_version"), "format_version"),
    (_drop("weights_sha256"), "weights_sha256"),
    (_set("weights_sha256", value="abc"), "weights_sha256"),
    (_set("weights_sha256", value=None), "weights_sha256"),
    (_set("uid", value=5), "uid"),
    (_drop("uid"), "uid"),
    (_set("history", value=[1, 2]), "history"),
    (_set("history", "encoder", value={"epoch": 0}), "history.encoder"),
    (_set("history", "encoder", value=[5]), "history.encoder[0]"),
    (_set("versions", value="1.0"), "versions"),
]


@pytest.mark.parametrize(("change", "field"), FIELD_EDITS)
def test_edited_config_is_refused_naming_file_and_field(saved, change, field):
    _edit(saved, change)
    before = snapshot(saved)
    with pytest.raises(ModelFileError, match="config.json") as info:
        SepalModel.load(saved)
    assert f"field {field!r}" in str(info.value)
    assert snapshot(saved) == before


def test_newer_format_asks_for_an_upgrade(saved):
    _edit(saved, _set("format_version", value=99))
    with pytest.raises(ModelFileError, match="newer sepal_tl.*upgrade"):
        SepalModel.load(saved)


def test_extra_keys_in_encoder_and_spatial_are_allowed(saved):
    def change(meta):
        meta["config"]["encoder"]["source"] = "timm"
        meta["config"]["spatial"]["notes"] = "kept"
        meta["config"]["comment"] = "hello"

    _edit(saved, change)
    assert SepalModel.load(saved).config["encoder"]["source"] == "timm"


def _truncate_json(path):
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text[: len(text) // 2])


def _flip_weight_byte(path):
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))


def _truncate_weights(path):
    data = (path / "model.safetensors").read_bytes()
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])


def _other_weights_with_their_checksum(path):
    """Weights of a 4-gene model with a matching checksum: the files agree, the architecture does not."""
    other = path.parent / "other"
    model = tiny_model(means=(1.0, 2.0, 3.0))
    model.encoder = LocalEncoder(None, 4, embedding_dim=8)
    model.spatial = None
    model.genes, model.gene_means = [*GENES, "g3"], np.zeros(4, dtype=np.float32)
    model.config = json.loads(json.dumps(model.config))
    model.config["spatial"] = None
    model.save(other)
    (path / "model.safetensors").write_bytes((other / "model.safetensors").read_bytes())
    _edit(path, _set("weights_sha256", value=json.loads((other / "config.json").read_text())["weights_sha256"]))


FILE_DAMAGE = [
    (_truncate_json, ModelFileError, "not valid JSON"),
    (lambda p: (p / "config.json").write_text(""), ModelFileError, "not valid JSON"),
    (lambda p: (p / "config.json").write_bytes(b"\xff\xfe\x00garbage"), ModelFileError, "not valid JSON"),
    (lambda p: (p / "config.json").write_text("[1, 2]"), ModelFileError, "JSON object"),
    (lambda p: (p / "config.json").write_text("null"), ModelFileError, "JSON object"),
    (_flip_weight_byte, ModelFileError, "does not match the SHA-256"),
    (_truncate_weights, ModelFileError, "does not match the SHA-256"),
    (lambda p: (p / "model.safetensors").write_bytes(b""), ModelFileError, "does not match the SHA-256"),
    (_other_weights_with_their_checksum, ModelFileError, "do not fit the model"),
    (lambda p: (p / "config.json").unlink(), FileNotFoundError, "config.json is missing"),
    (lambda p: (p / "model.safetensors").unlink(), FileNotFoundError, "model.safetensors is missing"),
]


@pytest.mark.parametrize(("damage", "error", "match"), FILE_DAMAGE)
def test_damaged_files_are_refused(saved, damage, error, match):
    damage(saved)
    before = snapshot(saved)
    with pytest.raises(error, match=match):
        SepalModel.load(saved)
    assert snapshot(saved) == before


def test_unreadable_safetensors_with_a_matching_checksum(saved):
    (saved / "model.safetensors").write_bytes(b"not a safetensors file")
    digest = hashlib.sha256(b"not a safetensors file").hexdigest()
    _edit(saved, _set("weights_sha256", value=digest))
    with pytest.raises(ModelFileError, match="not a readable safetensors file"):
        SepalModel.load(saved)


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_load_from_a_missing_folder_or_a_file(tmp_path, kind):
    path = tmp_path / "model"
    if kind == "file":
        path.write_text("x")
    error = FileNotFoundError if kind == "missing" else NotADirectoryError
    with pytest.raises(error, match="SepalModel.save"):
        SepalModel.load(path)


def test_format_1_without_checksum_loads_with_a_warning(saved, caplog):
    _edit(saved, lambda meta: (meta.pop("weights_sha256"), meta.update(format_version=1)))
    with caplog.at_level("WARNING", logger="sepal_tl"):
        model = SepalModel.load(saved)
    assert model.n_genes == 3
    assert "no weights checksum" in caplog.text


# ------------------------------------------------------------------------------------------------------------ save


def test_save_onto_a_file_is_refused(tmp_path):
    path = tmp_path / "model"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="is a file"):
        tiny_model().save(path, overwrite=True)
    assert path.read_text() == "precious"


@pytest.mark.parametrize("overwrite", [False, True])
def test_save_never_deletes_other_files(tmp_path, overwrite):
    path = tmp_path / "results"
    path.mkdir()
    (path / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="overwrite=True" if not overwrite else "not part of a saved model"):
        tiny_model().save(path, overwrite=overwrite)
    assert snapshot(path) == {"notes.txt": hashlib.sha256(b"precious").hexdigest()}


def test_save_onto_an_existing_model_needs_overwrite(saved):
    before = snapshot(saved)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tiny_model(1).save(saved)
    assert snapshot(saved) == before
    tiny_model(1, means=(5.0, 6.0, 7.0)).save(saved, overwrite=True)
    np.testing.assert_array_equal(SepalModel.load(saved).gene_means, [5.0, 6.0, 7.0])


@pytest.mark.parametrize("means", [(1.0, float("nan"), 3.0), (float("inf"), 2.0, 3.0)])
def test_save_refuses_a_model_that_could_not_be_loaded(saved, means):
    before = snapshot(saved)
    with pytest.raises(ModelFileError, match=r"gene_means\["):
        tiny_model(1, means=means).save(saved, overwrite=True)
    assert snapshot(saved) == before
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]


_KILL_DURING_SAVE = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import numpy as np
from test_hostile_model_files import tiny_model
import sepal_tl.tl._model_files as files

def die(*args, **kwargs):  # the new weights are written, config.json is not
    os.kill(os.getpid(), signal.SIGKILL)

files.validate_model_json = die
tiny_model(1, means=(9.0, 9.0, 9.0)).save({path!r}, overwrite=True)
"""


def test_save_killed_between_weights_and_json_keeps_the_old_model(saved):
    before = snapshot(saved)
    code = _KILL_DURING_SAVE.format(tests=str(Path(__file__).parent), path=str(saved))
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert snapshot(saved) == before  # neither file was touched
    np.testing.assert_array_equal(SepalModel.load(saved).gene_means, [1.0, 2.0, 3.0])
    # the interrupted save left only a hidden temporary folder next to the model, never inside it
    leftovers = [p.name for p in saved.parent.iterdir() if p.name != "model"]
    assert all(name.startswith(".model.tmp-") for name in leftovers)
    if os.name == "posix":
        tiny_model(1, means=(9.0, 9.0, 9.0)).save(saved, overwrite=True)  # a rerun completes
        np.testing.assert_array_equal(SepalModel.load(saved).gene_means, [9.0, 9.0, 9.0])
