"""SEPAL's adaptive median filter for "pepper noise" zeros."""

from __future__ import annotations

import functools
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from anndata import AnnData
from scipy import sparse
from scipy.spatial import cKDTree

from sepal_tl._deprecation import renamed_arguments
from sepal_tl._docs import inject_docs
from sepal_tl._keys import COUNTS, DEFAULT_LIBRARY_KEY, DENOISED, OBSERVED
from sepal_tl._logging import logger
from sepal_tl._sdata import spatialdata_aware
from sepal_tl._settings import n_workers
from sepal_tl._uns import record
from sepal_tl._validation import check_array_coords, check_finite, get_matrix, resolve_libraries

# Zero entries processed together; small enough for the temporaries to stay in cache.
_CHUNK = 1 << 16
# Windows with at most this many neighbours are sorted with a sorting network (np.choose takes up to 32).
_NETWORK_MAX_WIDTH = 16
# Genes expressed in at most this fraction of a slide's spots get the sparse pre-pass of ``_never_resolved``.
_SPARSE_FRACTION = 0.25
# Genes handled together where a step's temporaries grow with spots x genes (memory stays O(spots)).
_GENE_BLOCK = 32


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
    # On a lattice the n-th distinct distance is about sqrt(n + 3) nearest-neighbour distances, so one query
    # usually suffices; the loop widens the search for irregular layouts.
    radius = max(tree.query(coords, k=2)[0][:, 1].min(), 1.0) * np.sqrt(n_radii + 3) * 1.1
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
    order = np.argsort(src * (int(sq_radii[-1]) + 1) + d2) if src.size else src
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


@functools.cache
def _sorting_network(width: int) -> tuple[tuple[int, int], ...]:
    """Comparators ``(i, j)``, ``i < j``, of Batcher's odd-even merge sort for ``width`` inputs.

    Built for the next power of two; comparators that touch a position past ``width`` are dropped, which is
    exact because those positions would hold +inf and never move.
    """
    size = 1 << max(width - 1, 0).bit_length()
    comparators = []
    block = 1
    while block < size:
        step = block
        while step >= 1:
            for start in range(step % block, size - step, 2 * step):
                for i in range(min(step, size - start - step)):
                    a, b = start + i, start + i + step
                    if a // (2 * block) == b // (2 * block) and b < width:
                        comparators.append((a, b))
            step //= 2
        block *= 2
    return tuple(comparators)


