"""Reader for 10x Genomics Visium HD binned outputs (``binned_outputs/square_008um`` ...)."""

from __future__ import annotations

import os
from pathlib import Path

from anndata import AnnData

from sepal_tl._logging import logger

from ._images import read_image
from ._visium import read_visium

BINNED = "binned_outputs"


def _bin_folder(outs: Path, bin_size: int) -> Path:
    binned = outs / BINNED
    if not binned.is_dir() and (outs / "outs" / BINNED).is_dir():
        outs, binned = outs / "outs", outs / "outs" / BINNED
    if not binned.is_dir():
        msg = (
            f"Visium HD binned outputs not found: {str(binned)!r} is not a directory. Pass Space Ranger's 'outs/' "
            f"folder of a Visium HD run (it holds {BINNED}/square_008um/ ...)."
        )
        raise FileNotFoundError(msg)
    folder = binned / f"square_{bin_size:03d}um"
    if not folder.is_dir():
        available = sorted(p.name for p in binned.iterdir() if p.is_dir() and p.name.startswith("square_"))
        msg = f"No {folder.name!r} in {str(binned)!r}; available bin sizes: {available}. Pass bin_size= naming one."
        raise FileNotFoundError(msg)
    return folder


def read_visium_hd(
    path: str | os.PathLike,
    *,
    bin_size: int = 8,
    library_id: str | None = None,
    fullres_image: str | os.PathLike | None = None,
) -> AnnData:
    """Read one bin size of a 10x Genomics Visium HD run: a square lattice of bins, each read as a spot.

    The bins of ``binned_outputs/square_{bin_size:03d}um/`` are read like Visium spots
    (:func:`sepal_tl.io.read_visium`): ``filtered_feature_bc_matrix.h5``, ``spatial/tissue_positions.parquet``
    and ``spatial/scalefactors_json.json``, whose ``spot_diameter_fullres`` is the bin's side in full-resolution
    pixels. ``array_row`` / ``array_col`` index the square grid of bins, so SEPAL's median filter, gene selection
    and spatial stage use its square lattice (4 edge neighbours). The hires / lowres images are taken from the
    bin folder's ``spatial/`` or, when absent there, from ``outs/spatial/``.

    To keep a model's patch size, use the bin size it was trained on (``uns["spatial"][lib]["metadata"]
    ["bin_size_um"]`` records it). spatialdata-io's ``visium_hd`` reader gives a SpatialData with one table per
    bin size; pass it to ``sepal.pp`` / ``sepal.tl`` / ``sepal.pl`` with ``table_key="square_008um"`` instead.

    Parameters
    ----------
    path
        Space Ranger's ``outs/`` folder of a Visium HD run (or the run folder that contains it).
    bin_size
        Bin side in µm: 2, 8 or 16 (a ``square_{bin_size:03d}um`` folder must exist).
    library_id
        Name of the slide; default ``f"{run folder name}_{bin_size}um"``.
    fullres_image
        Optional full-resolution image the bin coordinates refer to (see :func:`sepal_tl.io.read_visium`).

    Returns
    -------
    AnnData as :func:`sepal_tl.io.read_visium` returns it, with ``metadata["bin_size_um"]`` and
    ``metadata["microns_per_pixel"]`` in ``uns["spatial"][library_id]``.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.io.read_visium_hd("HD_run/outs", bin_size=16, fullres_image="HD_run/image.tif")
    """
    if not isinstance(bin_size, int) or bin_size < 1:
        msg = f"bin_size must be a positive integer (µm), got {bin_size!r}."
        raise ValueError(msg)
    root = Path(path)
    folder = _bin_folder(root, bin_size)
    outs = folder.parent.parent
    if library_id is None:
        library_id = f"{(outs.parent if outs.name == 'outs' else outs).resolve().name}_{bin_size}um"
    adata = read_visium(folder, library_id=library_id, fullres_image=fullres_image)
    entry = adata.uns["spatial"][library_id]
    scalefactors = entry["scalefactors"]
    stored = scalefactors.get("bin_size_um")
    if stored is not None and float(stored) != float(bin_size):
        msg = f"{folder}: scalefactors_json.json says bin_size_um={stored}, not {bin_size}."
        raise ValueError(msg)
    for res in ("hires", "lowres"):
        png = outs / "spatial" / f"tissue_{res}_image.png"
        if res not in entry["images"] and png.is_file():
            entry["images"][res] = read_image(png)
    entry["metadata"]["bin_size_um"] = bin_size
    if "microns_per_pixel" in scalefactors:
        entry["metadata"]["microns_per_pixel"] = float(scalefactors["microns_per_pixel"])
    logger.info("read %d bins of %d µm from %s", adata.n_obs, bin_size, folder)
    return adata
