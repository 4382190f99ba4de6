"""Accuracy on real data: the paper's ablation (mean / ViT / ViT+Δ / SEPAL / ST-Net / ridge) on her2st, on CPU.

Usage::

    python benchmarks/her2st.py [--quick] [--seeds 0 1 2] [--out benchmarks/results/her2st.json]
                                [--folds 0 1 2 3] [--threads 2] [--data /work/shared/data/her2st]

On a 2-core machine that other jobs also use, ``--threads 1`` is several times faster than 2 (OpenMP
oversubscription); the recorded runs used it. The full run takes about 30 min there, ``--quick`` about 2 min.

Protocol
--------
Data: the five her2st sections with an H&E image (Andersson et al. 2021, legacy ST, 100 µm spots): patient C's
C2-C5 (about 180 spots each after filtering) and patient B's shallow B4 (about 240 spots).

Leave-one-section-out over C2-C5. For fold ``i`` the test section is ``C[i]``, the validation section the next one
in order (``C[i+1 mod 4]``) and the two remaining C sections train. B4 (another patient) is a second, cross-patient
test set scored with every fold's models. Per fold, ``sepal.pp.run(preset="her2st", slides=<training sections>)``
preprocesses all five sections: the spot and gene count filters see every section (as in SEPAL), the Moran's I
ranking that picks the ``n_top`` genes sees only the training sections, so the gene set differs per fold
(``n_genes`` is recorded).

Models (one backbone, patch size, optimiser and epoch budget where it applies; seeds fixed):

1. ``mean``: every spot predicted as the training spots' mean (what a Δ model outputs when it predicts 0);
2. ``ViT``: ``fit_encoder(target="absolute")``, the backbone regressing absolute log2(TPM + 1);
3. ``ViT+Δ``: ``fit_encoder(target="delta")``, regressing Δ = y - train mean (the paper's local stage);
4. ``SEPAL``: ViT+Δ + ``fit_spatial`` (1 hop, GraphConv, SAGPooling) on that encoder;
5. ``STNet recipe``: DenseNet-121 (timm ``densenet121``, random init) regressing absolute expression, scored
   with 8-symmetry test-time augmentation (``sepal.tl.predict(..., tta=True)``); a different backbone by
   definition, and heavier, so it gets fewer epochs to fit a comparable wall-clock budget (see ``CONFIGS``);
   ``STNet recipe (no TTA)`` is the same network without the augmentation;
6. ``ridge (random ViT)``: ``RidgeCV`` on the frozen embeddings of a *randomly initialised* backbone (no
   pretrained weights exist offline; the usual recipe uses a foundation model's features, far stronger), and
   ``ridge (ViT+Δ emb.)``: ``RidgeCV`` on the fine-tuned ViT+Δ encoder's embeddings.

Every encoder is trained from scratch (``pretrained=False``): there is no internet, hence no ImageNet or
pathology weights, which the paper relies on (its ViT-B/16 starts from ImageNet).

Metrics: SEPAL's six (MSE, MAE, PCC-Gene, R2-Gene, PCC-Patch, R2-Patch; ``sepal.tl.compute_metrics``) on the
observed entries of the held-out section's absolute denoised log2(TPM + 1), and separately on B4. The summary is
mean ± sd over folds × seeds, plus the paired differences ViT+Δ - ViT and SEPAL - ViT+Δ.

Output: a JSON file with the configuration, machine, package versions, wall times, every fold × seed × model ×
test-set row and the summary tables (markdown included); it is rewritten after every fold × seed so a killed run
keeps what it finished. ``--quick`` is a smoke run (2 folds, 1 seed, few epochs) that finishes in minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
import warnings
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import torch

import sepal_tl as sepal
from sepal_tl._keys import METRICS

C_SECTIONS = ("C2", "C3", "C4", "C5")
EXTRA = "B4"
LOWER_IS_BETTER = {"MSE", "MAE"}
SUMMARY = (*METRICS, "ME")  # ME: mean signed error truth - prediction, a diagnostic of the offset
PAIRS = (("ViT+Δ", "ViT"), ("SEPAL", "ViT+Δ"), ("SEPAL", "ViT"), ("ViT+Δ", "mean"), ("SEPAL", "mean"))
MODELS = (
    "mean",
    "ViT",
    "ViT+Δ",
    "SEPAL",
    "STNet recipe",
    "STNet recipe (no TTA)",
    "ridge (random ViT)",
    "ridge (ViT+Δ emb.)",
)
RIDGE_ALPHAS = tuple(10.0**k for k in range(-2, 6))

#: Hyper-parameters. ``full`` fits 4 folds x 3 seeds in under an hour on 2 shared CPU cores; ``quick`` is a smoke
#: run. The ViT settings follow ``sepal.tl.PRESETS["cpu"]`` (vit_tiny from scratch, 64-px patches, Adam 1e-3).
CONFIGS = {
    "full": {
        "folds": 4,
        "n_top": 128,
        "backbone": "vit_tiny_patch16_224",
        "patch_size": 64,
        "encoder": {"epochs": 15, "batch_size": 32, "lr": 1e-3},
        "densenet": {"backbone": "densenet121", "epochs": 6, "batch_size": 32, "lr": 1e-3},
        "spatial": {
            "n_hops": 1,
            "operator": "GraphConv",
            "hidden": (128,),
            "pooling": "sag",
            "epochs": 40,
            "batch_size": 128,
            "lr": 1e-3,
        },
    },
    "quick": {
        "folds": 2,
        "n_top": 128,
        "backbone": "vit_tiny_patch16_224",
        "patch_size": 64,
        "encoder": {"epochs": 3, "batch_size": 32, "lr": 1e-3},
        "densenet": {"backbone": "densenet121", "epochs": 1, "batch_size": 32, "lr": 1e-3},
        "spatial": {
            "n_hops": 1,
            "operator": "GraphConv",
            "hidden": (128,),
            "pooling": "sag",
            "epochs": 15,
            "batch_size": 128,
            "lr": 1e-3,
        },
    },
}


def fold_sections(i: int) -> dict[str, object]:
    """Fold ``i``: test ``C[i]``, validation ``C[i+1]``, training the other two C sections."""
    test = C_SECTIONS[i]
    val = C_SECTIONS[(i + 1) % len(C_SECTIONS)]
    return {"test": test, "val": val, "train": [s for s in C_SECTIONS if s not in (test, val)]}


def score(truth: np.ndarray, pred: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """SEPAL's six metrics on the observed entries (undefined genes/spots are dropped, counts kept)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # e.g. the mean baseline's constant columns have no PCC
        out = sepal.tl.compute_metrics(truth, pred, mask)
    out = {k: float(v) for k, v in out.items()}
    out["ME"] = float(np.mean((truth - pred)[mask]))  # mean signed error (truth - pred): the offset part of MSE
    return out


