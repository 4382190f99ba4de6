"""Argument parsing and the three commands."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from sepal_tl._cli._config import ConfigError, load_config


def _demo(args: argparse.Namespace) -> int:
    import sepal_tl as sepal
    from sepal_tl._cli._pipeline import run_pipeline

    start = time.perf_counter()
    print(f"Generating the synthetic dataset (seed {args.seed}) ...", flush=True)
    adata = sepal.datasets.synthetic(seed=args.seed)
    print(f"  {adata.n_obs} spots x {adata.n_vars} genes on {adata.obs['library_id'].nunique()} slides", flush=True)
    train = sorted(adata.obs.loc[adata.obs["split"] == "train", "library_id"].astype(str).unique())
    report = run_pipeline(
        adata,
        out_dir=args.out,
        pp_preset="synthetic",
        pp_overrides={},
        rank_slides=train,
        model_preset="cpu",
        model_options={"device": "cpu", "random_state": args.seed},
        spatial=True,
        title="SEPAL demo on synthetic slides",
    )
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Report: {report}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from sepal_tl._cli._data import load_data
    from sepal_tl._cli._pipeline import assign_split, run_pipeline
    from sepal_tl.pp import PRESETS as PP_PRESETS
    from sepal_tl.tl._fit import stage_options

    try:
        config = load_config(args.config)
        pp = config.preprocess
        if pp["preset"] not in PP_PRESETS:
            raise ConfigError(f"'preprocess.preset' = {pp['preset']!r}; choose one of {list(PP_PRESETS)}.")
        overrides = dict(pp.get("overrides", {}))
        if str(overrides.get("combat_key", "")).lower() == "none":  # TOML has no null
            overrides["combat_key"] = None
        bad = sorted(set(overrides) - set(PP_PRESETS[pp["preset"]]))
        if bad:
            raise ConfigError(
                f"Unknown key(s) {bad} in 'preprocess.overrides'; valid: {sorted(PP_PRESETS[pp['preset']])}."
            )
        try:
            stage_options(config.model.get("preset"), **config.model.get("options", {}))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"[model]: {err}") from err
    except ConfigError as err:
        print(f"sepal run: bad configuration: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    adata = load_data(config.data)
    assign_split(adata, config.split)
    report = run_pipeline(
        adata,
        out_dir=config.output["dir"],
        pp_preset=pp["preset"],
        pp_overrides=overrides,
        rank_slides=config.split["train"] if pp.get("rank_on_train", True) else None,
        model_preset=config.model.get("preset"),
        model_options=config.model.get("options", {}),
        spatial=config.model.get("spatial", True),
        genes_to_plot=config.output.get("genes_to_plot", 4),
        title=f"SEPAL run: {config.source.name}",
    )
    print(f"\nDone in {time.perf_counter() - start:.0f} s. Report: {report}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    import sepal_tl as sepal
    from sepal_tl._cli._report import gene_maps

    image = Path(args.image)
    if not image.is_file():
        print(f"sepal predict: image {str(image)!r} does not exist.", file=sys.stderr)
        return 2
    model = sepal.tl.SepalModel.load(args.model_dir)
    spots = sepal.io.spot_grid(
        image, spot_diameter_px=args.spot_diameter, pitch_px=args.pitch, library_id=args.library_id
    )
    print(f"{spots.n_obs} virtual spots over the tissue; predicting {model.n_genes} genes ...", flush=True)
    predicted = sepal.tl.predict(spots, model, device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predicted.write_h5ad(out / "predicted.h5ad")
    paths = gene_maps(predicted, out / "figures", n_genes=args.genes, layer="sepal")
    print(f"wrote {out / 'predicted.h5ad'} and {len(paths)} gene maps in {out / 'figures'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sepal`` console script."""
    parser = argparse.ArgumentParser(prog="sepal", description="SEPAL: spatial gene expression from H&E histology.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="the whole pipeline on the embedded synthetic dataset (CPU, minutes)")
    demo.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data and the model (default: 0)")
    demo.set_defaults(func=_demo)

    run = commands.add_parser("run", help="the pipeline on real data described by a TOML file (configs/*.toml)")
    run.add_argument("config", help="path of the TOML configuration")
    run.set_defaults(func=_run)

    predict = commands.add_parser("predict", help="expression maps for an H&E image with a saved model")
    predict.add_argument("model_dir", help="directory written by SepalModel.save / sepal run")
    predict.add_argument("image", help="H&E image (TIFF / JPEG / PNG), full resolution")
    predict.add_argument("--spot-diameter", type=float, required=True, help="spot diameter in image pixels")
    predict.add_argument("--pitch", type=float, default=None, help="spot pitch in pixels (default: 2 x diameter)")
    predict.add_argument("--library-id", default="he", help="name of the slide (default: he)")
    predict.add_argument("--genes", type=int, default=4, help="gene maps to draw (default: 4)")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--out", default="predict_out", help="output directory (default: predict_out)")
    predict.set_defaults(func=_predict)

    args = parser.parse_args(argv)
    return args.func(args)
