from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from sepal_tl.io._image_sources import resolve_images
from sepal_tl.io._spot_grid import VISIUM_PITCH_PER_DIAMETER, spot_grid, tissue_mask
from sepal_tl.tl._patches import PatchGeometry, SpotPatches

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
C2_IMAGES = sorted((DATA / "her2st" / "ST-imgs" / "C" / "C2").glob("*.jpg"))
C2_SPOTS = DATA / "her2st" / "ST-spotfiles" / "C2_selection.tsv"

PINK = (225, 150, 200)
GLASS = (245, 244, 246)
CENTRE = (400.0, 300.0)  # x, y of the tissue disc
RADIUS = 200.0


def disc_image() -> np.ndarray:
    """800 x 600 white image with a pink tissue disc of radius 200 px centred at (400, 300)."""
    y, x = np.mgrid[0:600, 0:800] + 0.5
    image = np.empty((600, 800, 3), dtype=np.uint8)
    image[:] = GLASS
    image[np.hypot(x - CENTRE[0], y - CENTRE[1]) <= RADIUS] = PINK
    return image


def test_spot_grid_on_a_tissue_disc():
    image = disc_image()
    adata = spot_grid(image, spot_diameter_px=30, pitch_px=60, min_tissue_fraction=1.0, library_id="disc")
    n = adata.n_obs
    assert adata.shape == (n, 0) and 30 <= n <= 45  # disc area / hexagon cell area ≈ 40
    coords = adata.obsm["spatial"]
    assert coords.dtype == np.float64 and coords.shape == (n, 2)
    distance = np.hypot(coords[:, 0] - CENTRE[0], coords[:, 1] - CENTRE[1])
    assert distance.max() <= RADIUS - 15 + 1.5  # the whole spot disc lies in the tissue
    assert ((coords >= 0) & (coords <= [800, 600])).all()

    rows, cols = adata.obs["array_row"].to_numpy(), adata.obs["array_col"].to_numpy()
    assert ((rows + cols) % 2 == 0).all()
    # hex lattice: neighbours one pitch apart at (0, ±2) and (±1, ±1)
    lookup = {(r, c): i for i, (r, c) in enumerate(zip(rows, cols, strict=True))}
    pairs = [
        (i, lookup[(r + dr, c + dc)])
        for (r, c), i in lookup.items()
        for dr, dc in ((0, 2), (1, 1), (1, -1))
        if (r + dr, c + dc) in lookup
    ]
    assert len(pairs) > n
    steps = [np.hypot(*(coords[i] - coords[j])) for i, j in pairs]
    np.testing.assert_allclose(steps, 60.0, rtol=1e-9)
    assert list(adata.obs_names[:1]) == [f"disc_{rows[0]}_{cols[0]}"]
    assert (adata.obs["library_id"] == "disc").all() and (adata.obs["tissue_fraction"] == 1).all()

    entry = adata.uns["spatial"]["disc"]
    assert entry["scalefactors"] == {
        "spot_diameter_fullres": 30.0,
        "tissue_hires_scalef": 1.0,
        "tissue_lowres_scalef": 0.75,
    }
    assert entry["images"]["hires"].shape == (600, 800, 3) and entry["images"]["lowres"].shape == (450, 600, 3)
    assert entry["metadata"]["tissue_threshold"] == 0.15 and "source_image_path" not in entry["metadata"]
    assert adata.uns["sepal"]["io"]["spot_grid"]["pitch_px"] == 60.0

    looser = spot_grid(image, spot_diameter_px=30, pitch_px=60, min_tissue_fraction=0.2)
    assert looser.n_obs > n


def test_spot_grid_default_pitch_is_visiums():
    adata = spot_grid(disc_image(), spot_diameter_px=22)
    coords = adata.obsm["spatial"]
    nearest = cKDTree(coords).query(coords, k=2)[0][:, 1]
    np.testing.assert_allclose(nearest.min(), 22 * VISIUM_PITCH_PER_DIAMETER)
    assert adata.uns["spatial"]["he"]["metadata"]["pitch_px"] == pytest.approx(40.0)


