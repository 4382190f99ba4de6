"""The whole SEPAL run shared by ``sepal demo`` and ``sepal run``: preprocess, fit, evaluate, save, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
from anndata import AnnData

import sepal_tl as sepal
from sepal_tl._cli._config import check_split_slides
from sepal_tl._cli._output import write_h5ad
from sepal_tl._cli._report import write_report
from sepal_tl._keys import BASELINE, PREDICTION, SPLIT, local_layer

LIBRARY_KEY = "library_id"


def assign_split(adata: AnnData, split: dict[str, list[str]]) -> None:
    """``obs["split"]`` by slide from ``{"train": [...], "val": [...], "test": [...]}``; unknown slides fail."""
    libraries = adata.obs[LIBRARY_KEY].astype(str)
    check_split_slides(split, sorted(set(libraries)))
    named = {lib: name for name, libs in split.items() for lib in libs}
    adata.obs[SPLIT] = pd.Categorical(libraries.map(named), categories=["train", "val", "test"])


def evaluate_models(adata: AnnData) -> dict[str, pd.DataFrame]:
    """Per evaluated split: SEPAL, the local encoder alone, and the train-mean baseline on the same entries."""
    tables = {}
    names = {PREDICTION: "SEPAL", local_layer(PREDICTION): "local encoder only", BASELINE: "train mean"}
    splits = [s for s in ("val", "test") if (adata.obs[SPLIT] == s).any()]
    for split in splits:
        rows = []
        if PREDICTION in adata.layers:
            rows.append(sepal.tl.evaluate(adata, pred=PREDICTION, split=split, baseline=False))
        table = sepal.tl.evaluate(adata, pred=local_layer(PREDICTION), split=split, baseline=True)
        rows.append(table)
        combined = pd.concat(rows)
        combined.index = [names[i] for i in combined.index]
        tables[split] = combined
    return tables


def run_pipeline(
    adata: AnnData,
    *,
    out_dir: str | Path,
    pp_preset: str,
    pp_overrides: dict[str, Any],
    rank_slides: list[str] | None,
    model_preset: str | None,
    model_options: dict[str, Any],
    spatial: bool,
    genes_to_plot: int = 4,
    title: str = "SEPAL run",
) -> Path:
    """Run everything on ``adata`` (with ``obs["split"]``) and write the results to ``out_dir``; return the report.

    ``out_dir`` is expected to be held by :func:`~sepal_tl._cli._output.output_folder`; every file is replaced
    atomically and the report is written last.
    """
    out = Path(out_dir)
    timings: dict[str, float] = {}
    start = time.perf_counter()
    print(f"[1/4] preprocessing (sepal.pp.run, preset {pp_preset!r}) ...", flush=True)
    sepal.pp.run(adata, preset=pp_preset, slides=rank_slides, library_key=LIBRARY_KEY, **pp_overrides)
    summary = sepal.pp.run_summary(adata)
    timings["preprocessing"] = time.perf_counter() - start

    print(f"[2/4] fitting the model (preset {model_preset!r}, spatial stage: {spatial}) ...", flush=True)
    start = time.perf_counter()
    model = sepal.tl.fit(adata, preset=model_preset, spatial=spatial, library_key=LIBRARY_KEY, **model_options)
    timings["training"] = time.perf_counter() - start

    print("[3/4] evaluating against the local encoder alone and the train-mean baseline ...", flush=True)
    tables = evaluate_models(adata)
    for split, table in tables.items():
        print(f"\n{split}:\n{table[['MSE', 'MAE', 'PCC-Gene', 'R2-Gene', 'PCC-Patch', 'R2-Patch']].round(4)}\n")

    print("[4/4] saving the model, the processed data and the report ...", flush=True)
    model.save(out / "model", overwrite=True)
    write_h5ad(adata, out / "processed.h5ad")
    report = write_report(
        out,
        adata,
        model,
        summary=summary,
        tables=tables,
        timings=timings,
        genes_to_plot=genes_to_plot,
        title=title,
    )
    return report
