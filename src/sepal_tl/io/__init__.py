"""Reading slides into AnnData and converting to and from SpatialData.

- :func:`read_visium`: 10x Genomics Visium (Space Ranger ``outs/``).
- :func:`read_visium_hd`: Visium HD binned outputs (a square lattice of bins, one bin size).
- :func:`read_st`: legacy Spatial Transcriptomics sections (her2st, STNet).
- :func:`read_hest`: HEST-1k samples (``st/{id}.h5ad``, pyramidal ``wsis/{id}.tif``, ``metadata/{id}.json``).
- :func:`read` / :func:`read_anndata`: any of these (and ``.h5ad`` / SpatialData ``.zarr``), chosen from the path.
- :func:`concat`: several slides in one AnnData, keeping every slide's images.
- :func:`to_spatialdata` / :func:`from_spatialdata`: round trip with :class:`spatialdata.SpatialData`.

All readers store raw counts in ``X`` and ``layers["counts"]``, full-resolution pixel coordinates
(x = column, y = row) in ``obsm["spatial"]``, integer ``obs["array_row"]`` / ``obs["array_col"]``, the slide in
``obs["library_id"]`` and images / scale factors in ``uns["spatial"][library_id]`` (scanpy's layout).
"""

from ._concat import concat
from ._hest import read_hest
from ._read import read, read_anndata, read_spots
from ._spatialdata import from_spatialdata, to_spatialdata
from ._spot_grid import spot_grid
from ._st import read_st
from ._visium import read_visium
from ._visium_hd import read_visium_hd

__all__ = [
    "concat",
    "from_spatialdata",
    "read",
    "read_anndata",
    "read_spots",
    "read_hest",
    "read_st",
    "read_visium",
    "read_visium_hd",
    "spot_grid",
    "to_spatialdata",
]
