from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from anndata import AnnData
from PIL import Image
from scipy import sparse

import sepal_tl as sepal
from sepal_tl.io._image_sources import PAD_VALUE, ImageSource, resolve_images
from sepal_tl.tl._patches import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    PatchGeometry,
    SpotPatches,
    eight_symmetries,
    preprocess_patches,
    symmetry,
)

pytestmark = [
    pytest.mark.filterwarnings("ignore:zarr v3 autosharding:UserWarning"),
    pytest.mark.filterwarnings("ignore:Call to deprecated class Scaler:DeprecationWarning"),
]

BACKGROUND = (200, 200, 200)
MARKER = (255, 0, 0)


def spot_adata(
    coords, *, diameter: float = 20.0, images: dict | None = None, scalefactors: dict | None = None, lib: str = "s1"
) -> AnnData:
    """One library with spots at ``coords`` (x, y full-res px) and the given ``uns`` images."""
    coords = np.asarray(coords, dtype=float)
    adata = AnnData(
        sparse.csr_matrix(np.arange(len(coords) * 2, dtype=np.float32).reshape(-1, 2)),
        obs=pd.DataFrame(
            {"library_id": pd.Categorical([lib] * len(coords))}, index=[f"{lib}_{i}" for i in range(len(coords))]
        ),
    )
    adata.obsm["spatial"] = coords
    adata.obs["array_row"] = np.arange(len(coords))
    adata.obs["array_col"] = np.arange(len(coords)) % 2
    adata.uns["spatial"] = {
        lib: {
            "images": images or {},
            "scalefactors": {"spot_diameter_fullres": diameter, **(scalefactors or {})},
            "metadata": {},
        }
    }
    return adata


