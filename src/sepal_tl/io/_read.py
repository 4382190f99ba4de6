"""One entry point for every layout sepal reads: :func:`read`."""

from __future__ import annotations

import os
from pathlib import Path

from anndata import AnnData, read_h5ad

from sepal_tl._docs import inject_docs
from sepal_tl._sdata import is_spatialdata
from sepal_tl._validation import resolve_libraries

from ._hest import read_hest
from ._spatialdata import from_spatialdata
from ._visium import read_visium
from ._visium_hd import BINNED, read_visium_hd


def read(path: str | os.PathLike, **kwargs):
    """Read spots from ``path``, choosing the reader from its layout.

    - ``*.zarr``: a SpatialData store (:func:`spatialdata.read_zarr`), returned as SpatialData (every ``sepal``
      function takes it);
    - ``st/{id}.h5ad`` next to ``wsis/`` and ``metadata/``: a HEST-1k sample (:func:`read_hest`);
    - any other ``*.h5ad``: :func:`anndata.read_h5ad`;
    - a folder with ``binned_outputs/``: Visium HD (:func:`read_visium_hd`);
    - another folder: Visium's Space Ranger ``outs/`` (:func:`read_visium`).

    Parameters
    ----------
    path
        File or folder.
    **kwargs
        Passed to the reader.

    Returns
    -------
    AnnData, or SpatialData for ``.zarr``.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> adata.write_h5ad("slides.h5ad")
    >>> sepal.io.read("slides.h5ad").shape  # .h5ad: anndata's reader
    (40, 10)
    >>> sepal.io.to_spatialdata(adata).write("slides.zarr")
    >>> type(sepal.io.read("slides.zarr")).__name__  # .zarr: a SpatialData object
    'SpatialData'
    """
    path = Path(path)
    if not path.exists():
        msg = f"{str(path)!r} does not exist; pass a .h5ad file, a SpatialData .zarr store or a Space Ranger folder."
        raise FileNotFoundError(msg)
    if path.suffix == ".zarr":
        import spatialdata as sd

        return sd.read_zarr(path, **kwargs)
    if path.suffix == ".h5ad":
        return read_hest(path, **kwargs) if _is_hest(path) else read_h5ad(path, **kwargs)
    if path.is_dir():
        if (path / BINNED).is_dir() or (path / "outs" / BINNED).is_dir():
            return read_visium_hd(path, **kwargs)
        return read_visium(path, **kwargs)
    msg = f"Cannot tell how to read {str(path)!r}: expected a .h5ad file, a .zarr store or a Space Ranger folder."
    raise ValueError(msg)


__all__ = ["read", "read_anndata", "read_spots"]


@inject_docs
def read_anndata(path: str | os.PathLike, *, library_id: str | None = None, table_key: str | None = None) -> AnnData:
    """:func:`read` as an AnnData: a SpatialData store goes through :func:`from_spatialdata`.

    Used by ``sepal run`` configurations (``reader = "files"``).

    Parameters
    ----------
    path
        File or folder, as for :func:`read`.
    library_id
        Names the slide for the readers that take one (HEST, Visium, Visium HD); a ``.h5ad`` or ``.zarr`` must
        hold exactly that one library.
    table_key
        %(table_key)s

    Returns
    -------
    The spots as a spatial AnnData (scanpy layout).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> sepal.io.to_spatialdata(adata).write("slides.zarr")
    >>> back = sepal.io.read_anndata("slides.zarr")  # the SpatialData store as an AnnData
    >>> back.shape, list(back.uns["spatial"])
    ((40, 10), ['slide0', 'slide1'])
    """
    path = Path(path)
    takes_id = path.suffix not in (".h5ad", ".zarr") or _is_hest(path)
    data = read(path, **({"library_id": library_id} if takes_id and library_id is not None else {}))
    adata = from_spatialdata(data, table_key=table_key) if is_spatialdata(data) else data
    if library_id is not None and not takes_id:
        found = sorted(set(resolve_libraries(adata).astype(str)))
        if found != [str(library_id)]:
            msg = f"{str(path)!r} holds the libraries {found}, not only library_id={library_id!r}."
            raise ValueError(msg)
    return adata


def _is_hest(path: Path) -> bool:
    """Whether ``path`` is a HEST sample's ``st/{id}.h5ad`` (next to ``wsis/`` and ``metadata/``)."""
    hest_dir = path.resolve().parent.parent
    return (
        path.suffix == ".h5ad"
        and path.parent.name == "st"
        and (hest_dir / "wsis").is_dir()
        and (hest_dir / "metadata").is_dir()
    )


@inject_docs
def read_spots(path: str | os.PathLike, *, table_key: str | None = None) -> AnnData:
    """The spots of a ``.h5ad`` or SpatialData ``.zarr`` without their genes: the input of an H&E-only prediction.

    ``sepal predict`` uses it.

    Parameters
    ----------
    path
        A ``.h5ad`` file or a SpatialData ``.zarr`` store (or any layout :func:`read` knows).
    table_key
        %(table_key)s

    Returns
    -------
    An AnnData with no genes: coordinates, spot sizes and images are kept (a ``.zarr``'s through
    :func:`from_spatialdata`: its hires image, or the full-resolution file named in
    ``metadata["source_image_path"]``).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=20, n_genes=10, pitch_px=32, random_state=0)
    >>> adata.write_h5ad("slides.h5ad")
    >>> spots = sepal.io.read_spots("slides.h5ad")  # what an H&E-only prediction needs
    >>> spots.shape, spots.obsm["spatial"].shape  # no genes
    ((40, 0), (40, 2))
    """
    adata = read_anndata(path, table_key=table_key)
    return adata[:, []].copy()
