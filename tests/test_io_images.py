from __future__ import annotations

import warnings

import numpy as np
import pytest
import tifffile
from PIL import Image

from sepal_tl.io import _images
from sepal_tl.io._images import (
    check_within_image,
    downscale,
    image_size,
    read_image,
    read_image_downscaled,
    scaled_size,
    to_rgb_uint8,
)


def _rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize("suffix", ["png", "jpg", "tif"])
def test_image_size_is_height_width(tmp_path, suffix):
    path = tmp_path / f"img.{suffix}"
    if suffix == "tif":
        tifffile.imwrite(path, _rgb(30, 50))
    else:
        Image.fromarray(_rgb(30, 50)).save(path)
    assert image_size(path) == (30, 50)


def test_read_png_drops_alpha(tmp_path):
    rgba = np.dstack([_rgb(20, 10), np.full((20, 10), 7, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8
    assert out.shape == (20, 10, 3)
    np.testing.assert_array_equal(out, rgba[:, :, :3])


def test_read_tiff_rgb_and_channel_first(tmp_path):
    rgb = _rgb(16, 24)
    tifffile.imwrite(tmp_path / "yxs.tif", rgb)
    np.testing.assert_array_equal(read_image(tmp_path / "yxs.tif"), rgb)
    tifffile.imwrite(tmp_path / "cyx.tif", np.moveaxis(rgb, 2, 0), photometric="rgb", planarconfig="separate")
    np.testing.assert_array_equal(read_image(tmp_path / "cyx.tif"), rgb)


def test_read_16bit_tiff_is_rescaled_by_the_dtype_range(tmp_path):
    grey = np.array([[0, 1000], [2000, 65535]], dtype=np.uint16)
    tifffile.imwrite(tmp_path / "g.tif", grey)
    out = read_image(tmp_path / "g.tif")
    assert out.shape == (2, 2, 3)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 4], [8, 255]])  # round(v * 255 / 65535)


def test_tiff_detected_by_content_not_suffix(tmp_path):
    path = tmp_path / "image.dat"
    tifffile.imwrite(path, _rgb(8, 9))
    assert image_size(path) == (8, 9)


def test_to_rgb_uint8_conversions():
    assert to_rgb_uint8(np.zeros((3, 4), bool)).shape == (3, 4, 3)
    floats = np.full((2, 2, 3), 0.5, dtype=np.float32)
    assert (to_rgb_uint8(floats) == 128).all()
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 2, 5)))


def test_scaled_size_and_downscale_antialias():
    (height, width), scale = scaled_size((3000, 1500), 2000)
    assert (height, width) == (2000, 1000)
    assert scale == pytest.approx(2000 / 3000)
    assert scaled_size((100, 50), 2000) == ((100, 50), 1.0)  # never enlarged

    checker = (np.indices((200, 200)).sum(axis=0) % 2 * 255).astype(np.uint8)
    small = downscale(np.dstack([checker] * 3), (20, 20))
    assert small.shape == (20, 20, 3)
    # antialiased: the 1-px checkerboard averages to grey instead of aliasing to black or white
    assert np.abs(small.astype(float) - 127.5).max() < 10


def test_read_image_downscaled_jpeg(tmp_path):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((1200, 800, 3), 90, np.uint8)).save(path, quality=95)
    small, scale = read_image_downscaled(path, max_side=300)
    assert small.shape == (300, 200, 3)
    assert scale == pytest.approx(0.25)
    assert np.abs(small.astype(int) - 90).max() <= 2


def test_read_image_downscaled_pyramidal_tiff(tmp_path):
    path = tmp_path / "pyr.tif"
    full = np.full((512, 256, 3), 50, np.uint8)
    with tifffile.TiffWriter(path) as tif:
        tif.write(full, subifds=1)
        tif.write(full[::4, ::4], subfiletype=1)
    small, scale = read_image_downscaled(path, max_side=100)
    assert small.shape == (100, 50, 3)
    assert scale == pytest.approx(100 / 512)


def test_pil_pixel_limit_lifted_locally(tmp_path, monkeypatch):
    path = tmp_path / "img.png"
    Image.fromarray(_rgb(40, 40)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # 1600 px > 2 * 100: Pillow refuses it
    with pytest.raises(Image.DecompressionBombError):
        Image.open(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert read_image(path).shape == (40, 40, 3)
        assert image_size(path) == (40, 40)
    assert Image.MAX_IMAGE_PIXELS == 100  # restored: no global change
    with _images.pil_pixel_limit_lifted(), _images.pil_pixel_limit_lifted():
        assert Image.MAX_IMAGE_PIXELS is None
    assert Image.MAX_IMAGE_PIXELS == 100


def test_missing_image_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        image_size(tmp_path / "nope.jpg")
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        read_image(tmp_path / "nope.jpg")


def test_check_within_image():
    coords = np.array([[0.0, 0.0], [50.0, 20.0]])
    check_within_image(coords, (20, 50), what="img")
    with pytest.raises(ValueError, match=r"1 of 2 spot centres fall outside img"):
        check_within_image(coords, (20, 49), what="img")
    check_within_image(coords, (20, 49), what="img", tolerance=1.0)