def marker_image() -> np.ndarray:
    """100 x 120 grey image with a 4 x 4 red marker covering rows 48..51 and columns 60..63 (centre x=62, y=50)."""
    image = np.empty((100, 120, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    image[48:52, 60:64] = MARKER
    return image


def block_image(seed: int = 0) -> np.ndarray:
    """64 x 64 image of random colours constant over 8 x 8 blocks, and its exact 2x reduction."""
    blocks = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return blocks.repeat(8, axis=0).repeat(8, axis=1)


def noise_image(shape=(80, 80), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


def expected_constant(colour, size: int) -> torch.Tensor:
    values = (torch.tensor(colour, dtype=torch.float32) / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(
        IMAGENET_STD
    )
    return values.view(3, 1, 1).expand(3, size, size)


# --- cropping ------------------------------------------------------------------------------------------------


def test_crop_known_answer_marker_at_centre():
    image = marker_image()
    source = ImageSource(image, 1.0, "s1")
    crop = source.crop(x0=62 - 10, y0=50 - 10, side=20)
    assert crop.shape == (20, 20, 3) and crop.dtype == np.uint8
    np.testing.assert_array_equal(crop, image[40:60, 52:72])
    assert tuple(crop[10, 10]) == MARKER and tuple(crop[9, 9]) == MARKER
    assert tuple(crop[0, 0]) == BACKGROUND

    adata = spot_adata(
        [[62.0, 50.0]], diameter=20.0, images={"hires": image}, scalefactors={"tissue_hires_scalef": 1.0}
    )
    ds = SpotPatches(adata, geometry=PatchGeometry(patch_size=20))
    np.testing.assert_array_equal(ds.crop(0), crop)
    patch = ds[0]
    torch.testing.assert_close(patch[:, 10, 10], expected_constant(MARKER, 1)[:, 0, 0])


def test_half_resolution_source_gives_the_same_patch():
    full = block_image()
    half = full[::2, ::2].copy()  # exact 2x reduction: blocks are constant over 2 x 2 pixels
    full_source, half_source = ImageSource(full, 1.0, "s1"), ImageSource(half, 0.5, "s1")
    np.testing.assert_array_equal(half_source.crop(16, 8, 32), full_source.crop(16, 8, 32)[::2, ::2])
    np.testing.assert_array_equal(full_source.crop(16, 8, 32), full[8:40, 16:48])

    coords = [[32.0, 24.0], [40.0, 40.0]]
    geometry = PatchGeometry(patch_size=16)
    a = SpotPatches(spot_adata(coords, diameter=32.0), {"s1": full}, geometry)
    b = SpotPatches(spot_adata(coords, diameter=32.0), {"s1": (half, 0.5)}, geometry)
    assert a.crop(0).shape == (32, 32, 3) and b.crop(0).shape == (16, 16, 3)
    pa, pb = a.extract_batch([0, 1]), b.extract_batch([0, 1])
    # the 2x antialiased reduction only mixes pixels across block edges: block interiors are identical
    interior = torch.tensor([j % 4 in (1, 2) for j in range(16)])
    torch.testing.assert_close(pa[..., interior, :][..., interior], pb[..., interior, :][..., interior])
    assert (pa - pb).abs().mean() < 0.2


def test_border_spots_are_padded_not_dropped():
    image = marker_image()
    coords = [[0.0, 0.0], [119.0, 99.0], [62.0, 50.0]]
    adata = spot_adata(coords, diameter=20.0, images={"hires": image}, scalefactors={"tissue_hires_scalef": 1.0})
    ds = SpotPatches(adata, geometry=PatchGeometry(patch_size=20))
    assert len(ds) == 3
    corner = ds.crop(0)  # window [-10, 10) x [-10, 10): the top-left quarter is outside
    assert (corner[:10, :] == PAD_VALUE).all() and (corner[:, :10] == PAD_VALUE).all()
    np.testing.assert_array_equal(corner[10:, 10:], image[:10, :10])
    far = ds.crop(1)  # window [109, 129) x [89, 109)
    np.testing.assert_array_equal(far[:11, :11], image[89:, 109:])
    assert (far[11:] == PAD_VALUE).all() and (far[:, 11:] == PAD_VALUE).all()
    assert (ImageSource(image, 1.0, "s1").crop(500, 500, 20) == PAD_VALUE).all()
    patches = ds.extract_batch([0, 1, 2])
    assert patches.shape == (3, 3, 20, 20) and torch.isfinite(patches).all()
    torch.testing.assert_close(patches[0, :, 0, 0], expected_constant((PAD_VALUE,) * 3, 1)[:, 0, 0])


@pytest.mark.parametrize("diameter", [12.0, 40.0])  # window enlarged and reduced to 24 px
def test_constant_image_gives_the_normalised_constant(diameter):
    colour = (180, 90, 140)
    image = np.empty((60, 60, 3), dtype=np.uint8)
    image[:] = colour
    adata = spot_adata(
        [[30.0, 30.0]], diameter=diameter, images={"hires": image}, scalefactors={"tissue_hires_scalef": 1.0}
    )
    patch = SpotPatches(adata, geometry=PatchGeometry(patch_size=24))[0]
    assert patch.shape == (3, 24, 24) and patch.dtype == torch.float32
    torch.testing.assert_close(patch, expected_constant(colour, 24), rtol=0, atol=1e-6)


def test_preprocess_patches_resizes_with_antialiasing():
    stripes = np.zeros((32, 32, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-pixel stripes: a 4x reduction must average them to grey, not alias
    out = preprocess_patches(stripes, PatchGeometry(patch_size=8, mean=(0, 0, 0), std=(1, 1, 1)))
    assert out.shape == (3, 8, 8)
    assert torch.allclose(out[:, 2:-2, 2:-2], torch.full((3, 4, 4), 0.5), atol=0.05)
    with pytest.raises(ValueError, match="uint8"):
        preprocess_patches(stripes.astype(np.float32))


def test_preprocess_patches_symmetries_and_views():
    crops = noise_image((20, 20), seed=3)[None].repeat(3, axis=0)
    geometry = PatchGeometry(patch_size=12)
    plain = preprocess_patches(crops, geometry)
    turned = preprocess_patches(crops, geometry, symmetries=[0, 3, 6])
    for j, k in enumerate([0, 3, 6]):
        torch.testing.assert_close(turned[j], symmetry(plain[j], k), rtol=0, atol=0)
    view = np.rot90(crops[0])  # negative strides
    torch.testing.assert_close(preprocess_patches(view, geometry), preprocess_patches(view.copy(), geometry))
    with pytest.raises(ValueError, match="symmetries"):
        preprocess_patches(crops, geometry, symmetries=[0, 8, 1])


# --- augmentations -------------------------------------------------------------------------------------------


def symmetries_by_hand(patch: torch.Tensor) -> list[torch.Tensor]:
    rotations = [torch.rot90(patch, k, dims=(1, 2)) for k in range(4)]
    return rotations + [torch.flip(r, dims=(2,)) for r in rotations]


def test_augmentations_only_in_train_mode_and_only_the_eight_symmetries():
    image = noise_image()
    adata = spot_adata(
        [[40.0, 40.0], [30.0, 45.0]], diameter=16.0, images={"hires": image}, scalefactors={"tissue_hires_scalef": 1.0}
    )
    geometry = PatchGeometry(patch_size=16)
    plain = SpotPatches(adata, geometry=geometry)
    reference = plain[0]
    for _ in range(3):
        torch.testing.assert_close(plain[0], reference, rtol=0, atol=0)

    candidates = symmetries_by_hand(reference)
    assert len({c.numpy().tobytes() for c in candidates}) == 8
    torch.testing.assert_close(eight_symmetries(reference[None])[:, 0], torch.stack(candidates), rtol=0, atol=0)
    train = SpotPatches(adata, geometry=geometry, train=True, random_state=1)
    seen = set()
    for _ in range(10):
        batch = train.extract_batch([0] * 8)
        for patch in batch:
            match = [k for k, c in enumerate(candidates) if torch.equal(patch, c)]
            assert len(match) == 1
            seen.add(match[0])
    assert seen == set(range(8))  # every symmetry is drawn, per sample

    train.train = False
    torch.testing.assert_close(train[0], reference, rtol=0, atol=0)


def test_augmentations_are_reproducible_from_the_seed():
    image = noise_image()
    adata = spot_adata(
        [[40.0, 40.0], [30.0, 45.0], [50, 30]],
        diameter=16.0,
        images={"hires": image},
        scalefactors={"tissue_hires_scalef": 1.0},
    )
    geometry = PatchGeometry(patch_size=16)

    def draws(seed):
        ds = SpotPatches(adata, geometry=geometry, train=True, random_state=seed)
        return torch.cat([ds.extract_batch([0, 1, 2]) for _ in range(4)])

    torch.testing.assert_close(draws(3), draws(3), rtol=0, atol=0)
    assert not torch.equal(draws(3), draws(4))


def test_pickled_dataset_continues_the_same_augmentations():
    # DataLoader workers started by spawn / forkserver receive a pickled dataset (torch.Generator is not pickled)
    adata = spot_adata(
        [[40.0, 40.0], [30.0, 45.0]],
        diameter=16.0,
        images={"hires": noise_image()},
        scalefactors={"tissue_hires_scalef": 1.0},
    )
    ds = SpotPatches(adata, geometry=PatchGeometry(patch_size=8), train=True, random_state=7)
    ds.extract_batch([0, 1])
    clone = pickle.loads(pickle.dumps(ds))
    assert not isinstance(ds.__getstate__()["_generator"], torch.Generator)
    torch.testing.assert_close(clone.extract_batch([0, 1, 0, 1]), ds.extract_batch([0, 1, 0, 1]), rtol=0, atol=0)


def test_symmetry_helpers():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    out = eight_symmetries(x)
    assert out.shape == (8, 2, 3, 4, 4)
    assert torch.equal(out[0], x) and symmetry(x, 0) is x
    assert len({out[k].numpy().tobytes() for k in range(8)}) == 8
    torch.testing.assert_close(out[5], torch.flip(torch.rot90(x, 1, dims=(-2, -1)), dims=(-1,)))
    with pytest.raises(ValueError, match="0..7"):
        symmetry(x, 8)


# --- dataset ----------------------------------------------------------------------------------------------------


def test_dataset_targets_indices_and_dataloader():
    adata = spot_adata(
        [[20.0, 20.0], [40.0, 40.0], [60.0, 30.0], [30.0, 60.0]],
        diameter=16.0,
        images={"hires": noise_image()},
        scalefactors={"tissue_hires_scalef": 1.0},
    )
    targets = np.arange(8, dtype=np.float64).reshape(4, 2)
    ds = SpotPatches(adata, geometry=PatchGeometry(patch_size=8), indices=[3, 1], targets=targets)
    assert len(ds) == 2 and list(ds.obs_names) == ["s1_3", "s1_1"]
    patch, target = ds[0]
    assert patch.shape == (3, 8, 8)
    torch.testing.assert_close(target, torch.tensor([6.0, 7.0]))
    np.testing.assert_array_equal(ds.crop(1), SpotPatches(adata, geometry=PatchGeometry(patch_size=8)).crop(1))

    sparse_ds = SpotPatches(
        adata, geometry=PatchGeometry(patch_size=8), indices=np.array([False, True, False, True]), targets="X"
    )
    torch.testing.assert_close(sparse_ds.targets, torch.tensor(adata.X.toarray()[[1, 3]]))
    with pytest.raises(ValueError, match="one row per spot"):
        SpotPatches(adata, targets=targets[:2])

    loader = torch.utils.data.DataLoader(ds, batch_size=2)
    patches, batch_targets = next(iter(loader))
    assert patches.shape == (2, 3, 8, 8) and batch_targets.shape == (2, 2)
    torch.testing.assert_close(patches, ds.extract_batch([0, 1])[0])


def test_dataloader_with_a_worker_process():
    adata = spot_adata(
        [[20.0, 20.0], [40.0, 40.0], [60.0, 30.0]],
        diameter=16.0,
        images={"hires": noise_image()},
        scalefactors={"tissue_hires_scalef": 1.0},
    )
    ds = SpotPatches(adata, geometry=PatchGeometry(patch_size=8), targets="X", train=True)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=1, generator=torch.Generator().manual_seed(0))
    patches, targets = next(iter(loader))
    assert patches.shape == (3, 3, 8, 8) and targets.shape == (3, 2)


def test_several_libraries_with_different_window_sizes():
    a = spot_adata(
        [[20.0, 20.0]],
        diameter=16.0,
        images={"hires": noise_image(seed=1)},
        scalefactors={"tissue_hires_scalef": 1.0},
        lib="a",
    )
    b = spot_adata(
        [[40.0, 40.0], [30.0, 30.0]],
        diameter=30.0,
        images={"hires": noise_image(seed=2)},
        scalefactors={"tissue_hires_scalef": 0.5},
        lib="b",
    )
    adata = sepal.io.concat([a, b])
    ds = SpotPatches(adata, geometry=PatchGeometry(patch_size=8))
    assert ds.window_sides == {"a": 16.0, "b": 30.0}
    assert ds.crop(0).shape == (16, 16, 3) and ds.crop(1).shape == (15, 15, 3)
    batch = ds.extract_batch([2, 0, 1])
    for j, i in enumerate([2, 0, 1]):
        torch.testing.assert_close(batch[j], ds[i])


def test_only_the_libraries_in_indices_need_images():
    a = spot_adata(
        [[20.0, 20.0], [30.0, 30.0]],
        diameter=16.0,
        images={"hires": noise_image(seed=1)},
        scalefactors={"tissue_hires_scalef": 1.0},
        lib="a",
    )
    b = spot_adata([[40.0, 40.0]], diameter=30.0, lib="b")  # no image
    adata = sepal.io.concat([a, b])
    targets = pd.DataFrame(np.arange(6).reshape(3, 2), index=adata.obs_names[::-1])
    ds = SpotPatches(
        adata, indices=adata.obs["library_id"] == "a", targets=targets, geometry=PatchGeometry(patch_size=8)
    )
    assert list(ds.sources) == ["a"] and len(ds) == 2
    torch.testing.assert_close(ds[1][1], torch.tensor([2.0, 3.0]))  # rows by position, not by label
    with pytest.raises(KeyError, match="'b'"):
        SpotPatches(adata)


def test_patch_geometry_round_trip_and_validation():
    geometry = PatchGeometry(patch_scale=3.0, patch_size=112)
    assert PatchGeometry.from_dict(geometry.to_dict()) == geometry
    assert PatchGeometry.from_dict({"patch_size": 64}) == PatchGeometry(patch_size=64)
    adata = spot_adata([[10.0, 10.0]], diameter=20.0)
    assert geometry.window_side(adata, "s1") == 60.0
    for bad in (
        {"patch_scale": 0},
        {"patch_scale": float("nan")},
        {"patch_size": 0},
        {"patch_size": 2.5},
        {"std": (1, 0, 1)},
    ):
        with pytest.raises(ValueError):
            PatchGeometry(**bad)
    with pytest.raises(ValueError, match="Unknown"):
        PatchGeometry.from_dict({"patch_sise": 3})
    del adata.uns["spatial"]["s1"]["scalefactors"]["spot_diameter_fullres"]
    with pytest.raises(KeyError, match="spot_diameter_fullres"):
        geometry.window_side(adata, "s1")


# --- image sources ----------------------------------------------------------------------------------------------


def two_image_adata(tmp_path: Path, *, with_path: bool) -> tuple[AnnData, np.ndarray]:
    full = noise_image((90, 110), seed=5)
    hires = full[::2, ::2].copy()
    adata = spot_adata(
        [[30.0, 30.0], [80.0, 60.0]],
        diameter=20.0,
        images={"hires": hires, "lowres": full[::5, ::5].copy()},
        scalefactors={"tissue_hires_scalef": 0.5, "tissue_lowres_scalef": 0.2},
    )
    if with_path:
        path = tmp_path / "full.png"
        Image.fromarray(full).save(path)
        adata.uns["spatial"]["s1"]["metadata"]["source_image_path"] = str(path)
    return adata, full


def test_resolve_images_from_uns(tmp_path):
    adata, full = two_image_adata(tmp_path, with_path=False)
    auto = resolve_images(adata)["s1"]
    assert auto.scale == 0.5 and auto.shape == (45, 55)
    np.testing.assert_array_equal(auto.crop(20, 20, 20), full[20:40:2, 20:40:2])
    assert resolve_images(adata, "lowres")["s1"].scale == 0.2
    assert resolve_images(adata, "hires")["s1"].scale == 0.5


def test_resolve_images_prefers_the_full_resolution_file(tmp_path):
    adata, full = two_image_adata(tmp_path, with_path=True)
    source = resolve_images(adata)["s1"]
    assert source.scale == 1.0 and source.shape == (90, 110) and "full.png" in source.origin
    np.testing.assert_array_equal(source.crop(20, 10, 30), full[10:40, 20:50])
    assert source.in_memory  # PNG: decoded once and kept
    adata.uns["spatial"]["s1"]["metadata"]["source_image_path"] = str(tmp_path / "moved.png")
    assert resolve_images(adata)["s1"].scale == 0.5  # stale path: falls back to hires


@pytest.mark.parametrize("kind", ["png", "tiff", "tiff-tiled-zlib", "tiff-planar"])
def test_resolve_images_from_paths(tmp_path, kind):
    adata, full = two_image_adata(tmp_path, with_path=False)
    path = tmp_path / f"image.{'png' if kind == 'png' else 'tif'}"
    if kind == "png":
        Image.fromarray(full).save(path)
    elif kind == "tiff":
        tifffile.imwrite(path, full)
    elif kind == "tiff-tiled-zlib":
        tifffile.imwrite(path, full, tile=(32, 32), compression="zlib")
    else:
        tifffile.imwrite(
            path, np.ascontiguousarray(full.transpose(2, 0, 1)), planarconfig="separate", photometric="rgb"
        )
    for image in (path, str(path), {"s1": path}, {"s1": (path, 1.0)}):
        source = resolve_images(adata, image)["s1"]
        assert source.scale == 1.0 and source.shape == (90, 110)
        np.testing.assert_array_equal(source.crop(20, 10, 30), full[10:40, 20:50])
        np.testing.assert_array_equal(source.crop(-5, 80, 20)[:10, 5:], full[80:90, :15])
        assert not source.in_memory if kind.startswith("tiff") else source.in_memory
        clone = pickle.loads(pickle.dumps(source))
        np.testing.assert_array_equal(clone.crop(20, 10, 30), full[10:40, 20:50])


def test_resolve_images_from_dict_of_arrays(tmp_path):
    adata, full = two_image_adata(tmp_path, with_path=False)
    assert resolve_images(adata, {"s1": full})["s1"].scale == 1.0
    half = resolve_images(adata, {"s1": (full[::2, ::2], 0.5)})["s1"]
    np.testing.assert_array_equal(half.crop(20, 20, 20), full[20:40:2, 20:40:2])
    given = ImageSource(full, 1.0, "s1")
    assert resolve_images(adata, {"s1": given})["s1"] is given
    with pytest.raises(KeyError, match="'s1'.*image="):
        resolve_images(adata, {"other": full})


@pytest.mark.parametrize("with_path", [True, False])
def test_resolve_images_from_spatialdata(tmp_path, with_path):
    adata, full = two_image_adata(tmp_path, with_path=with_path)
    sdata = sepal.io.to_spatialdata(adata)
    source = resolve_images(adata, sdata)["s1"]
    if with_path:
        assert source.scale == 1.0 and "s1_full_image" in source.origin
        np.testing.assert_array_equal(source.crop(20, 10, 30), full[10:40, 20:50])
    else:
        assert source.scale == pytest.approx(0.5) and "s1_hires_image" in source.origin
        np.testing.assert_array_equal(source.crop(20, 20, 20), full[20:40:2, 20:40:2])
    element = resolve_images(adata, {"s1": sdata.images["s1_hires_image"]})["s1"]
    assert element.scale == pytest.approx(0.5)
    ds = SpotPatches(adata, sdata, PatchGeometry(patch_size=8))
    assert ds.extract_batch([0, 1]).shape == (2, 3, 8, 8)


def test_resolve_images_cache_dir_memory_maps_decoded_images(tmp_path):
    adata, full = two_image_adata(tmp_path, with_path=True)
    cache = tmp_path / "cache"
    source = resolve_images(adata, cache_dir=cache)["s1"].load()
    assert not source.in_memory and len(list(cache.glob("*.npy"))) == 1
    np.testing.assert_array_equal(source.crop(20, 10, 30), full[10:40, 20:50])
    again = resolve_images(adata, cache_dir=cache)["s1"].load()
    np.testing.assert_array_equal(again.crop(0, 0, 90), source.crop(0, 0, 90))
    assert len(list(cache.glob("*.npy"))) == 1


def test_resolve_images_errors(tmp_path):
    adata, full = two_image_adata(tmp_path, with_path=False)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        resolve_images(adata, tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError):
        resolve_images(adata, {"s1": str(tmp_path / "missing.tif")})
    bare = spot_adata([[10.0, 10.0]])
    with pytest.raises(KeyError, match=r"'s1'.*image="):
        resolve_images(bare)
    with pytest.raises(KeyError, match="hires"):
        resolve_images(bare, "hires")
    with pytest.raises(KeyError, match="image="):
        SpotPatches(bare)
    with pytest.raises(ValueError, match="outside"):  # the hires image passed as if it were full resolution
        resolve_images(adata, {"s1": full[::4, ::4]})
    with pytest.raises(TypeError, match="image="):
        resolve_images(adata, 3.5)
    two = sepal.io.concat([spot_adata([[5.0, 5.0]], lib="a"), spot_adata([[5.0, 5.0]], lib="b")])
    path = tmp_path / "x.png"
    Image.fromarray(full).save(path)
    with pytest.raises(ValueError, match="dict"):
        resolve_images(two, path)


def test_stain_deconvolution_matrices_and_jitter_properties():
    from sepal_tl.tl._stain import HED_FROM_RGB, RGB_FROM_HED, hed_jitter

    np.testing.assert_allclose(HED_FROM_RGB @ RGB_FROM_HED, np.eye(3), atol=1e-12)
    rng = np.random.default_rng(0)
    patches = rng.uniform(20, 250, size=(6, 3, 8, 8)).astype(np.float32)
    same = patches.copy()
    hed_jitter(same, 0.0, torch.Generator().manual_seed(0))
    np.testing.assert_array_equal(same, patches)  # sigma 0: off
    small, large = patches.copy(), patches.copy()
    hed_jitter(small, 0.02, torch.Generator().manual_seed(0))
    hed_jitter(large, 0.2, torch.Generator().manual_seed(0))
    assert small.min() >= 0 and large.max() <= 255
    change_small, change_large = np.abs(small - patches).mean(), np.abs(large - patches).mean()
    assert 0 < change_small < change_large
    per_patch = np.abs(large - patches).mean(axis=(1, 2, 3))
    assert len(np.unique(per_patch.round(4))) == len(per_patch)  # one draw per patch
    # a pixel made of haematoxylin alone stays on the haematoxylin ray when only its scale changes
    h_only = np.exp(-1.0 * RGB_FROM_HED[0])[None, :, None, None] * 255 * np.ones((1, 3, 2, 2))
    density = -np.log(h_only[0, :, 0, 0] / 255)
    np.testing.assert_allclose(density @ HED_FROM_RGB, [1.0, 0.0, 0.0], atol=1e-9)


def test_stain_jitter_only_in_train_mode_and_checked():
    adata = spot_adata(
        [[40.0, 40.0], [30.0, 45.0]],
        diameter=16.0,
        images={"hires": noise_image()},
        scalefactors={"tissue_hires_scalef": 1.0},
    )
    geometry = PatchGeometry(patch_size=16)
    plain = SpotPatches(adata, geometry=geometry, train=True, random_state=1).extract_batch([0, 1])
    jittered = SpotPatches(adata, geometry=geometry, train=True, random_state=1, stain_jitter=0.1).extract_batch([0, 1])
    assert not torch.allclose(plain, jittered)  # same symmetries, other colours
    evaluation = SpotPatches(adata, geometry=geometry, stain_jitter=0.1).extract_batch([0, 1])
    torch.testing.assert_close(evaluation, SpotPatches(adata, geometry=geometry).extract_batch([0, 1]))
    for bad in (-0.1, 1.5, "0.05", True):
        with pytest.raises(ValueError, match="stain_jitter"):
            SpotPatches(adata, geometry=geometry, stain_jitter=bad)
