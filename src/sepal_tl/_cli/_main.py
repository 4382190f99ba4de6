"""Argument parsing and the three commands."""

from __future__ import annotations

import argparse
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from sepal_tl._atomic import FolderLockedError
from sepal_tl._cli._checks import check_device, check_model_folder, check_writable
from sepal_tl._cli._config import ConfigError, RunConfig, load_config
from sepal_tl._cli._output import output_folder, write_h5ad
from sepal_tl._docs import PITCH_DEFAULT
from sepal_tl._keys import DEFAULT_LIBRARY_KEY, SPLIT


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return value


def _demo(args: argparse.Namespace) -> int:
    import sepal_tl as sepal
    from sepal_tl._cli._pipeline import run_pipeline

    out = check_writable(args.out, "--out")
    check_model_folder(out / "model", "--out")
    start = time.perf_counter()
    with output_folder(out):
        print(f"Generating the synthetic dataset (seed {args.seed}) ...", flush=True)
        adata = sepal.datasets.synthetic(random_state=args.seed)
        n_slides = adata.obs["library_id"].nunique()
        print(f"  {adata.n_obs} spots x {adata.n_vars} genes on {n_slides} slides", flush=True)
        train = sorted(adata.obs.loc[adata.obs[SPLIT] == "train", DEFAULT_LIBRARY_KEY].astype(str).unique())
        report = run_pipeline(
            adata,
            out_dir=out,
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


def _check_run_config(path: str) -> tuple[RunConfig, dict[str, Any], Path]:
    """Everything ``sepal run`` can check before step 1: the file, option values, devices, the output folder."""
    from sepal_tl._cli._checks import check_model_options, check_pp_overrides
    from sepal_tl.pp import PRESETS as PP_PRESETS

    config = load_config(path)
    pp = config.preprocess
    if pp["preset"] not in PP_PRESETS:
        raise ConfigError(f"'preprocess.preset' = {pp['preset']!r}; choose one of {list(PP_PRESETS)}.")
    overrides = dict(pp.get("overrides", {}))
    if str(overrides.get("combat_key", "")).lower() == "none":  # TOML has no null
        overrides["combat_key"] = None
    bad = sorted(set(overrides) - set(PP_PRESETS[pp["preset"]]))
    if bad:
        raise ConfigError(f"Unknown key(s) {bad} in 'preprocess.overrides'; valid: {sorted(PP_PRESETS[pp['preset']])}.")
    check_pp_overrides(overrides, dict(PP_PRESETS[pp["preset"]]))
    check_model_options(config.model.get("preset"), config.model.get("options", {}))
    out = check_writable(config.output["dir"], "output.dir")
    check_model_folder(out / "model", "output.dir")
    return config, overrides, out


def _run(args: argparse.Namespace) -> int:
    from sepal_tl._cli._data import load_data
    from sepal_tl._cli._pipeline import assign_split, run_pipeline

    config, overrides, out = _check_run_config(args.config)
    start = time.perf_counter()
    with output_folder(out):
        adata = load_data(config.data)
        assign_split(adata, config.split)
        report = run_pipeline(
            adata,
            out_dir=out,
            pp_preset=config.preprocess["preset"],
            pp_overrides=overrides,
            rank_slides=config.split["train"] if config.preprocess.get("rank_on_train", True) else None,
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
    from sepal_tl._atomic import atomic_folder
    from sepal_tl._cli._report import gene_maps
    from sepal_tl.io._common import check_library_id
    from sepal_tl.io._images import check_image_file

    image = Path(args.image)
    spots_file = image.suffix in (".h5ad", ".zarr")  # spots (and images) of a slide, read by sepal.io.read_spots
    if not image.exists() or not (spots_file or image.is_file()):
        raise ConfigError(f"image {str(image)!r} does not exist or is not a file.")
    if not spots_file:
        check_image_file(image)  # a non-image or truncated file fails here, before the model is loaded
        if args.spot_diameter is None:
            raise ConfigError("--spot-diameter is required to lay virtual spots over an image.")
    library_id = check_library_id(args.library_id)
    check_device(args.device, "--device")
    out = check_writable(args.out, "--out")
    model = sepal.tl.SepalModel.load(args.model_dir)
    geometry = args.geometry
    if geometry == "auto":
        spatial = model.config.get("spatial") or {}
        geometry = spatial.get("training", {}).get("lattice", "hex")
        geometry = geometry if geometry in ("hex", "square") else "hex"
    with output_folder(out, report=None):
        if spots_file:
            spots = sepal.io.read_spots(image)
        else:
            spots = sepal.io.spot_grid(
                image,
                spot_diameter_px=args.spot_diameter,
                pitch_px=args.pitch,
                library_id=library_id,
                geometry=geometry,
            )
        print(f"{spots.n_obs} virtual spots over the tissue; predicting {model.n_genes} genes ...", flush=True)
        predicted = sepal.tl.predict(spots, model, device=args.device)
        write_h5ad(predicted, out / "predicted.h5ad")
        with atomic_folder(out / "figures") as figures:
            paths = gene_maps(predicted, figures, n_genes=args.genes, layer="sepal")
    print(f"wrote {out / 'predicted.h5ad'} and {len(paths)} gene maps in {out / 'figures'}")
    return 0


#: Errors a user causes (bad input, files, folders, configuration): one line and exit code 2.
_USER_ERRORS = (ValueError, KeyError, FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError,
                PermissionError, FolderLockedError)  # fmt: skip


def _one_line(err: BaseException) -> str:
    text = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
    return " ".join(str(text).split()) or type(err).__name__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sepal", description="SEPAL: spatial gene expression from H&E histology.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an error"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser(
        "demo", parents=[common], help="the whole pipeline on the embedded synthetic dataset (CPU, minutes)"
    )
    demo.add_argument("--out", default="demo_out", help="output directory (default: demo_out)")
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="seed of the data and the model (default: 0)")
    demo.set_defaults(func=_demo)

    run = commands.add_parser(
        "run", parents=[common], help="the pipeline on real data described by a TOML file (configs/*.toml)"
    )
    run.add_argument("config", help="path of the TOML configuration")
    run.set_defaults(func=_run)

    predict = commands.add_parser(
        "predict", parents=[common], help="expression maps for an H&E image with a saved model"
    )
    predict.add_argument("model_dir", help="directory written by SepalModel.save / sepal run")
    predict.add_argument(
        "image", help="H&E image (TIFF / JPEG / PNG), full resolution; or the spots of a .h5ad / SpatialData .zarr"
    )
    predict.add_argument("--spot-diameter", type=_positive_float, help="spot diameter in image pixels (images only)")
    predict.add_argument(
        "--pitch",
        type=_positive_float,
        default=None,
        help=f"spot pitch in pixels (default: {PITCH_DEFAULT})",
    )
    predict.add_argument(
        "--geometry",
        choices=("auto", "hex", "square"),
        default="auto",
        help="spot lattice (default: the one the model's spatial stage was trained on, else hex)",
    )
    predict.add_argument("--library-id", default="he", help="name of the slide (default: he)")
    predict.add_argument("--genes", type=_non_negative_int, default=4, help="gene maps to draw (default: 4)")
    predict.add_argument("--device", default="auto")
    predict.add_argument("--out", default="predict_out", help="output directory (default: predict_out)")
    predict.set_defaults(func=_predict)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sepal`` console script.

    Exit codes: 0 success; 2 a user error (bad arguments or configuration, missing or damaged input files, an
    output folder in use), reported in one line before any work when it can be checked up front; 1 an internal
    failure; 130 interrupted. ``--debug`` prints the traceback as well.
    """
    args = _parser().parse_args(argv)
    where = f"sepal {args.command}"
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{where}: interrupted; the output folder is marked INCOMPLETE.", file=sys.stderr)
        return 130
    except _USER_ERRORS as err:
        if args.debug:
            traceback.print_exc()
        print(f"{where}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # noqa: BLE001 - the console entry point turns any other failure into exit code 1
        if args.debug:
            traceback.print_exc()
        print(
            f"{where}: internal error ({type(err).__name__}: {_one_line(err)}). Rerun with --debug for the "
            "traceback and report it.",
            file=sys.stderr,
        )
        return 1