def ridge_predict(emb: np.ndarray, y: np.ndarray, train: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, float]:
    """Standardised embeddings -> RidgeCV (efficient leave-one-out over ``RIDGE_ALPHAS``) fitted on ``train``."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
    model.fit(emb[train], y[train])
    return model.predict(emb[targets]).astype(np.float32), float(model[-1].alpha_)


def random_encoder_embeddings(adata, images, cfg: dict, seed: int) -> np.ndarray:
    """Embeddings of every spot from the randomly initialised (untrained, frozen) backbone."""
    torch.manual_seed(seed)
    sepal.tl.embed(
        adata, cfg["backbone"], pretrained=False, patch_size=cfg["patch_size"], image=images, key_added="X_random_vit"
    )
    return np.asarray(adata.obsm["X_random_vit"], dtype=np.float32)


def run_fold_seed(adata, images, cfg: dict, seed: int, idx: dict[str, np.ndarray]) -> tuple[dict, dict, dict]:
    """Train every model of one fold with one seed; return predictions per model and seconds per model."""
    truth = np.asarray(adata.layers["denoised"], dtype=np.float32)
    held_out = np.concatenate([idx["test"], idx["B4"]])
    preds: dict[str, np.ndarray] = {}  # model -> (n_spots, n_genes) absolute predictions (rows held_out filled)
    seconds: dict[str, float] = {}
    extra: dict[str, object] = {}
    common = {"pretrained": False, "patch_size": cfg["patch_size"], "device": "cpu", "random_state": seed}

    preds["mean"] = np.broadcast_to(truth[idx["train"]].mean(axis=0), truth.shape)
    seconds["mean"] = 0.0

    t = time.perf_counter()
    absolute = sepal.tl.fit_encoder(
        adata, image=images, backbone=cfg["backbone"], target="absolute", key_added="vit", **cfg["encoder"], **common
    )
    preds["ViT"] = np.asarray(adata.layers["vit_local"])
    seconds["ViT"] = time.perf_counter() - t

    t = time.perf_counter()
    delta = sepal.tl.fit_encoder(
        adata, image=images, backbone=cfg["backbone"], target="delta", key_added="vitd", **cfg["encoder"], **common
    )
    preds["ViT+Δ"] = np.asarray(adata.layers["vitd_local"])
    seconds["ViT+Δ"] = time.perf_counter() - t

    t = time.perf_counter()
    sepal.tl.fit_spatial(
        adata, delta, image=images, key_added="vitd", device="cpu", random_state=seed, **cfg["spatial"]
    )
    preds["SEPAL"] = np.asarray(adata.layers["vitd"])
    seconds["SEPAL"] = time.perf_counter() - t  # the spatial stage alone (the encoder is ViT+Δ's)

    t = time.perf_counter()
    dn = cfg["densenet"]
    stnet = sepal.tl.fit_encoder(
        adata,
        image=images,
        backbone=dn["backbone"],
        target="absolute",
        key_added="stnet",
        epochs=dn["epochs"],
        batch_size=dn["batch_size"],
        lr=dn["lr"],
        **common,
    )
    preds["STNet recipe (no TTA)"] = np.asarray(adata.layers["stnet_local"])
    seconds["STNet recipe (no TTA)"] = time.perf_counter() - t
    t = time.perf_counter()
    sub = adata[held_out].copy()
    sepal.tl.predict(sub, stnet, image=images, key_added="stnet_tta", tta=True, device="cpu")
    tta = np.full(truth.shape, np.nan, dtype=np.float32)
    tta[held_out] = sub.layers["stnet_tta"]
    preds["STNet recipe"] = tta
    seconds["STNet recipe"] = seconds["STNet recipe (no TTA)"] + time.perf_counter() - t

    alphas = {}
    for name, get_embeddings in (
        ("ridge (random ViT)", lambda: random_encoder_embeddings(adata, images, cfg, seed)),
        ("ridge (ViT+Δ emb.)", lambda: np.asarray(adata.obsm["X_vitd"], dtype=np.float32)),
    ):
        t = time.perf_counter()
        emb = get_embeddings()
        pred = np.full(truth.shape, np.nan, dtype=np.float32)
        pred[held_out], alphas[name] = ridge_predict(emb, truth, idx["train"], held_out)
        preds[name] = pred
        seconds[name] = time.perf_counter() - t
    extra["ridge_alpha"] = alphas
    # model selection: best validation MSE (model scale) and the epoch it came from (1-based) per trained network
    for name, model, stage in (
        ("ViT", absolute, "encoder"),
        ("ViT+Δ", delta, "encoder"),
        ("SEPAL", delta, "spatial"),
        ("STNet recipe", stnet, "encoder"),
    ):
        val = [epoch.get("val_mse", np.nan) for epoch in model.history[stage]]
        extra.setdefault("best_val_mse", {})[name] = float(np.nanmin(val))
        extra.setdefault("best_epoch", {})[name] = f"{int(np.nanargmin(val)) + 1}/{len(val)}"
    return preds, seconds, extra


def result_rows(fold, seed, model, split, idx, truth, pred, observed, seconds) -> list[dict]:
    """One result row per test set (held-out C section, B4) of one model's absolute predictions."""
    return [
        {
            "fold": fold,
            "seed": seed,
            "model": model,
            "test_set": test_set,
            "section": split["test"] if test_set == "test" else EXTRA,
            "n_genes": int(truth.shape[1]),
            "seconds": seconds,
            "metrics": score(truth[idx[test_set]], np.asarray(pred)[idx[test_set]], observed[idx[test_set]]),
        }
        for test_set in ("test", "B4")
    ]


