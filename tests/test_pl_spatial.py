"""sepal.pl.gene_map and sepal.pl.denoising: spots on the H&E, checked on the drawn figure."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import sepal_tl as sepal
from sepal_tl.pl._utils import IMPUTED_GID, SPOTS_GID

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def adata(evaluated):
    """The shared evaluated data with the spatial prediction only (no ``sepal_local`` layer)."""
    adata = evaluated[0].copy()
    del adata.layers["sepal_local"]
    return adata


def _test_library(adata) -> str:
    return str(adata.obs.loc[adata.obs["split"] == "test", "library_id"].iloc[0])


def _rows(adata, lib):
    return np.flatnonzero((adata.obs["library_id"] == lib).to_numpy())


def _collections(ax, gid):
    return [c for c in ax.collections if c.get_gid() == gid]


def _spots(ax):
    (spots,) = _collections(ax, SPOTS_GID)
    return spots


def _n_marks(ax) -> int:
    return sum(len(c.get_offsets()) for c in _collections(ax, IMPUTED_GID))


def _genes_with_imputed(adata, lib, k=2):
    rows = _rows(adata, lib)
    n_imputed = (~adata.layers["observed"][rows]).sum(axis=0)
    order = np.argsort(-n_imputed)
    assert n_imputed[order[k - 1]] > 0
    return [adata.var_names[i] for i in order[:k]]


# ---------------------------------------------------------------------------------------------------------------
# gene_map
# ---------------------------------------------------------------------------------------------------------------
def test_gene_map_panels_titles_and_pcc(adata, tmp_path):
    lib = _test_library(adata)
    genes = _genes_with_imputed(adata, lib)
    path = tmp_path / "gene_map.png"
    axes = sepal.pl.gene_map(adata, genes, library_id=lib, save=path)
    assert path.read_bytes()[:8] == PNG_MAGIC
    assert isinstance(axes, list) and len(axes) == 4 and all(isinstance(a, Axes) for a in axes)
    fig = axes[0].figure
    assert len(fig.axes) == 4 + 2  # four panels and one colourbar per gene
    assert fig.get_suptitle() == f"library {lib}"
    for g, gene in enumerate(genes):
        truth_ax, pred_ax = axes[2 * g], axes[2 * g + 1]
        assert truth_ax.get_title() == f"{gene} · denoised"
        pcc = adata.var.loc[gene, "sepal_pcc_test"]
        assert pred_ax.get_title() == f"{gene} · sepal\nPCC (test) = {pcc:.3f}"


def test_gene_map_spots_are_true_size_circles_at_the_coordinates(adata):
    lib = _test_library(adata)
    gene = adata.var_names[0]
    (truth_ax, pred_ax) = sepal.pl.gene_map(adata, gene, library_id=lib)
    rows = _rows(adata, lib)
    diameter = adata.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"]
    for ax in (truth_ax, pred_ax):
        spots = _spots(ax)
        assert len(spots.get_offsets()) == rows.size  # one circle per spot of this library
        np.testing.assert_allclose(spots.get_offsets(), adata.obsm["spatial"][rows])
        np.testing.assert_allclose(spots.get_widths(), diameter)
        np.testing.assert_allclose(spots.get_heights(), diameter)
        # the H&E lies under the spots, placed in full-resolution pixels with the hires scale factor
        (image,) = ax.get_images()
        hires = adata.uns["spatial"][lib]["images"]["hires"]
        scale = adata.uns["spatial"][lib]["scalefactors"]["tissue_hires_scalef"]
        left, right, bottom, top = image.get_extent()
        assert right - left == pytest.approx(hires.shape[1] / scale)
        assert bottom - top == pytest.approx(hires.shape[0] / scale)
        assert ax.get_ylim()[0] > ax.get_ylim()[1]  # y grows downwards, as in the image
    np.testing.assert_allclose(_spots(truth_ax).get_array(), adata[rows, gene].layers["denoised"].ravel(), rtol=1e-6)
    np.testing.assert_allclose(_spots(pred_ax).get_array(), adata[rows, gene].layers["sepal"].ravel(), rtol=1e-6)


def test_gene_map_shares_the_colour_scale_within_a_gene(adata):
    lib = _test_library(adata)
    genes = list(adata.var_names[:3])
    axes = sepal.pl.gene_map(adata, genes, library_id=lib, layers=("log2tpm", "denoised", "sepal"))
    rows = _rows(adata, lib)
    limits = []
    for g, gene in enumerate(genes):
        block = axes[3 * g : 3 * g + 3]
        clims = {_spots(ax).get_clim() for ax in block}
        assert len(clims) == 1
        union = np.concatenate(
            [np.asarray(adata[rows, gene].layers[layer].todense()).ravel() for layer in ("log2tpm",)]
            + [adata[rows, gene].layers[layer].ravel() for layer in ("denoised", "sepal")]
        )
        np.testing.assert_allclose(clims.pop(), (union.min(), union.max()), rtol=1e-6)
        limits.append(_spots(block[0]).get_clim())
    assert len(set(limits)) == len(genes)  # each gene has its own scale
    # and each gene's colourbar shows that scale
    colorbars = [ax for ax in axes[0].figure.axes if ax not in axes]
    assert len(colorbars) == len(genes)


def test_gene_map_marks_imputed_spots(adata):
    lib = _test_library(adata)
    genes = _genes_with_imputed(adata, lib, k=2)
    axes = sepal.pl.gene_map(adata, genes, library_id=lib)
    rows = _rows(adata, lib)
    for g, gene in enumerate(genes):
        imputed = ~adata[rows, gene].layers["observed"].ravel()
        for ax in axes[2 * g : 2 * g + 2]:
            assert _n_marks(ax) == imputed.sum()
            (marks,) = _collections(ax, IMPUTED_GID)
            np.testing.assert_allclose(marks.get_offsets(), adata.obsm["spatial"][rows][imputed])
        legend = axes[2 * g].get_legend()
        assert legend is not None and legend.get_texts()[0].get_text() == f"imputed ({imputed.sum()})"
    assert all(_n_marks(ax) == 0 for ax in sepal.pl.gene_map(adata, genes, library_id=lib, mark_imputed=False))


def test_gene_map_pcc_on_the_fly_and_off(adata):
    lib = _test_library(adata)
    gene = adata.var_names[1]
    del adata.var["sepal_pcc_test"]
    _, pred_ax = sepal.pl.gene_map(adata, gene, library_id=lib)
    rows = _rows(adata, lib)
    observed = adata[rows, gene].layers["observed"].ravel()
    truth = adata[rows, gene].layers["denoised"].ravel()[observed]
    pred = adata[rows, gene].layers["sepal"].ravel()[observed]
    expected = np.corrcoef(truth, pred)[0, 1]
    assert pred_ax.get_title() == f"{gene} · sepal\nPCC ({lib}, observed spots) = {expected:.3f}"
    axes = sepal.pl.gene_map(adata, gene, library_id=lib, pcc_key=False)
    assert all("PCC" not in ax.get_title() for ax in axes)
    with pytest.raises(KeyError, match="sepal_pcc_val"):
        sepal.pl.gene_map(adata, gene, library_id=lib, pcc_key="sepal_pcc_val")


def test_gene_map_layout_options(adata):
    lib = _test_library(adata)
    genes = list(adata.var_names[:4])
    axes = sepal.pl.gene_map(adata, genes, library_id=lib, ncols=2, img=False, layers="denoised", spot_scale=0.5)
    assert len(axes) == 4
    assert all(not ax.get_images() for ax in axes)
    tops = [round(ax.get_position().y1, 3) for ax in axes]
    assert tops[0] == tops[1] and tops[2] == tops[3] and tops[0] > tops[2]  # two genes per row
    diameter = adata.uns["spatial"][lib]["scalefactors"]["spot_diameter_fullres"]
    np.testing.assert_allclose(_spots(axes[0]).get_widths(), 0.5 * diameter)
    # lowres image, scaled with its own factor
    (ax, _) = sepal.pl.gene_map(adata, genes[0], library_id=lib, img_key="lowres")
    lowres = adata.uns["spatial"][lib]["images"]["lowres"]
    scale = adata.uns["spatial"][lib]["scalefactors"]["tissue_lowres_scalef"]
    left, right, _, _ = ax.get_images()[0].get_extent()
    assert right - left == pytest.approx(lowres.shape[1] / scale)


def test_gene_map_return_types(adata):
    lib = _test_library(adata)
    gene = adata.var_names[0]
    fig = sepal.pl.gene_map(adata, gene, library_id=lib, return_fig=True)
    assert isinstance(fig, Figure)
    assert isinstance(sepal.pl.gene_map(adata, gene, library_id=lib, show=False), list)
    assert isinstance(sepal.pl.gene_map(adata, gene, library_id=lib), list)  # show=None, not interactive
    assert sepal.pl.gene_map(adata, gene, library_id=lib, show=True) is None


def test_gene_map_single_library(adata):
    lib = _test_library(adata)
    one = adata[adata.obs["library_id"] == lib].copy()
    axes = sepal.pl.gene_map(one, one.var_names[0])  # library_id=None: the only slide
    assert len(_spots(axes[0]).get_offsets()) == one.n_obs
    # without a library column, the only uns["spatial"] entry is the slide's
    del one.obs["library_id"]
    one.uns["spatial"] = {lib: one.uns["spatial"][lib]}
    axes = sepal.pl.gene_map(one, one.var_names[0], pcc_key=False)
    assert len(_spots(axes[0]).get_offsets()) == one.n_obs and len(axes[0].get_images()) == 1
    assert axes[0].figure.get_suptitle() == f"library {lib}"


def test_gene_map_fixed_colour_scale(adata):
    axes = sepal.pl.gene_map(adata, list(adata.var_names[:2]), library_id="slide0", vmin=0, vmax=20)
    assert {_spots(ax).get_clim() for ax in axes} == {(0.0, 20.0)}
    with pytest.raises(ValueError, match="vmin must be below vmax"):
        sepal.pl.gene_map(adata, adata.var_names[0], library_id="slide0", vmin=3, vmax=1)


def test_gene_map_errors(adata):
    with pytest.raises(ValueError, match=r"3 slides \(\['slide0', 'slide1', 'slide2'\]\).*library_id="):
        sepal.pl.gene_map(adata, adata.var_names[0])
    with pytest.raises(ValueError, match="slide9.*slide0"):
        sepal.pl.gene_map(adata, adata.var_names[0], library_id="slide9")
    with pytest.raises(KeyError, match="NOTAGENE"):
        sepal.pl.gene_map(adata, [adata.var_names[0], "NOTAGENE"], library_id="slide0")
    with pytest.raises(KeyError, match=r"'sepal_local'.*sepal.tl"):
        sepal.pl.gene_map(adata, adata.var_names[0], library_id="slide0", layers=("denoised", "sepal_local"))
    with pytest.raises(KeyError, match="img=False"):
        sepal.pl.gene_map(adata, adata.var_names[0], library_id="slide0", img_key="fullres")
    no_mask = adata.copy()
    del no_mask.layers["observed"]
    with pytest.warns(UserWarning, match="imputed spots are not marked"):
        sepal.pl.gene_map(no_mask, adata.var_names[0], library_id="slide0")
    assert plt.get_fignums() == [1]  # errors are raised before any figure is made


# ---------------------------------------------------------------------------------------------------------------
# denoising
# ---------------------------------------------------------------------------------------------------------------
def test_denoising_before_after(adata, tmp_path):
    lib = "slide0"
    (gene,) = _genes_with_imputed(adata, lib, k=1)
    path = tmp_path / "denoising"
    before_ax, after_ax = sepal.pl.denoising(adata, gene, library_id=lib, save=path)
    assert (tmp_path / "denoising.png").read_bytes()[:8] == PNG_MAGIC  # PNG when there is no extension
    rows = _rows(adata, lib)
    imputed = ~adata[rows, gene].layers["observed"].ravel()
    assert before_ax.get_title() == f"{gene} · before filter (log2tpm)"
    assert after_ax.get_title().startswith(f"{gene} · after filter (denoised)\n{imputed.sum()} of {rows.size} spots")
    assert _spots(before_ax).get_clim() == _spots(after_ax).get_clim()
    assert len(_spots(before_ax).get_offsets()) == len(_spots(after_ax).get_offsets()) == rows.size
    assert _n_marks(before_ax) == 0
    assert _n_marks(after_ax) == imputed.sum()
    # the zeros of the "before" layer are exactly the imputed spots
    before = np.asarray(_spots(before_ax).get_array())
    np.testing.assert_array_equal(before == 0, imputed)
    assert len(after_ax.figure.axes) == 3  # two panels and the colourbar


def test_denoising_return_and_errors(adata):
    gene = adata.var_names[0]
    assert isinstance(sepal.pl.denoising(adata, gene, library_id="slide1", return_fig=True), Figure)
    with pytest.raises(TypeError, match="gene_map"):
        sepal.pl.denoising(adata, [gene], library_id="slide1")
    with pytest.raises(KeyError, match="NOTAGENE"):
        sepal.pl.denoising(adata, "NOTAGENE", library_id="slide1")
    with pytest.raises(KeyError, match=r"'raw'.*available"):
        sepal.pl.denoising(adata, gene, library_id="slide1", before="raw")
    with pytest.raises(ValueError, match="boolean"):
        sepal.pl.denoising(adata, gene, library_id="slide1", mask="denoised")
    with pytest.raises(ValueError, match="library_id="):
        sepal.pl.denoising(adata, gene)


def test_gene_map_single_panel_into_ax_and_layer(adata):
    lib = _test_library(adata)
    gene = adata.var_names[0]
    fig, (left, right) = plt.subplots(1, 2)
    out = sepal.pl.gene_map(adata, gene, layer="sepal", library_id=lib, ax=right)
    assert out is right and not left.collections and fig._suptitle is None
    rows = _rows(adata, lib)
    np.testing.assert_allclose(_spots(right).get_array(), adata.layers["sepal"][rows, 0])
    assert right.get_title().startswith(f"{gene} · sepal")
    with pytest.raises(ValueError, match="ax= draws one panel, but 2 gene"):
        sepal.pl.gene_map(adata, list(adata.var_names[:2]), layer="sepal", library_id=lib, ax=left)


def test_save_follows_scanpy(adata, figdir):
    tmp_path = figdir
    lib = _test_library(adata)
    sepal.pl.gene_map(adata, adata.var_names[0], library_id=lib, save=True)
    sepal.pl.denoising(adata, adata.var_names[0], library_id=lib, save="_C2.svg")
    sepal.pl.pcc_histogram(adata, save="_test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["denoising_C2.svg", "gene_map.png", "pcc_histogram_test.png"]
    assert (tmp_path / "gene_map.png").read_bytes()[:8] == PNG_MAGIC
    # a path with a folder is used as given
    sepal.pl.pcc_histogram(adata, save=tmp_path / "sub" / "hist")
    assert (tmp_path / "sub" / "hist.png").is_file()
