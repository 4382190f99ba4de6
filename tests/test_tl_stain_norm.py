"""Stain normalisation (Macenko, Reinhard): known answers on images made from known stains, and the patch path."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData
from scipy import sparse

import sepal_tl as sepal
from sepal_tl.tl._patches import PatchGeometry, SpotPatches
from sepal_tl.tl._stain import STAIN_NORMS, normalise_stains, stain_parameters, stain_target

HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
EOSIN = np.array([0.07, 0.99, 0.11])


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def stained(concentrations: np.ndarray, stains: np.ndarray) -> np.ndarray:
    """RGB on [0, 255] (float) of pixels with ``(n, 2)`` H/E concentrations and ``(3, 2)`` unit stain vectors."""
    return 255.0 * np.exp(-(concentrations @ stains.T))


def tissue_concentrations(n: int, seed: int = 0, low: float = 0.4) -> np.ndarray:
    """Concentrations whose H/E mixtures span the whole range between pure haematoxylin and pure eosin."""
    rng = np.random.default_rng(seed)
    total = rng.uniform(low, low + 1.2, n)
    share = rng.uniform(0.0, 1.0, n)
    return np.stack([total * share, total * (1 - share)], axis=1)


def test_macenko_recovers_known_stain_vectors_and_maxima():
    stains = np.stack([unit(HAEMATOXYLIN), unit(EOSIN)], axis=1)
    # dense enough that even pure eosin passes Macenko's background cut (OD > 0.15 in every channel)
    concentrations = tissue_concentrations(20_000, low=2.2)
    params = stain_parameters("macenko", stained(concentrations, stains))
    assert params.shape == (STAIN_NORMS["macenko"],)
    # The extreme angles of the mixtures are the pure stains (percentiles 1 / 99 sit just inside them).
    np.testing.assert_allclose(params[:3], stains[:, 0], atol=0.03)
    np.testing.assert_allclose(params[3:6], stains[:, 1], atol=0.03)
    expected = np.percentile(concentrations, 99, axis=0)
    np.testing.assert_allclose(params[6:], expected, rtol=0.08)


def test_macenko_maps_a_restained_slide_onto_the_target_exactly():
    source_stains = np.stack([unit(HAEMATOXYLIN + [0.1, -0.1, 0.1]), unit(EOSIN + [0.15, 0.0, 0.0])], axis=1)
    target_stains = np.stack([unit(HAEMATOXYLIN), unit(EOSIN)], axis=1)
    concentrations = tissue_concentrations(64, seed=1)
    source = np.concatenate([source_stains.T.ravel(), [2.0, 1.0]])
    target = np.concatenate([target_stains.T.ravel(), [1.0, 0.5]])
    patches = stained(concentrations, source_stains).T.reshape(1, 3, 8, 8).copy()
    normalise_stains(patches, "macenko", source, target)
    expected = stained(concentrations * [0.5, 0.5], target_stains).T.reshape(1, 3, 8, 8)
    np.testing.assert_allclose(patches, expected, rtol=1e-9, atol=1e-9)


def test_reinhard_gives_the_target_statistics_and_is_the_identity_on_itself():
    from skimage.color import rgb2lab

    rng = np.random.default_rng(2)
    pixels = stained(tissue_concentrations(4096, seed=3), np.stack([unit(HAEMATOXYLIN), unit(EOSIN)], axis=1))
    source = stain_parameters("reinhard", pixels)
    lab = rgb2lab(pixels[None] / 255.0)[0]
    np.testing.assert_allclose(source, np.concatenate([lab.mean(axis=0), lab.std(axis=0)]), rtol=1e-9)
    patches = pixels.T.reshape(1, 3, 64, 64).copy()
    same = patches.copy()
    normalise_stains(same, "reinhard", source, source)
    np.testing.assert_allclose(same, patches, atol=1e-6)
    target = source + np.array([-5.0, 3.0, 2.0, 0.0, 0.0, 0.0]) * rng.uniform(0.5, 1.0)
    normalise_stains(patches, "reinhard", source, target)
    after = stain_parameters("reinhard", patches.reshape(3, -1).T)
    np.testing.assert_allclose(after, target, atol=0.05)


def test_target_is_the_mean_appearance_with_unit_stain_vectors():
    a = np.concatenate([unit(HAEMATOXYLIN), unit(EOSIN), [1.0, 2.0]])
    b = np.concatenate([unit(HAEMATOXYLIN + 0.2), unit(EOSIN), [3.0, 4.0]])
    target = stain_target("macenko", [a, b])
    np.testing.assert_allclose(np.linalg.norm(target[:3]), 1.0)
    np.testing.assert_allclose(target[3:6], unit(EOSIN))
    np.testing.assert_allclose(target[6:], [2.0, 3.0])
    np.testing.assert_allclose(stain_target("reinhard", [a[:6], b[:6]]), (a[:6] + b[:6]) / 2)


def test_unstained_pixels_are_refused_with_the_fix():
    with pytest.raises(ValueError, match="stain_norm=None"):
        stain_parameters("macenko", np.full((500, 3), 250.0))
    with pytest.raises(ValueError, match="choose one of"):
        stain_parameters("vahadane", np.full((500, 3), 100.0))


def two_stainings() -> AnnData:
    """Two slides of the same tissue (same concentrations) stained differently: 16 spots each, 12-px windows."""
    rng = np.random.default_rng(4)
    side = 48
    concentrations = tissue_concentrations(side * side, seed=5)[rng.permutation(side * side)]
    stainings = {
        "pale": (np.stack([unit(HAEMATOXYLIN), unit(EOSIN)], axis=1), 0.6),
        "dark": (np.stack([unit(HAEMATOXYLIN + [0.1, -0.1, 0.1]), unit(EOSIN + [0.1, 0.0, 0.0])], axis=1), 1.4),
    }
    centres = np.array([[6.0 + 12 * i, 6.0 + 12 * j] for i in range(4) for j in range(4)])
    parts = []
    for lib, (stains, strength) in stainings.items():
        image = np.round(stained(concentrations * strength, stains)).astype(np.uint8).reshape(side, side, 3)
        part = AnnData(
            sparse.csr_matrix(np.ones((16, 2), dtype=np.float32)),
            obs=pd.DataFrame({"library_id": pd.Categorical([lib] * 16)}, index=[f"{lib}_{i}" for i in range(16)]),
        )
        part.obsm["spatial"] = centres
        part.uns["spatial"] = {
            lib: {
                "images": {"hires": image},
                "scalefactors": {"spot_diameter_fullres": 12.0, "tissue_hires_scalef": 1.0},
                "metadata": {},
            }
        }
        parts.append(part)
    return sepal.io.concat(parts)


@pytest.mark.parametrize("method", sorted(STAIN_NORMS))
def test_differently_stained_slides_look_alike_after_normalisation(method):
    adata = two_stainings()
    plain = PatchGeometry(patch_size=12, mean=(0.0, 0.0, 0.0), std=(1 / 255,) * 3)
    raw = SpotPatches(adata, geometry=plain).extract_batch(np.arange(32)).numpy()
    dataset = SpotPatches(adata, geometry=PatchGeometry(**{**plain.to_dict(), "stain_norm": method}))
    assert len(dataset.geometry.stain_target) == STAIN_NORMS[method]
    normalised = dataset.extract_batch(np.arange(32)).numpy()
    before = np.abs(raw[:16] - raw[16:]).mean()
    after = np.abs(normalised[:16] - normalised[16:]).mean()
    assert before > 25 and after < before / 4, (before, after)
    # One slide alone: its target is its own appearance, so a batch of one library goes through the same path.
    alone = SpotPatches(adata, geometry=dataset.geometry).extract_batch(np.arange(16)).numpy()
    np.testing.assert_allclose(alone, normalised[:16], atol=1e-3)


def test_geometry_with_stain_target_round_trips_and_is_checked():
    geometry = PatchGeometry(stain_norm="reinhard", stain_target=[50, 10, -20, 15, 5, 8])
    assert PatchGeometry.from_dict(geometry.to_dict()) == geometry
    assert PatchGeometry.from_dict({"patch_size": 32}).stain_norm is None  # files written before the option
    with pytest.raises(ValueError, match="stain_norm is None"):
        PatchGeometry(stain_target=[1.0] * 6)
    with pytest.raises(ValueError, match="not known"):
        PatchGeometry(stain_norm="vahadane")
    with pytest.raises(ValueError, match="must be 8 finite numbers"):
        PatchGeometry(stain_norm="macenko", stain_target=[1.0] * 6)


@pytest.mark.slow
def test_fit_encoder_saves_the_training_slides_target_and_predict_reuses_it(tmp_path):
    adata = two_stainings()
    adata.layers["expr"] = np.random.default_rng(0).normal(size=adata.shape).astype(np.float32)
    adata.obs["split"] = np.where(adata.obs["library_id"] == "pale", "train", "val")
    model = sepal.tl.fit_encoder(
        adata,
        layer="expr",
        backbone="resnet18",
        pretrained=False,
        patch_size=16,
        stain_norm="macenko",
        epochs=1,
        batch_size=8,
        device="cpu",
    )
    pale = SpotPatches(adata[adata.obs["library_id"] == "pale"], geometry=PatchGeometry(stain_norm="macenko"))
    np.testing.assert_allclose(model.geometry.stain_target, pale.geometry.stain_target)  # training slide only
    model.save(tmp_path / "m")
    assert sepal.tl.SepalModel.load(tmp_path / "m").geometry == model.geometry
    with pytest.raises(ValueError, match="pass stain_norm to sepal.tl.embed"):
        sepal.tl.fit_encoder(adata, layer="expr", embedding_key="X_sepal", stain_norm="macenko")