def mean_sd(values) -> dict[str, float]:
    """Mean and sample sd over the finite values (NaN when there are none / fewer than two)."""
    vals = np.asarray(values, dtype=float)
    vals = vals[np.isfinite(vals)]
    return {
        "mean": float(vals.mean()) if vals.size else float("nan"),
        "sd": float(vals.std(ddof=1)) if vals.size > 1 else float("nan"),
    }


def summarise(rows: list[dict], models=MODELS, pairs=PAIRS) -> dict:
    """Mean ± sd over folds x seeds per (test set, model, metric), and paired differences of the ablation."""
    out: dict = {"tables": {}, "paired": {}}
    for test_set in ("test", "B4"):
        table = {}
        for model in models:
            sel = [r for r in rows if r["model"] == model and r["test_set"] == test_set]
            if sel:
                table[model] = {"n": len(sel), **{m: mean_sd([r["metrics"][m] for r in sel]) for m in SUMMARY}}
        out["tables"][test_set] = table
        paired = {}
        for a, b in pairs:
            runs = {(r["fold"], r["seed"]): r for r in rows if r["test_set"] == test_set and r["model"] == a}
            base = {(r["fold"], r["seed"]): r for r in rows if r["test_set"] == test_set and r["model"] == b}
            common = sorted(set(runs) & set(base))
            if not common:
                continue
            paired[f"{a} - {b}"] = {}
            for m in METRICS:
                d = np.array([runs[k]["metrics"][m] - base[k]["metrics"][m] for k in common], dtype=float)
                better = -d if m in LOWER_IS_BETTER else d
                paired[f"{a} - {b}"][m] = {
                    **mean_sd(d),
                    "wins": int(np.sum(better > 0)),
                    "n": int(np.sum(np.isfinite(d))),
                }
        out["paired"][test_set] = paired
    return out


