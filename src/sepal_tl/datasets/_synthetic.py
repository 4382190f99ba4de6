"""Procedurally generated H&E-like slides with image-driven spatial counts (:func:`synthetic`).

Each slide is built in four steps, all vectorised numpy/scipy:

1. **Layout.** A Visium-style hexagonal lattice of candidate spots (``array_row`` r, ``array_col`` c
   with r + c even; neighbours at (0, ±2) and (±1, ±1), all one pitch apart). A smooth random
   "tissue score" (an elliptical blob plus a smooth random field) picks the ``n_spots`` candidates
   that lie deepest in the tissue; pixels above a slightly lower threshold form the tissue.
2. **Regions.** Four smooth random fields (Gaussian-filtered white noise), one per tissue type,
   compete pixel-wise (arg-max): ``stroma``, ``tumour``, ``immune`` and ``adipose``.
3. **Image.** Nuclei are drawn from a Poisson process whose density, size, shape and darkness
   depend on the region (and on a further smooth density field), rendered as Gaussian blobs into a
   haematoxylin concentration map. Eosin concentration depends on the region, plus fine texture
   and, in adipose tissue, a thin membrane network around white fat vacuoles. The two stain
   concentrations are turned into RGB with the Beer-Lambert law and the standard H&E optical
   density vectors (Ruifrok & Johnston 2001), with a mild per-slide stain variation.
4. **Features.** For every spot, the fraction of each region and the mean haematoxylin and eosin
   concentration under the spot disc are measured from the rendered maps.

Counts are drawn afterwards for all slides together (see :func:`synthetic`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import ndimage, optimize, sparse
from scipy.spatial import cKDTree

from sepal_tl._deprecation import renamed_arguments
from sepal_tl._keys import COUNTS
from sepal_tl._logging import logger
from sepal_tl._uns import record
from sepal_tl.io._common import spatial_entry
from sepal_tl.io._images import hires_lowres
from sepal_tl.io._st import LOWRES_MAX_SIDE
from sepal_tl.pp import load_gene_length_table

__all__ = ["PROGRAMS", "REGIONS", "synthetic"]

REGIONS = ("stroma", "tumour", "immune", "adipose")
"""Tissue types painted on the synthetic slides (``obs["region"]``)."""

PROGRAMS = ("stroma", "tumour", "immune", "adipose", "nuclear", "interface")
"""Expression programs (``var["program"]``; genes outside them are ``"background"`` or ``"sparse"``)."""

_SPOT_MICRONS = 100.0  # centre-to-centre distance of neighbouring Visium spots
_SQRT3_2 = np.sqrt(3.0) / 2.0

# Per-region appearance, in REGIONS order.
_NUCLEI_PER_1000_UM2 = np.array([2.0, 8.0, 16.0, 1.0])
_NUCLEUS_RADIUS_UM = np.array([3.0, 4.5, 2.8, 3.0])
_NUCLEUS_ELONGATION = np.array([2.2, 1.0, 1.0, 1.0])  # stroma: spindle-shaped fibroblast nuclei
_NUCLEUS_DARKNESS = np.array([1.3, 1.1, 1.8, 1.0])  # peak haematoxylin concentration
_HAEMATOXYLIN_BACKGROUND = np.array([0.05, 0.25, 0.12, 0.02])  # cytoplasmic/extracellular tint
_EOSIN = np.array([1.0, 0.65, 0.45, 0.9])  # adipose: value on the membranes
_REGION_BIAS = np.array([0.3, 0.3, -0.2, -0.4])  # shifts the arg-max towards common tissue types

# Optical density per unit concentration (R, G, B), Ruifrok & Johnston's H&E vectors.
_OD_HAEMATOXYLIN = np.array([0.650, 0.704, 0.286])
_OD_EOSIN = np.array([0.072, 0.990, 0.105])
_OD_GLASS = 0.03

# Program activities: nuclear density is mapped to [0, 1] by this mean haematoxylin range.
_NUCLEAR_RANGE = (0.05, 0.85)
_MAX_LOG_DEPTH = 40.0  # search range of the log depth factor (keeps Poisson means far below numpy's limit)
_GENE_NAME_PATTERN = r"[A-Z][A-Z0-9]{1,9}"
_NON_CODING_PREFIXES = r"(?:LINC|MIR|SNOR|SCAR|RNU|RN7S|RNA5|RNY|LOC|VTRNA|MTCO|MTND|MTATP|MTCY|MTRNR)"


@dataclass
class _Slide:
    """One generated slide: layout, image and per-spot image features."""

    image: np.ndarray
    array_row: np.ndarray
    array_col: np.ndarray
    coords: np.ndarray
    features: np.ndarray  # (n_spots, len(REGIONS) + 2): region fractions, mean haematoxylin, mean eosin


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """A smooth Gaussian random field with zero mean and unit variance."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (field - field.mean()) / field.std()