def test_spot_grid_from_a_path_feeds_spot_patches(tmp_path):
    image = disc_image()
    path = tmp_path / "he.png"
    Image.fromarray(image).save(path)
    adata = spot_grid(path, spot_diameter_px=30, pitch_px=60, microns_per_pixel=1.8)
    from_array = spot_grid(image, spot_diameter_px=30, pitch_px=60)
    np.testing.assert_array_equal(adata.obsm["spatial"], from_array.obsm["spatial"])
    metadata = adata.uns["spatial"]["he"]["metadata"]
    assert metadata["source_image_path"] == str(path) and metadata["microns_per_pixel"] == 1.8

    source = resolve_images(adata)["he"]
    assert source.scale == 1.0 and str(path) in source.origin
    ds = SpotPatches(adata, geometry=PatchGeometry(patch_size=16))
    centre = int(np.argmin(np.hypot(*(adata.obsm["spatial"] - CENTRE).T)))
    np.testing.assert_array_equal(np.unique(ds.crop(centre).reshape(-1, 3), axis=0), [PINK])


def test_tissue_mask_ignores_specks_and_fills_holes():
    image = disc_image()
    image[300:306, 400:406] = GLASS  # a small hole in the tissue
    image[20:23, 20:23] = PINK  # a speck of dust on the glass
    mask = tissue_mask(image, spot_diameter_px=30)
    assert mask[303, 403] and not mask[21, 21]


def test_spot_grid_bad_input(tmp_path):
    image = disc_image()
    with pytest.raises(FileNotFoundError, match="missing.jpg"):
        spot_grid(tmp_path / "missing.jpg", spot_diameter_px=30)
    blank = np.full((300, 400, 3), 245, dtype=np.uint8)
    with pytest.raises(ValueError, match="No tissue.*tissue_threshold"):
        spot_grid(blank, spot_diameter_px=30)
    for diameter in (0, -5, float("nan"), float("inf"), "big", 700):
        with pytest.raises(ValueError, match="spot_diameter_px"):
            spot_grid(image, spot_diameter_px=diameter)
    with pytest.raises(ValueError, match="pitch_px"):
        spot_grid(image, spot_diameter_px=30, pitch_px=0)
    with pytest.raises(ValueError, match="pitch_px"):
        spot_grid(image, spot_diameter_px=30, pitch_px=0.01)
    with pytest.raises(ValueError, match="tissue_threshold"):
        spot_grid(image, spot_diameter_px=30, tissue_threshold=1.5)
    with pytest.raises(ValueError, match="min_tissue_fraction"):
        spot_grid(image, spot_diameter_px=30, min_tissue_fraction=0)
    with pytest.raises(ValueError, match="library_id"):
        spot_grid(image, spot_diameter_px=30, library_id="bad id")
    with pytest.raises(TypeError, match="path or"):
        spot_grid([[1, 2]], spot_diameter_px=30)


@pytest.mark.realdata
@pytest.mark.skipif(not C2_IMAGES or not C2_SPOTS.is_file(), reason="../shared/data/her2st C2 is not available")
def test_spot_grid_on_her2st_c2():
    pitch = 290.0  # legacy ST: 200 µm pitch, 100 µm spots; C2's spot file gives a 290 px pitch
    adata = spot_grid(C2_IMAGES[0], spot_diameter_px=145.0, pitch_px=pitch, library_id="C2")
    spots = pd.read_csv(C2_SPOTS, sep="\t")
    real = spots.loc[spots["selected"] == 1, ["pixel_x", "pixel_y"]].to_numpy()
    assert 180 <= adata.n_obs <= 600  # the same order as the 187 real spots
    distance, _ = cKDTree(adata.obsm["spatial"]).query(real)
    assert (distance < pitch).mean() >= 0.9
    back, _ = cKDTree(real).query(adata.obsm["spatial"])
    assert (back < pitch).mean() >= 0.8  # virtual spots lie on the tissue the real array covered