def fmt(cell: dict, digits: int = 3) -> str:
    if not np.isfinite(cell["mean"]):
        return "–"
    sd = "" if not np.isfinite(cell["sd"]) else f" ± {cell['sd']:.{digits}f}"
    return f"{cell['mean']:.{digits}f}{sd}"


def markdown(summary: dict) -> str:
    lines = []
    titles = {"test": "held-out C section (leave-one-section-out)", "B4": "B4 (patient B, cross-patient)"}
    for test_set, table in summary["tables"].items():
        lines += [f"**{titles[test_set]}**", "", "| model | n | " + " | ".join(METRICS) + " | bias (ME) |"]
        lines.append("|---|---:|" + "---:|" * (len(METRICS) + 1))
        for model, cells in table.items():
            lines.append(f"| {model} | {cells['n']} | " + " | ".join(fmt(cells[m]) for m in SUMMARY) + " |")
        lines += ["", f"Paired differences ({titles[test_set]}; wins = runs where the first is better):", ""]
        lines += ["| difference | " + " | ".join(METRICS) + " |", "|---|" + "---:|" * len(METRICS)]
        for key, cells in summary["paired"][test_set].items():
            lines.append(
                f"| {key} | "
                + " | ".join(f"{fmt(cells[m])} ({cells[m]['wins']}/{cells[m]['n']})" for m in METRICS)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)


def machine_info(threads: int) -> dict:
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "cuda": torch.cuda.is_available(),
        "loadavg_at_start": list(os.getloadavg()),
    }


