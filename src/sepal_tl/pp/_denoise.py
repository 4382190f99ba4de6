"""SEPAL's adaptive median filter for "pepper noise" zeros."""

from __future__ import annotations

import numpy as np
from anndata import AnnData
from scipy import sparse
from scipy.spatial import cKDTree

from sepal_tl._logging import logger
from sepal_tl._uns import record
from sepal_tl._validation import DEFAULT_LIBRARY_KEY, check_array_coords, check_finite, get_matrix, resolve_libraries

# Zero entries processed together; small enough for the temporaries to stay in cache.
_CHUNK = 1 << 16


def _neighbour_pairs(coords: np.ndarray, n_radii: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Directed pairs of distinct spots within the ``n_radii``-th smallest distinct distance.

    Returns the squared radii and the pairs ``(src, dst, d2)`` sorted by source, then squared distance.
    ``coords`` are integer array coordinates, so squared distances are exact integers: no floating-point
    tie-breaking can merge or split two radii (the reference implementation compares float distances).
    Fewer radii are returned when the slide has fewer distinct distances.
    """
    n = coords.shape[0]
    empty = np.zeros(0, dtype=np.int64)
    if n < 2 or n_radii < 1:
        return empty, empty, empty, empty
    tree = cKDTree(coords)
    span = np.sqrt(((coords.max(0) - coords.min(0)) ** 2).sum())
    radius = max(tree.query(coords, k=2)[0][:, 1].min(), 1.0) * 2.0
    while True:
        pairs = tree.query_pairs(radius, output_type="ndarray")
        diff = coords[pairs[:, 0]] - coords[pairs[:, 1]]
        sq = (diff * diff).sum(axis=1)
        distinct = np.unique(sq)
        # Only squared distances safely inside the search radius are complete.
        distinct = distinct[(distinct > 0) & (distinct < radius * radius * (1 - 1e-9))]
        if distinct.size >= n_radii or radius > span:
            break
        radius *= 1.5
    sq_radii = distinct[:n_radii].astype(np.int64)
    inside = sq <= sq_radii[-1] if sq_radii.size else np.zeros(sq.size, dtype=bool)
    src = np.concatenate([pairs[inside, 0], pairs[inside, 1]])
    dst = np.concatenate([pairs[inside, 1], pairs[inside, 0]])
    d2 = np.tile(sq[inside], 2)
    order = np.lexsort((d2, src))
    return sq_radii, src[order], dst[order], d2[order]


def distinct_squared_radii(coords: np.ndarray, n_radii: int) -> np.ndarray:
    """The ``n_radii`` smallest distinct non-zero squared distances between spots (exact integers)."""
    return _neighbour_pairs(coords, n_radii)[0]


def _window_tables(
    coords: np.ndarray, n_radii: int
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """Squared radii and, per radius, the window table, the window sizes and the ring table.

    Tables are slot-major ``(slots, n)`` arrays of spot indices padded with ``n``. Window k holds the spot
    itself (slot 0) and every spot within radius k; ring k holds the spots with ``r_{k-1}^2 < d^2 <= r_k^2``.
    """
    n = coords.shape[0]
    sq_radii, src, dst, d2 = _neighbour_pairs(coords, n_radii)
    counts = np.bincount(src, minlength=n)
    start = np.cumsum(counts) - counts
    # All neighbours of each spot ordered by distance; slot 0 is the spot itself.
    full = np.full((counts.max(initial=0) + 1, n), n, dtype=np.int64)
    full[0] = np.arange(n)
    full[np.arange(src.size) - start[src] + 1, src] = dst
    slot = np.arange(full.shape[0])[:, None]
    levels = []
    inner = np.ones(n, dtype=np.int64)
    for r2 in sq_radii:
        size = 1 + np.bincount(src[d2 <= r2], minlength=n)
        window = np.where(slot < size, full, n)[: size.max()]
        ring_slot = inner + np.arange((size - inner).max())[:, None]  # each spot's ring, shifted to slot 0
        ring = np.where(ring_slot < size, np.take_along_axis(full, np.minimum(ring_slot, len(full) - 1), 0), n)
        levels.append((window, size, ring))
        inner = size
    return sq_radii, levels


def _window_medians(values: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Median of each row's first ``sizes`` entries after sorting (padding is +inf and sorts last)."""
    ordered = np.sort(values, axis=1)
    rows = np.arange(values.shape[0])
    low = ordered[rows, (sizes - 1) // 2].astype(np.float64)
    high = ordered[rows, sizes // 2].astype(np.float64)
    return (low + high) / 2


def _nonzero_median(x: np.ndarray) -> np.ndarray:
    """Per column of a non-negative matrix, the median of its non-zero values (0 for a column without any)."""
    n = x.shape[0]
    ordered = np.sort(x, axis=0)  # zeros first, then the k non-zero values
    k = (x != 0).sum(axis=0)
    cols = np.arange(x.shape[1])
    low = ordered[np.clip(n - k + (k - 1) // 2, 0, n - 1), cols].astype(np.float64)
    high = ordered[np.clip(n - k + k // 2, 0, n - 1), cols].astype(np.float64)
    return np.where(k > 0, (low + high) / 2, 0.0)


def median_filter_slide(x: np.ndarray, coords: np.ndarray, n_radii: int = 7) -> tuple[np.ndarray, int, np.ndarray]:
    """Adaptive median filter of one slide (SEPAL, spec section 4.1).

    Each zero ``x[i, g]`` becomes the median of gene ``g`` over the first window ``W_k(i)`` (all spots within
    the k-th smallest distinct radius of spot ``i``, the spot itself and zeros included) whose median is
    non-zero, for k = 1..n_radii; if all are zero, the median of the slide's non-zero values of ``g``.

    For non-negative values a window's median is zero exactly when more than half of the window is zero. So
    each zero entry only carries a running count of zeros, updated ring by ring, and a median is computed once,
    at the first window where it is non-zero. Work is vectorised over entries, one neighbour slot at a time
    (genes-major layout, so one gene's lookups stay in cache).

    Returns the filtered matrix (float32), the number of entries that fell back to the slide median, and the
    squared radii used.
    """
    n, n_genes = x.shape
    values = np.empty((n_genes, n + 1), dtype=np.float32)  # genes x spots, plus a +inf padding spot
    values[:, :n] = x.T
    values[:, n] = np.inf
    flat = values.ravel()
    out = flat.copy()
    is_zero = (flat == 0).view(np.uint8)
    sq_radii, levels = _window_tables(coords, n_radii)
    genes, spots = np.nonzero(values == 0)
    leftover = []
    for start in range(0, spots.size, _CHUNK):  # entries are independent; chunks keep temporaries in cache
        chunk = spots[start : start + _CHUNK]
        base = genes[start : start + _CHUNK] * (n + 1)
        zeros = np.ones(chunk.size, dtype=np.int16)  # the centre itself is zero
        for window, size, ring in levels:
            if chunk.size == 0:
                break
            for slot in ring:
                zeros += np.take(is_zero, np.take(slot, chunk) + base)
            m = size[chunk]
            done = 2 * zeros <= m
            s, b = chunk[done], base[done]
            members = np.stack([np.take(flat, np.take(slot, s) + b) for slot in window], axis=1)
            out[b + s] = _window_medians(members, m[done])
            chunk, base, zeros = chunk[~done], base[~done], zeros[~done]
        leftover.append(base + chunk)
    left = np.concatenate(leftover) if leftover else np.zeros(0, dtype=np.int64)
    if left.size:
        left_genes = left // (n + 1)
        needed = np.unique(left_genes)
        fallback = np.zeros(n_genes, dtype=np.float32)
        fallback[needed] = _nonzero_median(x[:, needed])
        out[left] = fallback[left_genes]
    return out.reshape(n_genes, n + 1)[:, :n].T.copy(), int(left.size), sq_radii


def denoise(
    adata: AnnData,
    *,
    layer: str = "log1p",
    n_radii: int = 7,
    counts_layer: str | None = None,
    key_added: str = "denoised",
    mask_key: str = "observed",
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    copy: bool = False,
) -> AnnData | None:
    """Impute "pepper noise" zeros with SEPAL's adaptive median filter.

    Runs per slide, in array-index space (``obs["array_row"]``, ``obs["array_col"]``). The radii are the
    ``n_radii`` smallest distinct spot-to-spot distances of the slide (legacy ST square grid: 1, √2, 2, √5, √8,
    3, √10; Visium's doubled-column hex indices: √2, 2, √8, √10, 4, √18, √20). A zero entry takes the median of
    the first window (centre included, zeros included) whose median is not zero; if none is, the slide's median
    of the gene's non-zero values. Non-zero entries are kept as they are.

    Parameters
    ----------
    adata
        Spots × genes with ``layers[layer]`` and array coordinates.
    layer
        Non-negative expression layer to filter (SEPAL: log2(TPM + 1)).
    n_radii
        Number of growing windows tried before the slide-level fallback (SEPAL: 7).
    counts_layer
        Raw counts used for the observation mask; ``None`` uses ``adata.X``.
    key_added
        Output layer with the filtered values (dense float32).
    mask_key
        Output boolean layer, ``True`` where the raw count was non-zero (observed), ``False`` where imputed.
    library_key
        Column of ``adata.obs`` naming each spot's slide.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    A copy if ``copy=True``, else ``None``. Sets ``layers[key_added]``, ``layers[mask_key]`` and
    ``uns["sepal"]["pp"]["denoise"]`` (including the imputed fraction and the radii used per slide).
    """
    if not isinstance(n_radii, int | np.integer) or n_radii < 1:
        msg = f"n_radii must be a positive integer, got {n_radii!r}."
        raise ValueError(msg)
    values = get_matrix(adata, layer)
    check_finite(values, what=f"layers[{layer!r}]")
    counts = get_matrix(adata, counts_layer)
    if counts.shape != values.shape:
        msg = f"The counts ({counts.shape}) and layers[{layer!r}] ({values.shape}) differ in shape."
        raise ValueError(msg)
    dense = values.toarray() if sparse.issparse(values) else np.asarray(values)
    if dense.size and dense.min() < 0:
        msg = (
            f"layers[{layer!r}] has negative values; the adaptive median filter imputes zeros of non-negative "
            "expression (e.g. log2(TPM + 1)). Run it before ComBat or centring."
        )
        raise ValueError(msg)
    coords = check_array_coords(adata)
    libraries = resolve_libraries(adata, library_key)

    out = np.empty(dense.shape, dtype=np.float32)
    radii: dict[str, list[float]] = {}
    n_fallback = 0
    for lib in libraries.cat.categories:
        idx = np.flatnonzero((libraries == lib).to_numpy())
        out[idx], n_fb, sq_radii = median_filter_slide(dense[idx], coords[idx], n_radii)
        n_fallback += n_fb
        radii[str(lib)] = np.sqrt(sq_radii).round(6).tolist()
    observed = (counts > 0).toarray() if sparse.issparse(counts) else np.asarray(counts) > 0

    imputed_fraction = float(1 - observed.mean()) if observed.size else 0.0
    if copy:
        adata = adata.copy()
    adata.layers[key_added] = out
    adata.layers[mask_key] = observed
    record(
        adata,
        "pp",
        "denoise",
        {
            "layer": layer,
            "n_radii": n_radii,
            "counts_layer": counts_layer,
            "key_added": key_added,
            "mask_key": mask_key,
            "library_key": library_key,
            "radii": radii,
            "imputed_fraction": imputed_fraction,
            "n_slide_median_fallback": n_fallback,
        },
    )
    logger.info(
        "added %r and %r to adata.layers (%.1f%% of entries imputed)", key_added, mask_key, 100 * imputed_fraction
    )
    return adata if copy else None
