"""Hostile images: damaged files are named, non-8-bit images are scaled by their dtype's range, a plain TIFF is
read at reduced size without decoding it whole, and spot_grid lays square lattices too.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import tifffile
from PIL import Image

import sepal_tl as sepal
from sepal_tl.io._images import (
    check_image_file,
    downscale,
    image_size,
    read_image,
    read_image_downscaled,
    to_rgb_uint8,
)


def _rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(path, array, **kwargs):
    if path.suffix in (".tif", ".tiff"):
        tifffile.imwrite(path, array, **kwargs)
    else:
        Image.fromarray(array).save(path, **kwargs)
    return path


@pytest.fixture(params=[".png", ".jpg", ".tif"])
def image_file(request, tmp_path):
    return _save(tmp_path / f"he{request.param}", _rgb(64, 48))


def _truncate(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("keep", [0.0, 0.02, 0.5, 0.9])
@pytest.mark.parametrize("reader", [read_image, check_image_file, lambda p: read_image_downscaled(p, max_side=16)])
def test_truncated_images_are_named(image_file, keep, reader):
    _truncate(image_file, keep)
    before = image_file.read_bytes()
    with pytest.raises(ValueError, match=image_file.name):
        reader(image_file)
    assert image_file.read_bytes() == before


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".tif", ".svs", ""])
@pytest.mark.parametrize("content", [b"just some text", b"", b"II*\x00broken tiff header"])
def test_non_images_are_named(tmp_path, suffix, content):
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(content)
    with pytest.raises(ValueError, match="not an image"):
        image_size(path)


def test_missing_image_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.png"):
        read_image(tmp_path / "missing.png")


def test_jpeg_with_trailing_garbage_warns(tmp_path, caplog):
    path = _save(tmp_path / "he.jpg", _rgb(32, 32))
    clean = read_image(path)
    path.write_bytes(path.read_bytes() + b"appended rubbish" * 10)
    with caplog.at_level(logging.WARNING, logger="sepal_tl"):
        image = read_image(path)
    assert "follow the end of the JPEG" in caplog.text and "he.jpg" in caplog.text
    np.testing.assert_array_equal(image, clean)  # the image itself is still the first one


def test_jpeg_with_padding_only_does_not_warn(tmp_path, caplog):
    path = _save(tmp_path / "he.jpg", _rgb(32, 32))
    path.write_bytes(path.read_bytes() + b"\x00\x00\n")
    with caplog.at_level(logging.WARNING, logger="sepal_tl"):
        read_image(path)
    assert "follow the end" not in caplog.text


def test_jpeg_without_end_marker_is_truncated_for_the_cli_check(tmp_path):
    path = _save(tmp_path / "he.jpg", _rgb(32, 32))
    data = path.read_bytes()
    path.write_bytes(data[: data.rindex(b"\xff\xd9")])
    with pytest.raises(ValueError, match="end-of-image"):
        check_image_file(path)


# -------------------------------------------------------------------------------------------- bit depth


@pytest.mark.parametrize(
    ("dtype", "value", "expected"),
    [
        (np.uint16, 65535, 255),
        (np.uint16, 32768, 128),
        (np.uint16, 257, 1),
        (np.uint16, 0, 0),
        (np.uint32, 2**32 - 1, 255),
        (np.int16, 32767, 255),
        (np.int16, -5, 0),
        (np.int32, -(2**31), 0),
        (np.uint8, 200, 200),
    ],
)
def test_integer_images_are_scaled_by_their_dtype_range(dtype, value, expected):
    assert to_rgb_uint8(np.full((2, 2), value, dtype=dtype))[0, 0, 0] == expected


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.int32])
def test_one_hot_pixel_does_not_darken_the_image(dtype):
    image = np.full((8, 8, 3), np.iinfo(dtype).max // 2, dtype=dtype)
    hot = image.copy()
    hot[0, 0] = np.iinfo(dtype).max
    np.testing.assert_array_equal(to_rgb_uint8(hot)[1:, 1:], to_rgb_uint8(image)[1:, 1:])
    assert 126 <= to_rgb_uint8(hot)[4, 4, 0] <= 128


def test_crops_of_a_16_bit_slide_convert_alike():
    slide = np.random.default_rng(0).integers(0, 4096, (20, 20, 3), dtype=np.uint16)  # 12-bit data
    slide[0, 0] = 65535
    whole = to_rgb_uint8(slide)
    np.testing.assert_array_equal(to_rgb_uint8(slide[5:, 5:]), whole[5:, 5:])


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_grey_files_by_dtype_range(tmp_path, suffix):
    grey = np.array([[0, 257], [32768, 65535]], dtype=np.uint16)
    path = _save(tmp_path / f"g{suffix}", grey)
    np.testing.assert_array_equal(read_image(path)[:, :, 0], [[0, 1], [128, 255]])


# ------------------------------------------------------------------------------- reduced-size TIFF reading


@pytest.mark.parametrize(
    "options",
    [{}, {"compression": "zlib"}, {"tile": (64, 64)}, {"compression": "zlib", "rowsperstrip": 7}],
    ids=["plain", "zlib-strips", "tiles", "zlib-rowsperstrip"],
)
@pytest.mark.parametrize("max_side", [40, 100, 190])
def test_plain_tiff_read_downscaled_matches_a_whole_decode(tmp_path, options, max_side):
    yy, xx = np.mgrid[:600, :400]
    image = np.stack([(yy // 3) % 256, (xx // 2) % 256, np.full_like(yy, 200)], axis=2).astype(np.uint8)
    path = _save(tmp_path / "big.tif", image, photometric="rgb", **options)
    small, scale = read_image_downscaled(path, max_side=max_side)
    expected = downscale(image, small.shape[:2])
    assert scale == pytest.approx(max_side / 600)
    assert small.shape == expected.shape
    # the strided read skips pixels before the antialiased resize: smooth content agrees closely
    assert np.abs(small.astype(int) - expected.astype(int)).mean() < 4


def test_strided_read_of_a_big_endian_tiff(tmp_path):
    image = np.random.default_rng(1).integers(0, 65535, (300, 200), dtype=np.uint16)
    path = _save(tmp_path / "be.tif", image, byteorder=">")
    small, _ = read_image_downscaled(path, max_side=50)
    expected = downscale(to_rgb_uint8(image[::3, ::3]), small.shape[:2])
    np.testing.assert_array_equal(small, expected)


# ----------------------------------------------------------------------------------------- spot_grid square


@pytest.fixture(scope="module")
def disc():
    yy, xx = np.mgrid[:400, :400]
    image = np.full((400, 400, 3), 245, dtype=np.uint8)
    image[(yy - 200) ** 2 + (xx - 200) ** 2 < 170**2] = (200, 120, 170)
    return image


def test_square_grid_has_legacy_st_neighbours(disc):
    he = sepal.io.spot_grid(disc, spot_diameter_px=20, geometry="square")
    pitch = he.uns["spatial"]["he"]["metadata"]["pitch_px"]
    assert pitch == pytest.approx(40.0)  # 2 x diameter, legacy ST's 200 um pitch for 100 um spots
    rows, cols = he.obs["array_row"].to_numpy(), he.obs["array_col"].to_numpy()
    assert {int(v) for v in (rows + cols) % 2} == {0, 1}  # both parities: a square lattice
    xy = he.obsm["spatial"]
    i, j = 0, np.flatnonzero((rows == rows[0]) & (cols == cols[0] + 1))
    if j.size:
        assert np.hypot(*(xy[j[0]] - xy[i])) == pytest.approx(pitch)
    from sepal_tl._graph import lattice_graph
    from sepal_tl._validation import resolve_libraries

    adjacency, geometry = lattice_graph(he, resolve_libraries(he, "library_id"))
    assert geometry == "square" and adjacency.sum(axis=1).max() == 4
    assert he.uns["sepal"]["io"]["spot_grid"]["geometry"] == "square"


def test_hex_grid_is_still_the_default(disc):
    he = sepal.io.spot_grid(disc, spot_diameter_px=20)
    assert ((he.obs["array_row"] + he.obs["array_col"]) % 2 == 0).all()
    assert he.uns["spatial"]["he"]["metadata"]["geometry"] == "hex"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"geometry": "hexagonal"}, ValueError, "geometry"),
        ({"geometry": None}, ValueError, "geometry"),
        ({"tissue_threshold": "0.1"}, TypeError, "tissue_threshold"),
        ({"min_tissue_fraction": "half"}, TypeError, "min_tissue_fraction"),
        ({"tissue_threshold": True}, TypeError, "tissue_threshold"),
        ({"spot_diameter_px": 0}, ValueError, "spot_diameter_px"),
        ({"spot_diameter_px": float("nan")}, ValueError, "spot_diameter_px"),
        ({"pitch_px": -4}, ValueError, "pitch_px"),
        ({"spot_diameter_px": 1000}, ValueError, "larger than the image"),
        ({"pitch_px": 0.01}, ValueError, "far more than any spot array"),
        ({"library_id": "a b"}, ValueError, "library_id"),
    ],
)
def test_spot_grid_bad_arguments(disc, kwargs, error, match):
    options = {"spot_diameter_px": 20, **kwargs}
    with pytest.raises(error, match=match):
        sepal.io.spot_grid(disc, **options)


def test_spot_grid_on_a_damaged_file_names_it(tmp_path, disc):
    path = _save(tmp_path / "he.png", disc)
    _truncate(path, 0.3)
    with pytest.raises(ValueError, match="he.png"):
        sepal.io.spot_grid(path, spot_diameter_px=20)