def versions() -> dict:
    out = {}
    for package in ("sepal-tl", "torch", "timm", "lightning", "torch-geometric", "scikit-learn", "numpy", "anndata"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 folds, 1 seed, few epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0 1 2 (quick: 0)")
    parser.add_argument("--folds", type=int, nargs="+", default=None, help="fold numbers 0-3 (test = C2..C5)")
    parser.add_argument("--out", default=None, help="JSON output (default benchmarks/results/her2st[_quick].json)")
    parser.add_argument("--data", default="/work/shared/data/her2st", help="local her2st data folder")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args()

    mode = "quick" if args.quick else "full"
    cfg = CONFIGS[mode]
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    folds = args.folds if args.folds is not None else list(range(cfg["folds"]))
    default_out = Path(__file__).parent / "results" / ("her2st_quick.json" if args.quick else "her2st.json")
    out = Path(args.out) if args.out else default_out
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    sepal.settings.verbosity = 0
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        import logging

        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")

    start = time.perf_counter()
    record = {
        "benchmark": "her2st accuracy (paper's ablation)",
        "command": "python benchmarks/her2st.py"
        + (" --quick" if args.quick else "")
        + f" --seeds {' '.join(map(str, seeds))} --threads {args.threads}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "mode": mode,
        "config": {**cfg, "seeds": seeds, "folds": folds, "ridge_alphas": list(RIDGE_ALPHAS)},
        "machine": machine_info(args.threads),
        "versions": versions(),
        "folds": {},
        "rows": [],
    }
    raw = sepal.datasets.her2st([*C_SECTIONS, EXTRA], path=args.data)
    print(f"her2st: {raw.n_obs} spots x {raw.n_vars} genes; {mode} run, folds {folds}, seeds {seeds}", flush=True)

    with tempfile.TemporaryDirectory(prefix="her2st_images_") as cache:
        images = sepal.tl.resolve_images(raw, cache_dir=cache)  # decode each JPEG once, memory-map afterwards
        for fold in folds:
            split = fold_sections(fold)
            adata = raw.copy()
            sepal.pp.run(adata, preset="her2st", slides=split["train"], n_top=cfg["n_top"])
            summary = sepal.pp.run_summary(adata)
            lib = adata.obs["library_id"].astype(str).to_numpy()
            labels = np.where(np.isin(lib, split["train"]), "train", np.where(lib == split["val"], "val", "test"))
            adata.obs["split"] = labels  # B4 is "test" too: never trained on, scored separately
            idx = {
                "train": np.flatnonzero(labels == "train"),
                "test": np.flatnonzero(lib == split["test"]),
                "B4": np.flatnonzero(lib == EXTRA),
            }
            observed = np.asarray(adata.layers["observed"], dtype=bool)
            truth = np.asarray(adata.layers["denoised"], dtype=np.float32)
            record["folds"][str(fold)] = {
                **split,
                "n_genes": int(adata.n_vars),
                "n_spots": {s: int(np.sum(lib == s)) for s in np.unique(lib)},
                "imputed_fraction": float(summary.attrs["imputed_fraction"]),
                "observed_fraction": {k: float(observed[idx[k]].mean()) for k in ("test", "B4")},
            }
            print(f"fold {fold}: {split}, {adata.n_vars} genes, spots {record['folds'][str(fold)]['n_spots']}")
            for seed in seeds:
                t0 = time.perf_counter()
                preds, seconds, extra = run_fold_seed(adata, images, cfg, seed, idx)
                for model in MODELS:
                    record["rows"] += result_rows(
                        fold, seed, model, split, idx, truth, preds[model], observed, seconds[model]
                    )
                record["folds"][str(fold)].setdefault("extra", {})[str(seed)] = extra
                elapsed = time.perf_counter() - start
                print(
                    f"  seed {seed}: {time.perf_counter() - t0:.0f} s (total {elapsed / 60:.1f} min); "
                    + ", ".join(f"{k} {v:.0f}s" for k, v in seconds.items() if v),
                    flush=True,
                )
                for model in MODELS:
                    r = next(
                        r
                        for r in record["rows"][::-1]
                        if r["model"] == model and r["test_set"] == "test" and r["seed"] == seed
                    )
                    print(f"    {model:24s} " + " ".join(f"{m} {r['metrics'][m]:+.3f}" for m in METRICS))
                record["wall_seconds"] = time.perf_counter() - start
                record["summary"] = summarise(record["rows"])
                record["markdown"] = markdown(record["summary"])
                out.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=float))
    record["wall_seconds"] = time.perf_counter() - start
    record["complete"] = True
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=float))
    print("\n" + record["markdown"])
    print(f"wall time {record['wall_seconds'] / 60:.1f} min -> {out}")


if __name__ == "__main__":
    main()
