"""The SEPAL model end to end on tiny synthetic data: fit -> predict -> evaluate, save/load, bad inputs."""

import numpy as np
import pytest
from _helpers import DATA, TINY, assert_same, assert_unchanged_after_error, needs_data

import sepal_tl as sepal


@pytest.fixture(scope="module")
def fitted(processed):
    adata = processed.copy()
    model = sepal.tl.fit(
        adata,
        **TINY,
        encoder_epochs=2,
        encoder_batch_size=64,
        encoder_lr=1e-3,
        spatial_epochs=3,
        spatial_lr=1e-3,
        hidden=(32,),
    )
    return adata, model


@pytest.mark.slow
def test_fit_writes_embeddings_and_predictions(fitted):
    adata, model = fitted
    assert model.genes == list(adata.var_names)
    np.testing.assert_allclose(
        model.gene_means, adata.layers["denoised"][(adata.obs["split"] == "train").to_numpy()].mean(0), rtol=1e-5
    )
    assert adata.obsm["X_sepal"].shape == (adata.n_obs, model.encoder.embedding_dim)
    for key in ("sepal_local", "sepal"):
        assert adata.layers[key].shape == adata.shape and np.isfinite(adata.layers[key]).all()
    # the spatial stage really changed the local predictions
    assert not np.allclose(adata.layers["sepal"], adata.layers["sepal_local"])
    assert [h["epoch"] for h in model.history["encoder"]] == [0, 1]
    assert len(model.history["spatial"]) == 3 and "val_mse" in model.history["spatial"][0]
    assert adata.uns["sepal"]["tl"]["fit_spatial"]["uid"] == model.uid


@pytest.mark.slow
def test_evaluate_reports_model_and_mean_baseline(fitted):
    adata, _ = fitted
    table = sepal.tl.evaluate(adata, pred="sepal", split="test")
    assert list(table.index) == ["sepal", "mean_baseline"]
    assert {"MSE", "MAE", "PCC-Gene", "R2-Gene", "PCC-Patch", "R2-Patch"} <= set(table.columns)
    assert np.isfinite(table.loc["sepal", ["MSE", "MAE", "PCC-Gene"]].astype(float)).all()


@pytest.mark.slow
def test_save_load_gives_identical_predictions(fitted, tmp_path):
    adata, model = fitted
    model.save(tmp_path / "model")
    loaded = sepal.tl.SepalModel.load(tmp_path / "model")
    assert loaded.genes == model.genes and loaded.uid == model.uid and loaded.geometry == model.geometry
    np.testing.assert_array_equal(loaded.gene_means, model.gene_means)
    assert loaded.config == model.config and loaded.history == model.history
    first, second = adata.copy(), adata.copy()
    sepal.tl.predict(first, model, device="cpu")
    sepal.tl.predict(second, loaded, device="cpu")
    np.testing.assert_array_equal(first.layers["sepal"], second.layers["sepal"])
    np.testing.assert_array_equal(first.obsm["X_sepal"], second.obsm["X_sepal"])
    # the weights are safetensors and the rest is JSON: nothing is unpickled
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["config.json", "model.safetensors"]
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "model")


@pytest.mark.slow
def test_predict_on_h_and_e_only_data(fitted):
    adata, model = fitted
    he = adata[:, []].copy()
    before = he.copy()
    out = sepal.tl.predict(he, model, device="cpu")
    assert list(out.var_names) == model.genes
    np.testing.assert_allclose(out.X, adata.layers["sepal"], rtol=1e-5, atol=1e-5)
    assert_same(he, before)  # the H&E-only input is left alone


