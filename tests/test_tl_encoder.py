"""Encoders from every source (timm, hub cache, files, folders), frozen embeddings and the closed-form head."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import assert_unchanged_after_error

import sepal_tl as sepal
from sepal_tl.tl._backbones import load_backbone, read_state_dict, sha256_of
from sepal_tl.tl._encoder import LocalEncoder
from sepal_tl.tl._ridge import ALPHA_GRID, fit_ridge
from sepal_tl.tl._training import resolve_device

WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
MOBILENET = WEIGHTS / "mobilenetv2_100.tv_in1k.safetensors"
DENSENET = WEIGHTS / "densenet121.keras_in1k.safetensors"
needs_weights = pytest.mark.skipif(not MOBILENET.exists(), reason="../shared/weights is not available")


def _equal_states(a: torch.nn.Module, b: dict) -> None:
    own = a.state_dict()
    for name, value in b.items():
        assert torch.equal(own[name], value), name


def test_weights_file_loads_offline_and_is_recorded(tmp_path):
    from safetensors.torch import save_file

    reference, _ = load_backbone("resnet18", pretrained=False)
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, tmp_path / "weights.safetensors")
    loaded, spec = load_backbone("resnet18", pretrained=tmp_path / "weights.safetensors")
    _equal_states(loaded, reference.state_dict())
    assert spec.source == "file" and spec.weights == "weights.safetensors"
    assert spec.sha256 == sha256_of(tmp_path / "weights.safetensors") and spec.architecture == "resnet18"
    fresh, fresh_spec = load_backbone("resnet18", pretrained=False)
    assert not torch.equal(fresh.conv1.weight, reference.conv1.weight) and fresh_spec.source == "random"


def test_torch_files_are_read_without_pickle_and_prefixes_are_stripped(tmp_path):
    reference, _ = load_backbone("resnet18", pretrained=False)
    wrapped = {"state_dict": {f"module.{k}": v for k, v in reference.state_dict().items()}}
    wrapped["state_dict"]["module.fc.weight"] = torch.zeros(10, 512)  # a classifier the backbone does not have
    torch.save(wrapped, tmp_path / "ckpt.pth")
    loaded, spec = load_backbone("resnet18", pretrained=tmp_path / "ckpt.pth")
    _equal_states(loaded, reference.state_dict())
    torch.save({"weights": reference.state_dict(), "extra": object()}, tmp_path / "unsafe.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        load_backbone("resnet18", pretrained=tmp_path / "unsafe.pth")
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="broken.safetensors"):
        read_state_dict(tmp_path / "broken.safetensors")


@pytest.mark.slow
def test_layerscale_vit_needs_its_model_kwargs(tmp_path):
    import timm

    uni_like = timm.create_model("vit_tiny_patch16_224", num_classes=0, init_values=1e-5)
    torch.save({f"model.{k}": v for k, v in uni_like.state_dict().items()}, tmp_path / "uni_like.bin")
    with pytest.raises(ValueError, match=r"model_kwargs=.*strict=False") as err:
        load_backbone("vit_tiny_patch16_224", pretrained=tmp_path / "uni_like.bin")
    assert "ls1.gamma" in str(err.value)
    loaded, spec = load_backbone(
        "vit_tiny_patch16_224", pretrained=tmp_path / "uni_like.bin", model_kwargs={"init_values": 1e-5}
    )
    _equal_states(loaded, uni_like.state_dict())
    assert spec.model_args["init_values"] == 1e-5
    rebuilt = spec.build()  # the saved architecture comes back offline with the same shapes
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in loaded.state_dict().items()}
    # a smaller input size resamples the position embeddings of the pretrained weights
    small, small_spec = load_backbone(
        "vit_tiny_patch16_224", pretrained=tmp_path / "uni_like.bin", model_kwargs={"init_values": 1e-5}, image_size=112
    )
    assert small(torch.zeros(1, 3, 112, 112)).shape == (1, 192) and small_spec.model_args["img_size"] == 112
    partial, _ = load_backbone("vit_tiny_patch16_224", pretrained=tmp_path / "uni_like.bin", strict=False)
    assert torch.equal(partial.patch_embed.proj.weight, uni_like.patch_embed.proj.weight)


def test_bad_backbones(tmp_path):
    with pytest.raises(ValueError, match="not a timm model"):
        load_backbone("resnet_does_not_exist", pretrained=False)
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_backbone("resnet18", pretrained=tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_backbone("resnet18", pretrained=tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"architecture": "resnet18"}))
    with pytest.raises(FileNotFoundError, match="no weights file"):
        load_backbone("resnet18", pretrained=tmp_path)
    with pytest.raises(ValueError, match="describes 'resnet18'"):
        load_backbone("densenet121", pretrained=tmp_path)


def test_encoder_shapes_for_vit_and_cnn():
    for backbone, width in [("vit_tiny_patch16_224", 192), ("resnet18", 512)]:
        module, _ = load_backbone(backbone, pretrained=False, image_size=32)
        encoder = LocalEncoder(module, 7)
        pred, emb = encoder(torch.zeros(2, 3, 32, 32))
        assert pred.shape == (2, 7) and emb.shape == (2, width) and encoder.embedding_dim == width
    with pytest.raises(ValueError, match="no image backbone"):
        LocalEncoder(None, 3, embedding_dim=8)(torch.zeros(1, 3, 32, 32))


def test_devices():
    assert resolve_device("cpu") == ("cpu", 1)
    if not torch.cuda.is_available():
        assert resolve_device("auto") == ("cpu", 1)
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="not supported"):
        resolve_device("tpu")


@needs_weights
def test_real_weights_load_strictly_with_their_recorded_hash(tmp_path):
    densenet, spec = load_backbone("densenet121", pretrained=DENSENET)
    _equal_states(densenet, read_state_dict(DENSENET))
    assert spec.sha256 == "2f88e32ca25212f5f523d681cb00735cd2b91a52c528654a35666768fc6db4f5"
    assert spec.mean == (0.485, 0.456, 0.406) and spec.input_size == 224
    # a hub-style folder: config.json names the architecture and the normalisation
    folder = tmp_path / "mobilenet"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(MOBILENET.read_bytes())
    config = {
        "architecture": "mobilenetv2_100",
        "pretrained_cfg": {"input_size": [3, 160, 160], "mean": [0.5] * 3, "std": [0.25] * 3},
    }
    (folder / "config.json").write_text(json.dumps(config))
    module, folder_spec = load_backbone(None, pretrained=folder)
    _equal_states(module, read_state_dict(MOBILENET))
    assert folder_spec.source == "folder" and folder_spec.input_size == 160 and folder_spec.std == (0.25,) * 3


HUB_SCRIPT = """
import sys, torch
import sepal_tl
from sepal_tl.tl._backbones import load_backbone, read_state_dict
module, spec = load_backbone("hf-hub:sepal-test/mobilenetv2", pretrained=True)
state = read_state_dict(sys.argv[1])
assert all(torch.equal(module.state_dict()[k], v) for k, v in state.items())
assert spec.source == "hf-hub" and spec.architecture == "mobilenetv2_100" and spec.sha256, spec
assert spec.weights == "sepal-test/mobilenetv2"
random, random_spec = load_backbone("hf-hub:sepal-test/mobilenetv2", pretrained=False)
assert random_spec.source == "random" and not torch.equal(random.conv_stem.weight, module.conv_stem.weight)
try:
    load_backbone("hf-hub:sepal-test/not-cached", pretrained=True)
