"""Helpers shared by the readers: file checks, the counts matrix, library ids."""

from __future__ import annotations

import csv
import os
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from sepal_tl._keys import COUNTS
from sepal_tl._validation import check_counts, resolve_libraries

_VALID_LIBRARY_ID = re.compile(r"^[A-Za-z0-9_.-]+$")


def require_file(path: str | os.PathLike, what: str, hint: str = "") -> Path:
    """Return ``path`` as a :class:`~pathlib.Path`, raising ``FileNotFoundError`` naming ``what`` if it is missing.

    ``hint`` (what to pass instead) ends the message.
    """
    path = Path(path)
    if not path.is_file():
        msg = f"{what} not found: {str(path)!r} does not exist or is not a file. {hint}".rstrip()
        raise FileNotFoundError(msg)
    return path


#: what the table parsers raise on a truncated or malformed file
_PARSE_ERRORS = (
    OSError,
    EOFError,
    zlib.error,
    UnicodeDecodeError,
    csv.Error,
    pd.errors.ParserError,
    pd.errors.EmptyDataError,
)


@contextmanager
def reading(
    path: str | os.PathLike,
    what: str,
    *,
    errors: tuple[type[Exception], ...] = _PARSE_ERRORS,
    problem: str = "not in the expected format",
    hint: str = "Download or export it again.",
) -> Iterator[None]:
    """Turn a parser's or decoder's error (``errors``) on a damaged file into a ``ValueError`` naming the file.

    A missing file or a permission error is raised as it is.
    """
    try:
        yield
    except errors as err:
        if isinstance(err, FileNotFoundError | PermissionError):
            raise
        msg = (
            f"Cannot read the {what} {str(path)!r} ({type(err).__name__}: {err}): the file is truncated, damaged or "
            f"{problem}. {hint}"
        )
        raise ValueError(msg) from err


def counts_matrix(matrix, *, what: str) -> sparse.csr_matrix:
    """Check that ``matrix`` holds raw counts and return it as a CSR ``float32`` matrix."""
    check_counts(matrix, what=what)
    return sparse.csr_matrix(matrix, dtype=np.float32)


def check_library_id(library_id: str) -> str:
    """Return ``library_id`` as a string, raising ``ValueError`` if it cannot name SpatialData elements."""
    library_id = str(library_id)
    if not _VALID_LIBRARY_ID.match(library_id) or library_id.startswith("__"):
        msg = (
            f"library_id={library_id!r} is not usable: library ids name files and SpatialData elements, so "
            "they may only contain letters, digits, '_', '-' and '.' (and must not start with '__'). "
            "Pass library_id= with such a name."
        )
        raise ValueError(msg)
    return library_id


def spatial_entry(images: dict, scalefactors: dict, metadata: dict) -> dict:
    """Build one slide's ``uns["spatial"][library_id]`` entry in scanpy's layout."""
    return {"images": images, "scalefactors": scalefactors, "metadata": metadata}


def finish(
    adata: AnnData,
    *,
    library_id: str,
    spatial: np.ndarray,
    array_row: np.ndarray,
    array_col: np.ndarray,
    entry: dict,
) -> AnnData:
    """Add the fields every reader sets: coordinates, library id, ``layers["counts"]``, ``uns["spatial"]``."""
    adata.obsm["spatial"] = np.asarray(spatial, dtype=np.float64)
    adata.obs["array_row"] = np.asarray(array_row, dtype=np.int64)
    adata.obs["array_col"] = np.asarray(array_col, dtype=np.int64)
    adata.obs["library_id"] = pd.Categorical([library_id] * adata.n_obs)
    adata.layers[COUNTS] = adata.X.copy()
    adata.uns["spatial"] = {library_id: entry}
    return adata


def library_ids(adata: AnnData, library_key: str | None) -> pd.Series:
    """Return each spot's library id as a string Series, by :func:`sepal_tl._validation.resolve_libraries`'s rule."""
    return resolve_libraries(adata, library_key).astype(str)