def _upsample(coarse: np.ndarray, factor: int) -> np.ndarray:
    """Bilinearly upsample a coarse grid by an integer factor (cell centres stay aligned)."""
    return ndimage.zoom(coarse.astype(np.float32), factor, order=1, mode="nearest", grid_mode=True)


def _double(half: np.ndarray) -> np.ndarray:
    """Nearest-neighbour upsampling by two, from the half-resolution grid to full resolution."""
    return half.repeat(2, axis=0).repeat(2, axis=1)


def _at(coarse: np.ndarray, x: np.ndarray, y: np.ndarray, cell: int) -> np.ndarray:
    """Bilinear value of a coarse grid at full-resolution pixel positions ``(x, y)``."""
    return ndimage.map_coordinates(coarse, [y / cell - 0.5, x / cell - 0.5], order=1, mode="nearest")


def _lattice(n_spots: int, pitch: float, margin: float) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Candidate hex-lattice positions, roughly square, with ~40 % more spots than needed."""
    n_candidates = int(np.ceil(1.4 * n_spots)) + 16
    n_per_row = max(int(np.ceil(np.sqrt(n_candidates * _SQRT3_2))), 3)
    n_rows = max(int(np.ceil(n_candidates / n_per_row)), 3)
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(2 * n_per_row), indexing="ij")
    keep = (rows + cols) % 2 == 0
    rows, cols = rows[keep], cols[keep]
    width = 2 * margin + (2 * n_per_row - 1) * pitch / 2
    height = 2 * margin + (n_rows - 1) * pitch * _SQRT3_2
    return rows, cols, int(np.ceil(height)), int(np.ceil(width))


def _disc_offsets(radius: float) -> tuple[np.ndarray, np.ndarray]:
    r = int(np.ceil(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    inside = dy**2 + dx**2 <= radius**2
    return dy[inside], dx[inside]


def _tissue(
    rng: np.random.Generator, n_spots: int, pitch: float, cell: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Spot lattice and tissue outline: ``(rows, cols, x, y, chosen, tissue)``.

    The outline is a randomly rotated, elongated blob with a smooth irregular border (in pitch units); the
    ``n_spots`` lattice positions deepest inside it are ``chosen``, and ``tissue`` is the full-resolution mask
    (slightly larger, so that every spot disc lies in tissue).
    """
    rows, cols, height, width = _lattice(n_spots, pitch, margin=1.5 * pitch)
    h, w = -(-height // cell), -(-width // cell)
    x = 1.5 * pitch + cols * pitch / 2
    y = 1.5 * pitch + rows * pitch * _SQRT3_2
    cy, cx = (np.mgrid[0:h, 0:w] + 0.5) * cell / pitch
    cy, cx = cy - cy.mean(), cx - cx.mean()
    angle, aspect = rng.uniform(0, np.pi), rng.uniform(0.7, 1.0)
    u = cx * np.cos(angle) + cy * np.sin(angle)
    v = -cx * np.sin(angle) + cy * np.cos(angle)
    score = -np.hypot(u * aspect, v / aspect) + 1.5 * _smooth_field(rng, (h, w), 3 * pitch / cell)
    spot_score = _at(score, x, y, cell)
    chosen = np.sort(np.argsort(-spot_score, kind="stable")[:n_spots])
    threshold = spot_score[chosen].min() - 0.75  # margin so every spot disc lies in tissue
    tissue = _double(_upsample(score, cell // 2) >= threshold)
    return rows, cols, x, y, chosen, tissue


def _regions(rng: np.random.Generator, coarse: tuple[int, int], pitch: float, cell: int) -> np.ndarray:
    """Tissue types (index into :data:`REGIONS`): arg-max of competing smooth fields, made at half resolution."""
    h, w = coarse
    region = np.zeros((h * cell // 2, w * cell // 2), dtype=np.int8)
    best = np.full(region.shape, -np.inf, dtype=np.float32)
    for k, bias in enumerate(_REGION_BIAS):
        field = _upsample(_smooth_field(rng, (h, w), 2.5 * pitch / cell) + bias, cell // 2)
        better = field > best
        region[better], best[better] = k, field[better]
    return _double(region)


def _texture_and_membranes(rng: np.random.Generator, shape: tuple[int, int], um_per_px: float) -> tuple:
    """Fine stain texture, and the membranes of adipose tissue's fat vacuoles.

    The membranes are the zero level of a smooth field made at half resolution, with white fat in between.
    """
    height, width = shape
    texture = ndimage.gaussian_filter(rng.standard_normal((height, width), dtype=np.float32), 1.2)
    texture /= texture.std()
    fat = ndimage.gaussian_filter(rng.standard_normal((height // 2, width // 2), dtype=np.float32), 6 / um_per_px)
    return texture, _double(np.exp(-((fat / (0.25 * fat.std())) ** 2)))


def _nuclei(
    rng: np.random.Generator,
    region: np.ndarray,
    tissue: np.ndarray,
    density: np.ndarray,
    membranes: np.ndarray,
    *,
    cell: int,
    um_per_px: float,
) -> np.ndarray:
    """Haematoxylin of the nuclei: a thinned Poisson process, one Gaussian blob each, size and shape by region."""
    height, width = region.shape
    rate_max = _NUCLEI_PER_1000_UM2.max() / 1000 * density.max()
    n_candidates = rng.poisson(rate_max * height * width * um_per_px**2)
    ny, nx = rng.uniform(0, height, n_candidates), rng.uniform(0, width, n_candidates)
    iy, ix = ny.astype(np.intp), nx.astype(np.intp)
    kind = region[iy, ix]
    rate = _NUCLEI_PER_1000_UM2[kind] / 1000 * _at(density, nx, ny, cell)
    on_membrane = np.where(kind == REGIONS.index("adipose"), membranes[iy, ix], 1.0)  # adipocyte nuclei
    accept = tissue[iy, ix] & (rng.uniform(0, 1, n_candidates) * rate_max < rate * on_membrane)
    iy, ix, kind = iy[accept], ix[accept], kind[accept]
    weight = (rng.uniform(0.75, 1.25, kind.size) * _NUCLEUS_DARKNESS[kind]).astype(np.float32)
    nuclei = np.zeros((height, width), dtype=np.float32)
    for k in range(len(REGIONS)):
        impulses = np.zeros((height, width), dtype=np.float32)
        sel = kind == k
        np.add.at(impulses, (iy[sel], ix[sel]), weight[sel])
        sigma_x = 0.6 * _NUCLEUS_RADIUS_UM[k] / um_per_px * np.sqrt(_NUCLEUS_ELONGATION[k])
        sigma_y = 0.6 * _NUCLEUS_RADIUS_UM[k] / um_per_px / np.sqrt(_NUCLEUS_ELONGATION[k])
        blobs = ndimage.gaussian_filter(impulses, (sigma_y, sigma_x), truncate=3.0)
        nuclei += blobs * np.float32(2 * np.pi * sigma_x * sigma_y)
    del impulses, blobs
    top = np.float32(_NUCLEUS_DARKNESS.max())
    return top * np.tanh(nuclei / top)  # overlapping nuclei saturate


def _spot_features(
    region: np.ndarray, haematoxylin: np.ndarray, eosin: np.ndarray, x: np.ndarray, y: np.ndarray, diameter: float
) -> np.ndarray:
    """Region fractions, mean haematoxylin and mean eosin under each spot disc."""
    dy, dx = _disc_offsets(diameter / 2)
    py = np.rint(y).astype(np.intp)[:, None] + dy[None, :]
    px = np.rint(x).astype(np.intp)[:, None] + dx[None, :]
    under = region[py, px]
    fractions = np.stack([(under == k).mean(axis=1) for k in range(len(REGIONS))], axis=1)
    return np.column_stack([fractions, haematoxylin[py, px].mean(axis=1), eosin[py, px].mean(axis=1)])


def _render(rng: np.random.Generator, haematoxylin: np.ndarray, eosin: np.ndarray) -> np.ndarray:
    """RGB by Beer-Lambert, with this slide's own stain strength and hue."""
    od_h = _OD_HAEMATOXYLIN * rng.uniform(0.85, 1.15) * (1 + rng.normal(0, 0.04, 3))
    od_e = _OD_EOSIN * rng.uniform(0.85, 1.15) * (1 + rng.normal(0, 0.04, 3))
    image = np.empty((*haematoxylin.shape, 3), dtype=np.uint8)
    for channel in range(3):
        od = haematoxylin * np.float32(od_h[channel]) + eosin * np.float32(od_e[channel]) + np.float32(_OD_GLASS)
        image[..., channel] = np.clip(255 * np.exp(-od), 0, 255).astype(np.uint8)
    return image


def _make_slide(rng: np.random.Generator, *, n_spots: int, pitch: float, spot_diameter: float) -> _Slide:
    """Lay out spots, paint the tissue image and measure the image under each spot."""
    um_per_px = _SPOT_MICRONS / pitch
    cell = 2 * max(round(pitch / 8), 1)  # coarse grid for the smooth fields; even, see _double
    rows, cols, x, y, chosen, tissue = _tissue(rng, n_spots, pitch, cell)
    coarse = (tissue.shape[0] // cell, tissue.shape[1] // cell)
    region = _regions(rng, coarse, pitch, cell)
    density = np.exp(0.3 * _smooth_field(rng, coarse, 4 * pitch / cell))
    texture, membranes = _texture_and_membranes(rng, region.shape, um_per_px)
    nuclei = _nuclei(rng, region, tissue, density, membranes, cell=cell, um_per_px=um_per_px)

    # Stain concentrations.
    eosin = _EOSIN.astype(np.float32)[region] * (1 + 0.15 * texture)
    is_fat = region == REGIONS.index("adipose")
    eosin[is_fat] *= 0.05 + 0.95 * membranes[is_fat]
    haematoxylin = _HAEMATOXYLIN_BACKGROUND.astype(np.float32)[region] * (1 + 0.2 * texture) + nuclei
    del texture, membranes, nuclei
    haematoxylin *= tissue
    eosin *= tissue

    # Spot features are measured on the stain maps before the per-slide stain variation.
    x, y = x[chosen], y[chosen]
    features = _spot_features(region, haematoxylin, eosin, x, y, spot_diameter)
    return _Slide(
        image=_render(rng, haematoxylin, eosin),
        array_row=rows[chosen],
        array_col=cols[chosen],
        coords=np.column_stack([x, y]),
        features=features,
    )


def _genes(n_genes: int, gene_names: str, rng: np.random.Generator) -> pd.DataFrame:
    """Gene annotation: real human genes from the packaged GENCODE table, or generic names."""
    if gene_names == "generic":
        generic = [f"GENE{i:04d}" for i in range(1, n_genes + 1)]
        length = np.rint(np.exp(rng.normal(np.log(2500), 0.7, n_genes))).astype(np.int64) + 200
        return pd.DataFrame({"gene_ids": generic, "gene_symbols": generic, "gene_length": length}, index=generic)
    table = load_gene_length_table()
    names = table["gene_name"].astype(str)
    chromosomes = [f"chr{i}" for i in range(1, 23)] + ["chrX"]
    stem = names.str.replace(r"P\d*$", "", regex=True)
    pseudogene = (stem != names) & stem.isin(set(names))  # e.g. RPL39P33, a pseudogene of RPL39
    coding_like = (
        names.str.fullmatch(_GENE_NAME_PATTERN)
        & ~names.str.match(_NON_CODING_PREFIXES)
        & ~pseudogene
        & table["chrom"].isin(chromosomes)
        & ~names.duplicated(keep=False)
    )
    pool = table[coding_like.to_numpy()]
    if n_genes > len(pool):
        msg = f"n_genes={n_genes} exceeds the {len(pool)} human genes available; use gene_names='generic'."
        raise ValueError(msg)
    picked = pool.iloc[np.sort(rng.choice(len(pool), n_genes, replace=False))]
    symbols = picked["gene_name"].to_numpy(dtype=str)
    return pd.DataFrame({"gene_ids": picked["gene_id"].to_numpy(dtype=str), "gene_symbols": symbols}, index=symbols)


def _neighbour_mean(coords: np.ndarray, slide: np.ndarray, radius: float) -> sparse.csr_matrix:
    """Row-normalised adjacency averaging each spot with the spots of its slide within ``radius``."""
    rows, cols = [np.arange(len(coords))], [np.arange(len(coords))]
    for s in np.unique(slide):
        idx = np.flatnonzero(slide == s)
        pairs = cKDTree(coords[idx]).query_pairs(radius, output_type="ndarray")
        rows += [idx[pairs[:, 0]], idx[pairs[:, 1]]]
        cols += [idx[pairs[:, 1]], idx[pairs[:, 0]]]
    row, col = np.concatenate(rows), np.concatenate(cols)
    adj = sparse.csr_matrix((np.ones(len(row)), (row, col)), shape=(len(coords), len(coords)))
    return sparse.diags(1 / np.asarray(adj.sum(axis=1)).ravel()) @ adj


def _activities(features: np.ndarray, coords: np.ndarray, pitch: float, slide: np.ndarray) -> np.ndarray:
    """Program activities in [0, 1] per spot, from the image under the spot and around it.

    Region programs follow the region fraction under the spot (70 %) and in the ring of its six
    neighbours (30 %); ``nuclear`` follows the mean haematoxylin under the spot; ``interface`` is high
    in non-tumour spots with tumour within two rings (tumour margin).
    """
    ring1 = _neighbour_mean(coords, slide, 1.01 * pitch)
    ring2 = _neighbour_mean(coords, slide, 2.01 * pitch)
    n_regions = len(REGIONS)
    fractions = features[:, :n_regions]
    regional = 0.7 * fractions + 0.3 * (ring1 @ fractions)
    low, high = _NUCLEAR_RANGE
    nuclear = np.clip((features[:, n_regions] - low) / (high - low), 0, 1)
    tumour = fractions[:, REGIONS.index("tumour")]
    interface = np.clip(4 * (ring2 @ tumour) * (1 - tumour), 0, 1)
    return np.column_stack([regional, nuclear, interface])


def _solve_scale(log_mean: np.ndarray, dispersion: np.ndarray, target: float) -> float:
    """Log depth factor at which the expected fraction of zero counts equals ``target``."""

    def excess_zeros(log_scale: float) -> float:
        mu = np.exp(log_mean + log_scale)
        return float(np.exp(-np.log1p(dispersion * mu) / dispersion).mean()) - target

    if excess_zeros(_MAX_LOG_DEPTH) > 0:
        msg = f"zero_fraction={target} cannot be reached with this dispersion; lower the dispersion or raise zero_fraction."
        raise ValueError(msg)
    return optimize.brentq(excess_zeros, -_MAX_LOG_DEPTH, _MAX_LOG_DEPTH, xtol=1e-6)


def _check_synthetic_args(args: dict) -> None:
    """Raise ``ValueError`` naming the first argument of :func:`synthetic` (``args``: name -> value) out of range."""
    for name in ("n_slides", "n_spots", "n_genes", "slides_per_patient"):
        if int(args[name]) != args[name] or args[name] < 1:
            msg = f"{name} must be an integer >= 1, got {args[name]!r}."
            raise ValueError(msg)
    if not 0 < args["zero_fraction"] < 1:
        msg = f"zero_fraction must lie strictly between 0 and 1, got {args['zero_fraction']!r}."
        raise ValueError(msg)
    patterned, sparse_ = args["patterned_fraction"], args["sparse_fraction"]
    if not (0 <= patterned <= 1 and 0 <= sparse_ <= 1 and patterned + sparse_ <= 1):
        msg = (
            "patterned_fraction and sparse_fraction must lie in [0, 1] and sum to at most 1, got "
            f"{patterned!r} and {sparse_!r}."
        )
        raise ValueError(msg)
    dispersion, effect_size, batch_effect = args["dispersion"], args["effect_size"], args["batch_effect"]
    if not 0 < dispersion <= 10 or batch_effect < 0 or effect_size < 0:
        msg = (
            f"dispersion must lie in (0, 10] and effect_size, batch_effect must be >= 0; got dispersion={dispersion!r}, "
            f"effect_size={effect_size!r}, batch_effect={batch_effect!r}."
        )
        raise ValueError(msg)
    if args["pitch_px"] < 16:
        msg = f"pitch_px must be at least 16 pixels (nuclei need a few pixels each), got {args['pitch_px']!r}."
        raise ValueError(msg)
    if args["gene_names"] not in ("human", "generic"):
        msg = f"gene_names must be 'human' or 'generic', got {args['gene_names']!r}."
        raise ValueError(msg)


@dataclass
class _GeneModel:
    """Per-gene parameters of the expression model (see :func:`synthetic`'s Notes)."""

    var: pd.DataFrame
    base: np.ndarray
    loadings: np.ndarray  # (len(PROGRAMS), n_genes): each program gene's effect in its own program's row
    dispersion: np.ndarray


def _gene_model(
    rng: np.random.Generator,
    n_genes: int,
    gene_names: str,
    *,
    patterned_fraction: float,
    sparse_fraction: float,
    effect_size: float,
    dispersion: float,
) -> _GeneModel:
    """Genes: program membership, baseline level, effect and dispersion."""
    var = _genes(n_genes, gene_names, rng)
    n_patterned = round(patterned_fraction * n_genes)
    n_sparse = min(round(sparse_fraction * n_genes), n_genes - n_patterned)
    kinds = np.array(
        [PROGRAMS[i % len(PROGRAMS)] for i in range(n_patterned)]
        + ["sparse"] * n_sparse
        + ["background"] * (n_genes - n_patterned - n_sparse)
    )
    kinds = kinds[rng.permutation(n_genes)]
    base = rng.normal(0.0, 1.0, n_genes) - 4.5 * (kinds == "sparse")
    sign = np.where(rng.uniform(size=n_genes) < 0.2, -1.0, 1.0)
    effect = effect_size * rng.uniform(0.6, 1.4, n_genes) * sign
    loadings = np.zeros((len(PROGRAMS), n_genes))
    for p, program in enumerate(PROGRAMS):
        loadings[p, kinds == program] = effect[kinds == program]
    gene_dispersion = dispersion * np.exp(rng.normal(0.0, 0.3, n_genes))
    var["program"] = pd.Categorical(kinds, categories=[*PROGRAMS, "background", "sparse"])
    return _GeneModel(var, base, loadings, gene_dispersion)


def _counts(
    rng: np.random.Generator,
    genes: _GeneModel,
    activity: np.ndarray,
    slide_of: np.ndarray,
    patient_of: np.ndarray,
    *,
    batch_effect: float,
    zero_fraction: float,
) -> np.ndarray:
    """Negative binomial counts: size factors, per-patient and per-slide batch effects, the depth solved for."""
    n_slides, n_genes = len(patient_of), genes.base.size
    patient_shift = rng.normal(0.0, batch_effect, (patient_of.max() + 1, n_genes))
    slide_shift = patient_shift[patient_of] + rng.normal(0.0, batch_effect / 2, (n_slides, n_genes))
    log_size = rng.normal(0.0, 0.3, activity.shape[0]) + 0.5 * (activity[:, PROGRAMS.index("nuclear")] - 0.5)
    log_size += rng.normal(0.0, 0.15, n_slides)[slide_of]
    log_mean = genes.base + activity @ genes.loadings + slide_shift[slide_of] + log_size[:, None]
    probe = rng.choice(len(log_mean), min(len(log_mean), 1000), replace=False)
    log_mean += _solve_scale(log_mean[probe], genes.dispersion, zero_fraction)
    mean = np.exp(log_mean)
    del log_mean
    return rng.poisson(rng.gamma(1 / genes.dispersion, mean * genes.dispersion)).astype(np.float32)


def _splits(n_slides: int) -> list[str]:
    """Split of each slide: the last ``"test"``, the one before ``"val"`` (with two slides: train, val)."""
    splits = ["train"] * n_slides
    if n_slides >= 2:
        splits[-1 if n_slides == 2 else -2] = "val"
    if n_slides >= 3:
        splits[-1] = "test"
    return splits


def _obs(slides: list[_Slide], features: np.ndarray, slide_of: np.ndarray, patients: list[str]) -> pd.DataFrame:
    """Spot annotation: library, patient, lattice indices, split and the ground-truth region."""
    library_ids = [f"slide{i}" for i in range(len(slides))]
    splits = _splits(len(slides))
    array_row = np.concatenate([s.array_row for s in slides])
    array_col = np.concatenate([s.array_col for s in slides])
    region = features[:, : len(REGIONS)].argmax(axis=1)
    return pd.DataFrame(
        {
            "library_id": pd.Categorical(np.array(library_ids)[slide_of], categories=library_ids),
            "patient": pd.Categorical(np.array(patients)[slide_of], categories=sorted(set(patients))),
            "array_row": array_row.astype(np.int64),
            "array_col": array_col.astype(np.int64),
            "split": pd.Categorical(
                np.array(splits)[slide_of], categories=[s for s in ("train", "val", "test") if s in splits]
            ),
            "region": pd.Categorical(np.array(REGIONS)[region], categories=list(REGIONS)),
        },
        index=[f"{library_ids[s]}_{r}_{c}" for s, r, c in zip(slide_of, array_row, array_col, strict=True)],
    )


def _uns_spatial(slides: list[_Slide], patients: list[str], *, pitch_px: float, spot_diameter: float) -> dict:
    """``uns["spatial"]`` as :mod:`sepal_tl.io` readers write it; the full-resolution image is the hires one."""
    spatial = {}
    for i, (patient, slide) in enumerate(zip(patients, slides, strict=True)):
        images, scales = hires_lowres(slide.image, slide.image.shape[:2], 1.0, lowres_side=LOWRES_MAX_SIDE)
        metadata = {
            "source": "sepal_tl.datasets.synthetic",
            "patient": patient,
            "microns_per_pixel": _SPOT_MICRONS / pitch_px,
        }
        scalefactors = {"spot_diameter_fullres": float(spot_diameter), **scales}
        spatial[f"slide{i}"] = spatial_entry(images, scalefactors, metadata)
    return spatial


@renamed_arguments(seed="random_state")
def synthetic(
    *,
    n_slides: int = 3,
    n_spots: int = 600,
    n_genes: int = 300,
    random_state: int = 0,
    slides_per_patient: int = 2,
    zero_fraction: float = 0.45,
    patterned_fraction: float = 0.5,
    sparse_fraction: float = 0.1,
    effect_size: float = 1.5,
    dispersion: float = 0.5,
    batch_effect: float = 0.2,
    pitch_px: float = 64.0,
    gene_names: Literal["human", "generic"] = "human",
) -> AnnData:
    """Generate Visium-like slides with H&E-like images and counts that depend on the image.

    Every slide gets its own procedurally painted tissue (pink eosin stroma, purple haematoxylin
    nuclei whose density, size and darkness differ between four tissue types: stroma, tumour,
    immune infiltrate, adipose) and spots on a Visium hexagonal lattice. Expression follows six
    programs driven by the image under and around each spot, so a model can learn expression from
    histology; the rest are background genes without pattern and very sparse genes (for filters to
    remove). Counts are negative binomial. Generation takes about a second at the default size.

    Parameters
    ----------
    n_slides
        Number of slides (``obs["library_id"]`` = ``"slide0"``, ``"slide1"``, ...).
    n_spots
        Spots per slide.
    n_genes
        Number of genes.
    random_state
        Seed; the same arguments and seed give identical data. Formerly ``seed``, which still works with a
        :class:`FutureWarning`.
    slides_per_patient
        Consecutive slides are grouped into patients of this many slides (``obs["patient"]`` =
        ``"patient0"``, ...), so that batch correction on ``patient`` is meaningful.
    zero_fraction
        Expected fraction of zero counts, reached by solving for the overall sequencing depth.
    patterned_fraction
        Fraction of genes in one of the expression programs (:data:`PROGRAMS`).
    sparse_fraction
        Fraction of very lowly expressed genes (mean about 1 % of a typical gene).
    effect_size
        Typical natural-log fold change of a program gene between inactive and fully active spots.
        Each gene draws its own effect in ``effect_size * [0.6, 1.4]``; a fifth of them are negative.
    dispersion
        Typical negative-binomial dispersion φ (variance = μ + φμ²), at most 10; each gene varies around it.
    batch_effect
        Standard deviation of the per-patient log fold change of every gene; slides add a further
        per-slide effect of half that size, and a per-slide depth factor.
    pitch_px
        Distance between neighbouring spots in pixels (100 µm, so ``100 / pitch_px`` µm per pixel).
        The spot diameter is 55 % of it, as on Visium. At the default 64 px a 600-spot slide gives
        an image of about 1,700 × 1,700 px.
    gene_names
        ``"human"``: genes are a seeded sample of human protein-coding-like genes from the packaged
        GENCODE v43 table (``var["gene_ids"]`` Ensembl ids, ``var["gene_symbols"]`` and var names
        symbols), so :func:`sepal_tl.pp.tpm` finds their lengths exactly as for real data.
        ``"generic"``: genes are ``"GENE0001"``, ...; their made-up lengths are in
        ``var["gene_length"]`` (pass ``gene_lengths=adata.var["gene_length"]`` to TPM).

    Returns
    -------
    AnnData with spots × genes, laid out like the output of :mod:`sepal_tl.io` readers:

    - ``X``: raw counts, CSR ``float32``; ``layers["counts"]``: a copy.
    - ``obs``: ``library_id``, ``patient`` (categorical), ``array_row``, ``array_col`` (hex lattice,
      ``array_row + array_col`` even), ``split`` (by slide: the last slide ``"test"``, the one before
      ``"val"``, the others ``"train"``; with two slides ``"train"``/``"val"``), and the ground
      truth ``region`` (tissue type covering most of the spot).
    - ``obsm["spatial"]``: spot centres in full-resolution pixels (x = column, y = row).
    - ``var``: ``gene_ids``, ``gene_symbols`` (plus ``gene_length`` for generic names) and the ground
      truth ``program`` (one of :data:`PROGRAMS`, ``"background"`` or ``"sparse"``).
    - ``uns["spatial"][library_id]``: ``images["hires"]`` (the full-resolution ``uint8`` RGB image itself,
      so ``tissue_hires_scalef`` is 1) and ``images["lowres"]`` (longest side 600 px), ``scalefactors``
      and ``metadata`` (``patient``, ``microns_per_pixel``).
    - ``uns["sepal"]["datasets"]["synthetic"]``: the generation parameters.

    Notes
    -----
    Expression model, for spot s and gene g::

        counts ~ NB(mean = depth * size_s * exp(base_g + effect_g * activity_{s, program(g)} + batch_{slide, g}),
                    dispersion = φ_g)

    Program activities lie in [0, 1] and are functions of the image only: the fraction of each
    tissue type under the spot and its six neighbours (``stroma``, ``tumour``, ``immune``,
    ``adipose``), the mean haematoxylin (nuclear) stain under the spot (``nuclear``), and tumour in
    the two surrounding rings of non-tumour spots (``interface``, a margin signature only visible
    with spatial context). Size factors are log-normal and rise with nuclear density. Images carry
    a mild per-slide stain variation that does not change expression.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.synthetic(n_slides=2, n_spots=300, n_genes=100)
    >>> adata.obs["split"].value_counts().to_dict()
    {'train': 300, 'val': 300}
    """
    params = dict(locals())  # the arguments, recorded in uns['sepal']
    _check_synthetic_args(params)
    gene_seq, count_seq, *slide_seqs = np.random.SeedSequence(random_state).spawn(2 + n_slides)
    genes = _gene_model(
        np.random.default_rng(gene_seq),
        n_genes,
        gene_names,
        patterned_fraction=patterned_fraction,
        sparse_fraction=sparse_fraction,
        effect_size=effect_size,
        dispersion=dispersion,
    )
    spot_diameter = 0.55 * pitch_px
    slides = [
        _make_slide(np.random.default_rng(s), n_spots=n_spots, pitch=pitch_px, spot_diameter=spot_diameter)
        for s in slide_seqs
    ]

    # Spots: activities from the image, then counts with size factors and batch effects.
    slide_of = np.repeat(np.arange(n_slides), n_spots)
    patient_of = np.arange(n_slides) // slides_per_patient
    coords = np.concatenate([s.coords for s in slides])
    features = np.concatenate([s.features for s in slides])
    activity = _activities(features, coords, pitch_px, slide_of)
    rng = np.random.default_rng(count_seq)
    counts = _counts(rng, genes, activity, slide_of, patient_of, batch_effect=batch_effect, zero_fraction=zero_fraction)

    patients = [f"patient{p}" for p in patient_of]
    x = sparse.csr_matrix(counts)
    adata = AnnData(X=x, obs=_obs(slides, features, slide_of, patients), var=genes.var)
    adata.layers[COUNTS] = x.copy()
    adata.obsm["spatial"] = coords.astype(np.float64)
    adata.uns["spatial"] = _uns_spatial(slides, patients, pitch_px=pitch_px, spot_diameter=spot_diameter)
    record(adata, "datasets", "synthetic", params)
    logger.info(
        "synthetic: %d slides x %d spots x %d genes, %.1f %% zeros",
        n_slides,
        n_spots,
        n_genes,
        100 * (1 - x.nnz / max(counts.size, 1)),
    )
    return adata