except OSError as err:
    assert "HF_HUB_OFFLINE" in str(err) and "pretrained=<path" in str(err), err
else:
    raise AssertionError("no error for an uncached hub model")
try:
    load_backbone("mobilenetv3_small_100", pretrained=True)
except OSError as err:
    assert "HF_HUB_OFFLINE" in str(err), err
else:
    raise AssertionError("no error for uncached timm weights")
print("hub ok")
"""


@pytest.mark.slow
@needs_weights
def test_hub_model_loads_from_an_offline_cache(tmp_path):
    commit = "0" * 40
    repo = tmp_path / "hf" / "hub" / "models--sepal-test--mobilenetv2"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    (snapshot / "model.safetensors").write_bytes(MOBILENET.read_bytes())
    config = {
        "architecture": "mobilenetv2_100",
        "num_classes": 0,
        "pretrained_cfg": {
            "input_size": [3, 224, 224],
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "num_classes": 0,
            "classifier": None,
        },
    }
    (snapshot / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(HUB_SCRIPT), str(MOBILENET)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "hub ok" in result.stdout


def test_ridge_matches_the_normal_equations_and_picks_the_best_validation_penalty():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6))
    y = x @ rng.normal(size=(6, 3)) + rng.normal(scale=2.0, size=(80, 3)) + 5.0
    x_val = rng.normal(size=(40, 6))
    y_val = x_val @ rng.normal(size=(6, 3)) * 0 + 5.0  # pure noise: strong shrinkage wins
    coef, intercept, alpha, _ = fit_ridge(x, y, x_val=x_val, y_val=y_val)
    xc, yc = x - x.mean(0), y - y.mean(0)
    expected = np.linalg.solve(xc.T @ xc + alpha * np.eye(6), xc.T @ yc)
    np.testing.assert_allclose(coef, expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(intercept, y.mean(0) - x.mean(0) @ expected, rtol=1e-4)
    scale = np.mean(np.linalg.svd(xc, compute_uv=False) ** 2)

    def val_mse(factor):
        w = np.linalg.solve(xc.T @ xc + factor * scale * np.eye(6), xc.T @ yc)
        return np.mean(((x_val - x.mean(0)) @ w + y.mean(0) - y_val) ** 2)

    assert alpha == pytest.approx(min(ALPHA_GRID, key=val_mse) * scale)
    assert alpha > scale  # noise-only validation rows ask for strong shrinkage
    # with informative validation rows, a weak penalty wins
    w = rng.normal(size=(6, 3))
    coef2, _, alpha2, _ = fit_ridge(x, x @ w, x_val=x_val, y_val=x_val @ w)
    assert alpha2 == pytest.approx(min(ALPHA_GRID) * scale) and np.allclose(coef2, w, atol=1e-2)
    _, _, alpha_gcv, _ = fit_ridge(x, x @ w + rng.normal(scale=0.01, size=(80, 3)))
    assert alpha_gcv <= 1e-2 * scale  # GCV without validation rows also finds the low-noise fit


@pytest.mark.slow
def test_frozen_head_is_the_ridge_fit_on_standardised_embeddings(processed):
    adata = processed.copy()
    model = sepal.tl.fit_encoder(adata, backbone="resnet18", pretrained=False, freeze=True, patch_size=32, device="cpu")
    enc = model.config["encoder"]
    assert enc["freeze"] and enc["head"] == "ridge" and enc["embedding_norm"] == "slide" and enc["epochs"] == 0
    emb = adata.obsm["X_sepal"]
    libs = adata.obs["library_id"].astype(str).to_numpy()
    features = np.empty_like(emb)
    for lib in np.unique(libs):  # per-slide standardisation, by hand
        rows = libs == lib
        sd = emb[rows].std(0)
        sd[sd < 1e-8] = 1
        features[rows] = (emb[rows] - emb[rows].mean(0)) / sd
    train = (adata.obs["split"] == "train").to_numpy()
    delta = adata.layers["denoised"] - adata.layers["denoised"][train].mean(0)
    xc = features[train] - features[train].mean(0)
    coef = np.linalg.solve(
        xc.T.astype(float) @ xc + enc["ridge_alpha"] * np.eye(xc.shape[1]), xc.T @ (delta[train] - delta[train].mean(0))
    )
    expected = (features - features[train].mean(0)) @ coef + delta[train].mean(0) + model.gene_means
    np.testing.assert_allclose(adata.layers["sepal_local"], expected, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_embed_then_fit_on_the_key_and_predict(processed, tmp_path):
    adata = processed.copy()
    sepal.tl.embed(adata, "resnet18", pretrained=False, patch_size=32, device="cpu")
    assert adata.obsm["X_resnet18"].shape == (adata.n_obs, 512)
    entry = json.loads(adata.uns["sepal"]["embeddings"]["X_resnet18"])
    assert entry["encoder"]["architecture"] == "resnet18" and entry["geometry"]["patch_size"] == 32
    model = sepal.tl.fit(adata, embedding_key="X_resnet18", device="cpu", spatial_epochs=2, hidden=(16,))
    # random weights cannot be loaded again, so the model predicts from embeddings only
    assert model.encoder.backbone is None and model.embedding_key == "X_resnet18"
    assert "X_sepal" not in adata.obsm and np.isfinite(adata.layers["sepal"]).all()
    model.save(tmp_path / "head_only")
    loaded = sepal.tl.SepalModel.load(tmp_path / "head_only")
    copy = adata.copy()
    sepal.tl.predict(copy, loaded, device="cpu")
    np.testing.assert_allclose(copy.layers["sepal"], adata.layers["sepal"], rtol=1e-5, atol=1e-5)
    no_key = adata.copy()
    del no_key.obsm["X_resnet18"]
    assert_unchanged_after_error(no_key, ValueError, "no image backbone", sepal.tl.predict, model=loaded, device="cpu")


def test_embedding_inputs_are_checked_before_anything_is_written(processed):
    adata = processed.copy()
    adata.obsm["X_small"] = np.random.default_rng(0).normal(size=(adata.n_obs, 8)).astype(np.float32)
    model = sepal.tl.fit_encoder(adata, embedding_key="X_small")
    assert_unchanged_after_error(adata, KeyError, "X_missing", sepal.tl.fit_encoder, embedding_key="X_missing")
    bad = adata.copy()
    bad.obsm["X_small"][3, 2] = np.nan
    assert_unchanged_after_error(
        bad, ValueError, "NaN or infinite values in 1 spots", sepal.tl.fit_encoder, embedding_key="X_small"
    )
    bad.obsm["X_small"][3, 2] = np.inf
    assert_unchanged_after_error(bad, ValueError, "NaN or infinite", sepal.tl.predict, model=model)
    other = adata.copy()
    other.obsm["X_wide"] = np.zeros((adata.n_obs, 12), np.float32)
    assert_unchanged_after_error(
        other, ValueError, "trained on 8-dimensional", sepal.tl.predict, model=model, embedding_key="X_wide"
    )
    assert_unchanged_after_error(
        adata, ValueError, "needs freeze=True", sepal.tl.fit_encoder, embedding_key="X_small", freeze=False
    )
    assert_unchanged_after_error(
        adata,
        ValueError,
        "frozen embeddings only",
        sepal.tl.fit_encoder,
        backbone="resnet18",
        pretrained=False,
        embedding_norm="slide",
        epochs=1,
    )
    assert_unchanged_after_error(
        adata, ValueError, "stain_jitter", sepal.tl.fit_encoder, embedding_key="X_small", stain_jitter=0.05
    )
    for unused in ({"image": "hires"}, {"patch_size": 64, "mean": (0.5, 0.5, 0.5)}):  # no patch is cut
        match = ", ".join(f"{name}=" for name in unused) + " would be ignored"
        assert_unchanged_after_error(adata, ValueError, match, sepal.tl.fit_encoder, embedding_key="X_small", **unused)
    # an absolute target is supported in frozen mode: the intercept carries the train mean
    absolute = sepal.tl.fit_encoder(adata.copy(), embedding_key="X_small", target="absolute", embedding_norm="train")
    np.testing.assert_array_equal(absolute.offset, 0)


@pytest.mark.slow
@needs_weights
def test_embed_with_a_weights_file_attaches_the_same_encoder(processed):
    adata = processed[processed.obs["library_id"] != "slide2"].copy()
    sepal.tl.embed(adata, "mobilenetv2_100", pretrained=MOBILENET, patch_size=64, device="cpu")
    model = sepal.tl.fit_encoder(adata, embedding_key="X_mobilenetv2_100")
    spec = model.config["encoder"]["spec"]
    assert model.encoder.backbone is not None and spec["source"] == "file"
    assert spec["sha256"] == "e5414ffa2e15136a2e243a0484d335189735145dfb35391603c9d4d8c63ef71e"
    he = adata[:, []].copy()
    del he.obsm["X_mobilenetv2_100"]
    out = sepal.tl.predict(he, model, device="cpu")  # embeddings recomputed from the images
    np.testing.assert_allclose(out.obsm["X_sepal"], adata.obsm["X_mobilenetv2_100"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.X, adata.layers["sepal_local"], rtol=1e-3, atol=1e-3)


def test_layer_classes_in_model_kwargs_are_saved_by_import_path(processed):
    module, spec = load_backbone("vit_tiny_patch16_224", pretrained=False, model_kwargs={"act_layer": torch.nn.SiLU})
    stored = json.loads(json.dumps(spec.to_dict()))
    assert stored["model_args"]["act_layer"] == {"import": "torch.nn.SiLU"}
    from sepal_tl.tl._backbones import EncoderSpec

    rebuilt = EncoderSpec.from_dict(stored).build()
    assert isinstance(rebuilt.blocks[0].mlp.act, torch.nn.SiLU)
    with pytest.raises(ValueError, match="cannot be saved with the model"):
        load_backbone("vit_tiny_patch16_224", pretrained=False, model_kwargs={"act_layer": lambda: torch.nn.GELU()})[
            1
        ].to_dict()
    stored["model_args"]["act_layer"] = {"import": "os.system"}
    with pytest.raises(ValueError, match="only layers of"):
        EncoderSpec.from_dict(stored)
    adata = processed.copy()
    assert_unchanged_after_error(
        adata,
        ValueError,
        "global_pool",
        sepal.tl.embed,
        encoder="vit_tiny_patch16_224",
        pretrained=False,
        model_kwargs={"global_pool": ""},
        patch_size=32,
        device="cpu",
    )


def test_a_model_refuses_visium_hd_bins_of_another_size(processed):
    adata = processed.copy()
    adata.obsm["X_small"] = np.random.default_rng(1).normal(size=(adata.n_obs, 8)).astype(np.float32)
    for entry in adata.uns["spatial"].values():
        entry.setdefault("metadata", {})["bin_size_um"] = 16.0
    model = sepal.tl.fit_encoder(adata, embedding_key="X_small")
    assert model.config["bin_size_um"] == 16.0
    eight = adata.copy()
    for entry in eight.uns["spatial"].values():
        entry["metadata"]["bin_size_um"] = 8.0
    assert_unchanged_after_error(eight, ValueError, "trained on 16 µm bins", sepal.tl.predict, model=model)
    mixed = adata.copy()
    mixed.uns["spatial"]["slide0"]["metadata"]["bin_size_um"] = 8.0
    assert_unchanged_after_error(
        mixed, ValueError, "different Visium HD bin sizes", sepal.tl.fit_encoder, embedding_key="X_small"
    )


def test_fit_spatial_on_reordered_genes_and_checks_before_writing(processed):
    adata = processed.copy()
    adata.obsm["X_small"] = np.random.default_rng(2).normal(size=(adata.n_obs, 8)).astype(np.float32)
    model = sepal.tl.fit_encoder(adata, embedding_key="X_small")
    reordered = adata[:, adata.var_names[::-1]].copy()
    sepal.tl.fit_spatial(reordered, model, epochs=1, hidden=(8,), device="cpu")
    expected = sepal.tl.predict(adata, model, copy=True)
    np.testing.assert_allclose(
        reordered[:, model.genes].layers["sepal"], expected.layers["sepal"], rtol=1e-5, atol=1e-5
    )
    wider = adata.copy()
    wider.obs = wider.obs.drop(columns=["array_row"])
    assert_unchanged_after_error(
        wider, KeyError, "array_row", sepal.tl.fit_spatial, model=model, epochs=1, device="cpu"
    )
    fewer = adata[:, 1:].copy()
    assert_unchanged_after_error(
        fewer, ValueError, r"adata\[:, model.genes\]", sepal.tl.fit_spatial, model=model, epochs=1
    )
    assert_unchanged_after_error(adata, ValueError, "tta=True", sepal.tl.predict, model=model, tta=True)


def test_num_classes_in_model_kwargs_is_overridden_and_rebuilds():
    from sepal_tl.tl._backbones import EncoderSpec

    module, spec = load_backbone("resnet18", pretrained=False, model_kwargs={"num_classes": 1000})
    assert module.eval()(torch.zeros(1, 3, 32, 32)).shape == (1, 512)
    assert "num_classes" not in spec.model_args
    rebuilt = EncoderSpec.from_dict(json.loads(json.dumps(spec.to_dict()))).build().eval()
    assert rebuilt(torch.zeros(1, 3, 32, 32)).shape == (1, 512)


def test_an_unnamed_backbone_needs_a_folder_and_ridge_needs_finite_values(tmp_path):
    with pytest.raises(ValueError, match="backbone=None needs a hub-style folder"):
        load_backbone(None, pretrained=False)
    weights = tmp_path / "weights.safetensors"
    weights.write_bytes(b"")
    with pytest.raises(ValueError, match="backbone=None needs a hub-style folder"):
        load_backbone(None, pretrained=weights)  # a weights file does not name its architecture
    x = np.random.default_rng(0).normal(size=(20, 3))
    y = x @ np.ones((3, 2))
    y[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite values only"):
        fit_ridge(x, y)