def _window_medians(neighbours: list[np.ndarray], sizes: np.ndarray) -> np.ndarray:
    """Medians of windows made of a zero centre and ``neighbours`` (one array per neighbour slot, +inf padded).

    ``sizes`` counts the centre. numpy's median definition: the mean of the two middle values of an even window.
    Small windows are sorted with a vectorised sorting network (one min/max pair per comparator over all windows
    at once), which is an order of magnitude faster than sorting many short rows.
    """
    width = len(neighbours)
    if width <= _NETWORK_MAX_WIDTH:
        ordered = list(neighbours)
        for i, j in _sorting_network(width):
            low = np.minimum(ordered[i], ordered[j])
            ordered[j] = np.maximum(ordered[i], ordered[j])
            ordered[i] = low
    else:
        ordered = list(np.sort(np.stack(neighbours), axis=0))

    def order_statistic(t: np.ndarray) -> np.ndarray:  # t-th smallest of the whole window, centre included
        return np.where(t > 0, np.choose(np.maximum(t - 1, 0), ordered, mode="clip"), 0).astype(np.float64)

    return (order_statistic((sizes - 1) // 2) + order_statistic(sizes // 2)) / 2


def _nonzero_median(x: np.ndarray) -> np.ndarray:
    """Per column of a non-negative matrix, the median of its non-zero values (0 for a column without any)."""
    n = x.shape[0]
    ordered = np.sort(x, axis=0)  # zeros first, then the k non-zero values
    k = (x != 0).sum(axis=0)
    cols = np.arange(x.shape[1])
    low = ordered[np.clip(n - k + (k - 1) // 2, 0, n - 1), cols].astype(np.float64)
    high = ordered[np.clip(n - k + k // 2, 0, n - 1), cols].astype(np.float64)
    return np.where(k > 0, (low + high) / 2, 0.0)


def _never_resolved(values: np.ndarray, levels: list) -> np.ndarray:
    """Mask of the zero entries of sparse genes that no window can resolve (they take the slide-median fallback).

    A window of ``m`` spots has a non-zero median only if it holds at least ``ceil(m / 2)`` non-zero values, and
    windows are nested, so an entry whose largest window holds fewer non-zeros than half its smallest window can
    never be resolved. For a sparse gene those counts are cheap to get by scattering from its few non-zero spots,
    and most of its many zero entries are settled at once instead of being carried through every radius.
    """
    n_genes, stride = values.shape
    n = stride - 1
    hopeless = np.zeros(values.shape, dtype=bool)
    if not levels:
        hopeless[:, :n] = values[:, :n] == 0
        return hopeless
    nonzero = values[:, :n] != 0
    sparse_genes = np.flatnonzero(nonzero.sum(axis=1) <= _SPARSE_FRACTION * n)
    if sparse_genes.size == 0:
        return hopeless
    largest = levels[-1][0]  # (slots, n) table of the largest window, padded with n; windows are symmetric
    needed = (levels[0][1] + 1) // 2  # half of each spot's smallest window
    for start in range(0, sparse_genes.size, _GENE_BLOCK):
        genes = sparse_genes[start : start + _GENE_BLOCK]
        gene_rank, spots = np.nonzero(nonzero[genes])
        reached = np.bincount(
            ((gene_rank * stride)[None, :] + largest[:, spots]).ravel(), minlength=genes.size * stride
        ).reshape(genes.size, stride)[:, :n]
        hopeless[genes, :n] = (reached < needed) & ~nonzero[genes]
    return hopeless


def _resolve(flat: np.ndarray, out: np.ndarray, pos: np.ndarray, spots: np.ndarray, sizes, window) -> None:
    """Write the window median of each zero entry at flat position ``pos`` (its spot: ``spots``) into ``out``."""
    base = pos - spots
    out[pos] = _window_medians([np.take(flat, np.take(slot, spots) + base) for slot in window[1:]], sizes)


def median_filter_slide(x: np.ndarray, coords: np.ndarray, n_radii: int = 7) -> tuple[np.ndarray, int, np.ndarray]:
    """Adaptive median filter of one slide (SEPAL; docs/method.md, "4. Adaptive median filter").

    Each zero ``x[i, g]`` becomes the median of gene ``g`` over the first window ``W_k(i)`` (all spots within
    the k-th smallest distinct radius of spot ``i``, the spot itself and zeros included) whose median is
    non-zero, for k = 1..n_radii; if all are zero, the median of the slide's non-zero values of ``g``.

    For non-negative values a window's median is zero exactly when more than half of the window is zero. So a
    zero entry only carries a running count of zeros, updated ring by ring, and its median is computed once, at
    the first window where it is not zero. The counts are vectorised over entries, one neighbour slot at a time
    (genes-major layout, so that one gene's lookups stay in cache). Zero entries of sparse genes that no window
    can resolve are settled up front (:func:`_never_resolved`).

    Returns the filtered matrix (float32), the number of entries that fell back to the slide median, and the
    squared radii used.
    """
    n, n_genes = x.shape
    stride = n + 1
    values = np.empty((n_genes, stride), dtype=np.float32)  # genes x spots, plus a +inf padding spot
    values[:, :n] = x.T
    values[:, n] = np.inf
    flat = values.ravel()
    out = flat.copy()
    is_zero = (values == 0).view(np.uint8)
    sq_radii, levels = _window_tables(coords, n_radii)
    hopeless = _never_resolved(values, levels)
    pos = np.flatnonzero(is_zero.view(bool) & ~hopeless)  # open zero entries, as flat positions gene * stride + spot
    zeros = np.ones(pos.size, dtype=np.int16)  # zeros in the current window (the centre is one)
    for window, size, ring in levels:
        kept_pos, kept_zeros = [], []
        for start in range(0, pos.size, _CHUNK):  # chunks keep the temporaries in cache
            p, z = pos[start : start + _CHUNK], zeros[start : start + _CHUNK]
            spots = p % stride
            base = p - spots
            for slot in ring:
                z += np.take(is_zero.ravel(), np.take(slot, spots) + base)
            m = size[spots]
            done = 2 * z <= m
            _resolve(flat, out, p[done], spots[done], m[done], window)
            kept_pos.append(p[~done])
            kept_zeros.append(z[~done])
        if kept_pos:
            pos, zeros = np.concatenate(kept_pos), np.concatenate(kept_zeros)
    left = hopeless  # now every entry left for the fallback, as a mask (no index arrays over all entries)
    left.ravel()[pos] = True
    needed = np.flatnonzero(left.any(axis=1))
    fallback = np.zeros(n_genes, dtype=np.float32)
    for start in range(0, needed.size, _GENE_BLOCK):
        genes = needed[start : start + _GENE_BLOCK]
        fallback[genes] = _nonzero_median(x[:, genes])
    np.copyto(out.reshape(n_genes, stride), fallback[:, None], where=left)
    return out.reshape(n_genes, stride)[:, :n].T.copy(), int(np.count_nonzero(left)), sq_radii


@renamed_arguments(mask_key="mask")
@spatialdata_aware()
@inject_docs
def denoise(
    adata: AnnData,
    *,
    layer: str | None = None,
    n_radii: int = 7,
    counts_layer: str | None = None,
    key_added: str = DENOISED,
    mask: str = OBSERVED,
    library_key: str | None = DEFAULT_LIBRARY_KEY,
    n_jobs: int | None = None,
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
        Spots × genes with non-negative expression in ``X`` (or ``layers[layer]``) and array coordinates.
    layer
        Layer to filter; ``None`` uses ``adata.X``, as scanpy functions do, so an AnnData normalised the scanpy
        way (``sc.pp.normalize_total`` then ``sc.pp.log1p``) is filtered as it is. SEPAL filters log2(TPM + 1):
        :func:`sepal_tl.pp.run` passes ``layer="log2tpm"``.
    n_radii
        Number of growing windows tried before the slide-level fallback (SEPAL: 7).
    counts_layer
        Raw counts for the observation mask. ``None``: ``layers["counts"]`` when it exists, else the zeros of the
        filtered values themselves (the same entries for log-normalised counts). :func:`sepal_tl.pp.run` passes
        ``"counts"``.
    key_added
        Output layer with the filtered values (dense float32).
    mask
        Output boolean layer, ``True`` where the raw count was non-zero (observed), ``False`` where imputed; the
        ``mask=`` that :func:`sepal_tl.tl.evaluate` and :func:`sepal_tl.tl.fit_encoder` read. Formerly
        ``mask_key``, which still works with a :class:`FutureWarning`.
    library_key
        %(library_key)s %(one_slide_rule)s
    n_jobs
        Threads filtering slides in parallel; ``None`` uses :attr:`sepal_tl.settings.n_jobs`, ``-1`` all cores.
        The result does not depend on it.
    %(copy_table_key)s

    Returns
    -------
    A copy if ``copy=True``, else ``None``. Sets ``layers[key_added]``, ``layers[mask]`` and
    ``uns["sepal"]["pp"]["denoise"]`` (including the imputed fraction and the radii used per slide).

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=60, n_genes=60, pitch_px=32, random_state=0)
    >>> sepal.pp.tpm(adata)
    >>> sepal.pp.log2p(adata)
    >>> sepal.pp.denoise(adata, layer="log2tpm")
    >>> observed = adata.layers["observed"]  # True where the raw count is not zero
    >>> bool((adata.layers["denoised"][observed] == adata.layers["log2tpm"].toarray()[observed]).all())
    True
    >>> round(adata.uns["sepal"]["pp"]["denoise"]["imputed_fraction"], 2)  # the zeros filled in
    0.45
    """
    if not isinstance(n_radii, int | np.integer) or n_radii < 1:
        msg = f"n_radii must be a positive integer, got {n_radii!r}."
        raise ValueError(msg)
    values = get_matrix(adata, layer)
    what = "adata.X" if layer is None else f"layers[{layer!r}]"
    check_finite(values, what=what)
    if counts_layer is None and COUNTS in adata.layers:
        counts_layer = COUNTS
    counts = values if counts_layer is None else get_matrix(adata, counts_layer)
    if counts.shape != values.shape:
        msg = f"The counts ({counts.shape}) and {what} ({values.shape}) differ in shape."
        raise ValueError(msg)
    dense = values.toarray() if sparse.issparse(values) else np.asarray(values)
    if dense.size and dense.min() < 0:
        msg = (
            f"{what} has negative values; the adaptive median filter imputes zeros of non-negative expression "
            "(e.g. log2(TPM + 1), or scanpy's log1p of normalised counts). Run it before ComBat, scaling or "
            "centring, or pass layer= naming the non-negative layer."
        )
        raise ValueError(msg)
    coords = check_array_coords(adata)
    libraries = resolve_libraries(adata, library_key)

    slides = {str(lib): np.flatnonzero((libraries == lib).to_numpy()) for lib in libraries.cat.categories}
    out = np.empty(dense.shape, dtype=np.float32)
    radii: dict[str, list[float]] = {}
    n_fallback = 0
    # numpy releases the GIL in its loops, so threads give a real speed-up across slides.
    with ThreadPoolExecutor(n_workers(n_jobs, len(slides))) as pool:
        # a slide that is the whole AnnData is passed as it is (no copy of the dense matrix)
        results = pool.map(
            lambda idx: median_filter_slide(dense if idx.size == len(dense) else dense[idx], coords[idx], n_radii),
            slides.values(),
        )
        for (lib, idx), (filtered, n_fb, sq_radii) in zip(slides.items(), results, strict=True):
            out[idx] = filtered
            n_fallback += n_fb
            radii[lib] = np.sqrt(sq_radii).round(6).tolist()
    observed = (counts > 0).toarray() if sparse.issparse(counts) else np.asarray(counts) > 0

    imputed_fraction = float(1 - observed.mean()) if observed.size else 0.0
    if copy:
        adata = adata.copy()
    adata.layers[key_added] = out
    adata.layers[mask] = observed
    record(
        adata,
        "pp",
        "denoise",
        {
            "layer": layer,
            "n_radii": n_radii,
            "counts_layer": counts_layer,
            "key_added": key_added,
            "mask": mask,
            "library_key": library_key,
            "n_jobs": n_jobs,
            "radii": radii,
            "imputed_fraction": imputed_fraction,
            "n_slide_median_fallback": n_fallback,
        },
    )
    logger.info("added %r and %r to adata.layers (%.1f%% of entries imputed)", key_added, mask, 100 * imputed_fraction)
    return adata if copy else None
