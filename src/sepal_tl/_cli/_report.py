"""``report.md`` and its figures for a SEPAL run."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # the command line never opens windows

import matplotlib.pyplot as plt
import pandas as pd
from anndata import AnnData

import sepal_tl as sepal
from sepal_tl._atomic import atomic_folder, write_text
from sepal_tl._keys import DEFAULT_LIBRARY_KEY, DENOISED, METRICS, PREDICTION, SPLIT, gene_score_column, local_layer


def _markdown(table: pd.DataFrame) -> str:
    header = "| model | " + " | ".join(table.columns) + " |"
    rule = "|---|" + "---:|" * len(table.columns)
    rows = [
        f"| {name} | " + " | ".join("n/a" if pd.isna(v) else f"{v:.4f}" for v in row) + " |"
        for name, row in table.iterrows()
    ]
    return "\n".join([header, rule, *rows])


def gene_maps(
    adata: AnnData, folder: Path, *, n_genes: int, layer: str, truth: str | None = None, library_id: str | None = None
) -> list[Path]:
    """PNG gene maps of the ``n_genes`` most variable predicted genes (with the ground truth when given)."""
    folder.mkdir(parents=True, exist_ok=True)
    spread = pd.Series(adata.layers[layer].std(axis=0), index=adata.var_names)
    library = library_id or str(adata.obs["library_id"].astype(str).iloc[0])
    paths = []
    for gene in spread.sort_values(ascending=False).index[:n_genes]:
        path = folder / f"gene_map_{gene}.png"
        layers = (layer,) if truth is None else (truth, layer)
        sepal.pl.gene_map(
            adata, gene, layers=layers, library_id=library, mark_imputed=truth is not None, save=path, show=False
        )
        paths.append(path)
    plt.close("all")
    return paths


def write_report(
    out: Path,
    adata: AnnData,
    model,
    *,
    summary: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    timings: dict[str, float],
    genes_to_plot: int,
    title: str,
) -> Path:
    """Write ``report.md`` with the metric tables and PNG figures (gene maps, PCC histogram, training curves).

    The figures are drawn into a temporary folder that replaces ``figures/`` once complete; the report is
    written (atomically) after them, so it never points to figures of another run.
    """
    with atomic_folder(out / "figures") as figures:
        images = _draw_figures(figures, adata, model, tables=tables, genes_to_plot=genes_to_plot)
    lines = _report_lines(model, summary=summary, tables=tables, timings=timings, images=images, title=title)
    report = out / "report.md"
    write_text(report, "\n".join(lines))
    return report


def _draw_figures(
    figures: Path, adata: AnnData, model, *, tables: dict[str, pd.DataFrame], genes_to_plot: int
) -> list[tuple[str, Path]]:
    split = "test" if "test" in tables else next(iter(tables), None)
    images = []
    if split is not None:
        pred = PREDICTION if PREDICTION in adata.layers else local_layer(PREDICTION)
        pcc_key = gene_score_column(pred, "pcc", split)
        best = adata.var[pcc_key].dropna().sort_values(ascending=False).index[:genes_to_plot].tolist()
        library = adata.obs.loc[adata.obs[SPLIT] == split, DEFAULT_LIBRARY_KEY].astype(str).iloc[0]
        for gene in best:
            path = figures / f"gene_map_{gene}.png"
            sepal.pl.gene_map(
                adata,
                gene,
                layers=(DENOISED, pred),
                library_id=library,
                pcc_key=pcc_key,
                save=path,
                show=False,
            )
            images.append((f"{gene} on {library} ({split}): ground truth and prediction", path))
        path = figures / "pcc_histogram.png"
        sepal.pl.pcc_histogram(adata, pred=pred, split=split, save=path, show=False)
        images.append((f"Per-gene PCC on the {split} split", path))
        path = figures / "metrics.png"
        sepal.pl.metrics(tables[split], save=path, show=False)
        images.append((f"Metrics on the {split} split", path))
    path = figures / "training_curves.png"
    sepal.pl.training_curves(model, save=path, show=False)
    images.append(("Training curves", path))
    plt.close("all")
    return images


def _report_lines(
    model,
    *,
    summary: pd.DataFrame,
    tables: dict[str, pd.DataFrame],
    timings: dict[str, float],
    images: list[tuple[str, Path]],
    title: str,
) -> list[str]:
    lines = [
        f"# {title}",
        "",
        f"Model: `{model!r}`",
        "",
        "## Preprocessing (sepal.pp.run)",
        "",
        "| step | spots | genes |",
        "|---|---:|---:|",
        *[f"| {step} | {row.n_spots} | {row.n_genes} |" for step, row in summary.iterrows()],
        "",
        f"Imputed fraction (zeros filled by the adaptive median filter): {summary.attrs['imputed_fraction']:.1%}",
        "",
        "## Metrics",
        "",
        "Computed on observed (non-imputed) entries only, on absolute log2(TPM + 1); 'train mean' predicts every spot "
        "as the mean of the training spots.",
        "",
    ]
    for name, table in tables.items():
        lines += [f"### {name} split", "", _markdown(table[list(METRICS)]), ""]
    lines += ["## Figures", ""]
    lines += [f"![{caption}](figures/{path.name})\n\n{caption}\n" for caption, path in images]
    lines += [
        "## Timings",
        "",
        *[f"- {step}: {seconds:.1f} s" for step, seconds in timings.items()],
        "",
        "Outputs: `processed.h5ad` (data with predictions in layers `sepal` / `sepal_local`), `model/` (weights as "
        "safetensors + config.json; load with `sepal.tl.SepalModel.load`).",
        "",
    ]
    return lines