@pytest.mark.slow
def test_predict_on_other_genes_returns_the_model_genes_only(fitted):
    adata, model = fitted
    extra = adata[:, :4].copy()
    extra.var_names = [f"other{i}" for i in range(4)]
    import anndata as ad

    wider = ad.concat([adata, extra], axis=1, merge="first", uns_merge="first")
    wider.obsm = adata.obsm.copy()
    before = wider.copy()
    out = sepal.tl.predict(wider, model, device="cpu")
    assert_same(wider, before)  # nothing written into an AnnData whose genes are not the model's
    assert list(out.var_names) == model.genes and out.var["measured"].all()
    assert np.isfinite(out.layers["sepal"]).all()
    np.testing.assert_allclose(out.layers["sepal"], adata.layers["sepal"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out.layers["denoised"], adata.layers["denoised"])
    # fewer genes than the model: the missing ones are predicted and flagged as unmeasured
    fewer = sepal.tl.predict(adata[:, 2:].copy(), model, device="cpu")
    assert list(fewer.var_names) == model.genes and fewer.var["measured"].sum() == model.n_genes - 2
    # genes in another order are written in place, in the AnnData's own order
    shuffled = adata[:, adata.var_names[::-1]].copy()
    assert sepal.tl.predict(shuffled, model, device="cpu") is None
    np.testing.assert_allclose(shuffled[:, model.genes].layers["sepal"], adata.layers["sepal"], rtol=1e-5, atol=1e-5)
    copied = sepal.tl.predict(adata, model, device="cpu", copy=True)
    np.testing.assert_allclose(copied.layers["sepal"], adata.layers["sepal"], rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_absolute_target_has_no_offset(processed):
    adata = processed.copy()
    model = sepal.tl.fit_encoder(adata, **TINY, epochs=1, target="absolute")
    np.testing.assert_array_equal(model.offset, 0)
    assert model.config["target"] == "absolute"


def test_presets_only_name_real_options():
    import inspect

    encoder = set(inspect.signature(sepal.tl.fit_encoder).parameters)
    spatial = set(inspect.signature(sepal.tl.fit_spatial).parameters)
    for preset in sepal.tl.PRESETS.values():
        assert set(preset["encoder"]) <= encoder and set(preset["spatial"]) <= spatial


@pytest.mark.slow
def test_bad_inputs(fitted, processed, tmp_path):
    adata, model = fitted
    for options in ({"patch_size": 32}, {"mean": (0.5, 0.5, 0.5), "stain_norm": "macenko"}):  # the model's own
        match = ", ".join(f"{name}=" for name in options) + " cannot change a SepalModel's encoder"
        assert_unchanged_after_error(adata.copy(), ValueError, match, sepal.tl.embed, encoder=model, **options)
    fresh = processed.copy()
    assert_unchanged_after_error(
        fresh, ValueError, "not a timm model", sepal.tl.fit_encoder, **{**TINY, "backbone": "vit_nonexistent"}
    )
    wrong = fresh.copy()
    wrong.obs["split"] = wrong.obs["split"].astype(str).replace({"train": "training"})
    assert_unchanged_after_error(wrong, ValueError, "only 'train', 'val' and 'test'", sepal.tl.fit_encoder, **TINY)
    no_train = fresh.copy()
    no_train.obs["split"] = "test"
    assert_unchanged_after_error(no_train, ValueError, "No spot has", sepal.tl.fit_encoder, **TINY)
    assert_unchanged_after_error(fresh, KeyError, "split_key='fold'", sepal.tl.fit_encoder, split_key="fold", **TINY)
    no_image = fresh.copy()
    del no_image.uns["spatial"]["slide1"]["images"]
    assert_unchanged_after_error(no_image, KeyError, "slide1", sepal.tl.fit_encoder, **TINY)
    assert_unchanged_after_error(
        adata.copy(), ValueError, "n_hops=4", sepal.tl.fit_spatial, model=model, n_hops=4, device="cpu"
    )
    with pytest.raises(TypeError, match="patch_size"):
        sepal.tl.predict(adata.copy(), model, patch_size=224, device="cpu")  # the model's geometry is the only one
    assert_unchanged_after_error(
        adata.copy(), ValueError, "at least one epoch", sepal.tl.fit_encoder, **{**TINY, "epochs": 0}
    )
    assert_unchanged_after_error(
        adata.copy(), ValueError, "operator='GCN'", sepal.tl.fit, **TINY, operator="GCN", encoder_epochs=1
    )
    # a model saved for another gene set refuses this data
    other = processed[:, :8].copy()
    other_model = sepal.tl.fit_encoder(other, **TINY, epochs=1)
    other_model.save(tmp_path / "other")
    renamed = adata.copy()
    renamed.var_names = [f"x{i}" for i in range(renamed.n_vars)]
    assert_unchanged_after_error(
        renamed,
        KeyError,
        "shares no gene with the model",
        sepal.tl.predict,
        model=sepal.tl.SepalModel.load(tmp_path / "other"),
    )
    with pytest.raises(TypeError, match="encoder_epochs"):
        sepal.tl.fit(fresh.copy(), epochs=3, **TINY)
    with pytest.raises(TypeError, match="Unknown option"):
        sepal.tl.fit(fresh.copy(), n_epochs=3, **TINY)
    with pytest.raises(FileNotFoundError, match="config.json"):
        sepal.tl.SepalModel.load(tmp_path)


@pytest.mark.slow
@needs_data
@pytest.mark.realdata
def test_her2st_whole_path_runs():
    adata = sepal.datasets.her2st(["C2", "C3", "C4"], path=DATA / "her2st")
    sepal.pp.run(adata, preset="her2st", n_top=16, slides=["C2"])
    adata.obs["split"] = adata.obs["library_id"].map({"C2": "train", "C3": "val", "C4": "test"}).astype(str)
    model = sepal.tl.fit(adata, **TINY, encoder_epochs=1, spatial_epochs=1)
    table = sepal.tl.evaluate(adata, pred="sepal", split="test")
    assert table.loc["sepal", "n_spots"] == (adata.obs["library_id"] == "C4").sum()
    assert np.isfinite(adata.layers["sepal"]).all() and model.n_genes == 16


@pytest.mark.slow
def test_test_time_augmentation_averages_the_eight_symmetries(fitted):
    import torch

    from sepal_tl.tl._local import library_codes, model_embeddings
    from sepal_tl.tl._patches import SpotPatches, eight_symmetries

    adata, model = fitted
    sub = adata[:5].copy()
    emb = model_embeddings(sub, model, device="cpu", tta=True)
    _, pred = model.heads_input(emb, library_codes(sub, "library_id"))
    patches = torch.stack([SpotPatches(sub, None, model.geometry)[i] for i in range(5)])
    with torch.inference_mode():
        manual = torch.stack([model.encoder(view)[0] for view in eight_symmetries(patches)]).mean(0)
    np.testing.assert_allclose(pred, manual.numpy(), rtol=1e-4, atol=1e-5)
    plain = model_embeddings(sub, model, device="cpu")
    assert not np.allclose(emb, plain)


@pytest.mark.slow
def test_spatial_model_refuses_another_lattice(fitted):
    adata, model = fitted
    assert model.config["spatial"]["training"]["lattice"] == "hex"
    square = adata.copy()
    # the same spots laid on a square grid (legacy ST indexing: both parities of row + col)
    square.obs["array_col"] = np.arange(square.n_obs) % 20
    square.obs["array_row"] = np.arange(square.n_obs) // 20
    assert_unchanged_after_error(square, ValueError, "trained on a hex lattice", sepal.tl.predict, model=model)


@pytest.mark.slow
def test_pretrained_normalisation_comes_from_the_backbone(processed):
    model = sepal.tl.fit_encoder(processed.copy(), **TINY, epochs=1)
    cfg = model.encoder.backbone.pretrained_cfg
    assert model.geometry.mean == tuple(cfg["mean"]) and model.geometry.std == tuple(cfg["std"])
