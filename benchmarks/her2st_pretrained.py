"""Accuracy on real data with pretrained encoders: SEPAL vs the field's linear probe and the ST-Net recipe, on her2st.

Usage::

    python benchmarks/her2st_pretrained.py [--quick] [--seeds 0 1 2] [--folds 0 1 2 3] [--finetune-seeds 0]
                                           [--threads 2] [--data /work/shared/data/her2st]
                                           [--weights /work/shared/weights]

Same folds as ``benchmarks/her2st.py`` (leave one C section out, the next C section validates, the other two train;
B4, another patient, is a cross-patient test), same preprocessing (``pp.run(preset="her2st")`` with the Moran
ranking on the training sections only), same six metrics on observed entries. The encoders are the two real
ImageNet networks of ``../shared/weights``: DenseNet-121 (ST-Net's encoder) and MobileNetV2.

Rows, per encoder E:

- ``mean``: the training spots' mean;
- ``ridge (E, HEST)``: the HEST-Benchmark linear probe on frozen embeddings: standardise, PCA to 256, ridge with α
  chosen by inner leave-one-section-out cross-validation on the training sections (scikit-learn);
- ``frozen E + Δ head``: ``fit_encoder(embedding_key=...)``: per-slide standardised embeddings, closed-form ridge
  Δ head with its penalty chosen on the validation section;
- ``SEPAL (frozen E)``: that model + ``fit_spatial`` (1 hop, GraphConv, centre-node pooling — chosen over the
  paper's SAGPooling on the validation sections only, see ``--explore``) on the same embeddings.

Fine-tuned rows (expensive on CPU, so ``--finetune-seeds`` may run fewer seeds than the frozen rows):

- ``fine-tuned MobileNetV2 Δ`` and ``SEPAL (fine-tuned MobileNetV2)``: the paper's two stages with a pretrained
  MobileNetV2 on 112-px patches;
- ``STNet recipe``: pretrained DenseNet-121 fine-tuned on absolute expression (112-px patches), 8-symmetry TTA.

Embeddings are computed once (224-px patches, the weights' native size) on all sections: they use no expression.
``--explore`` adds a validation-section-only comparison of SEPAL's frozen variants (embedding normalisation,
hops, pooling) so that defaults are chosen without looking at the test sections.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from her2st import (
    C_SECTIONS,
    EXTRA,
    METRICS,
    fold_sections,
    machine_info,
    markdown,
    result_rows,
    score,
    summarise,
    versions,
)

import sepal_tl as sepal
from sepal_tl.tl._stain import STAIN_NORMS

ENCODERS = {
    "DenseNet-121": ("densenet121", "densenet121.keras_in1k.safetensors"),
    "MobileNetV2": ("mobilenetv2_100", "mobilenetv2_100.tv_in1k.safetensors"),
}
SPATIAL = {
    "n_hops": 1,
    "operator": "GraphConv",
    "hidden": (256,),
    "pooling": "center",  # chosen on the validation sections (--explore; see benchmarks/README.md), not on test
    "epochs": 40,
    "batch_size": 128,
    "lr": 1e-3,
}
STNET_LR = 1e-3
FINETUNE = {"patch_size": 112, "epochs": 6, "batch_size": 32, "lr": 1e-4}
QUICK = {"spatial_epochs": 10, "finetune_epochs": 1}
ALPHAS = tuple(10.0**k for k in range(-1, 6))


def frozen_rows(names: list[str]) -> list[str]:
    rows = ["mean"]
    for name in names:
        rows += [f"ridge ({name}, HEST)", f"frozen {name} + Δ head", f"SEPAL (frozen {name})"]
    return rows


FINETUNED_ROWS = ["fine-tuned MobileNetV2 Δ", "SEPAL (fine-tuned MobileNetV2)", "STNet recipe"]


def hest_ridge(emb: np.ndarray, y: np.ndarray, train: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, float]:
    """HEST-Benchmark's probe: StandardScaler → PCA(256) → Ridge, α by leave-one-section-out CV on the training rows."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, LeaveOneGroupOut
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    n_comp = min(256, len(train) // 2, emb.shape[1])
    pipe = make_pipeline(StandardScaler(), PCA(n_components=n_comp, random_state=0), Ridge())
    search = GridSearchCV(pipe, {"ridge__alpha": ALPHAS}, cv=LeaveOneGroupOut(), scoring="neg_mean_squared_error")
    search.fit(emb[train], y[train], groups=groups[train])
    return search.predict(emb).astype(np.float32), float(search.best_params_["ridge__alpha"])


def explore(adata, key: str, seed: int, spatial: dict) -> dict:
    """Validation-section MSE / PCC-Gene of frozen SEPAL variants (never the test sections)."""
    truth = np.asarray(adata.layers["denoised"], dtype=np.float32)
    observed = np.asarray(adata.layers["observed"], dtype=bool)
    val = np.flatnonzero(adata.obs["split"].to_numpy() == "val")
    out = {}
    for norm in ("none", "train", "slide"):
        local = sepal.tl.fit_encoder(adata, embedding_key=key, embedding_norm=norm, key_added="ex")
        out[f"Δ head, norm={norm}"] = score(truth[val], adata.layers["ex_local"][val], observed[val])
        variants = [("sag", 1), ("center", 1), ("mean", 1), ("sag", 2)] if norm == "slide" else [("sag", 1)]
        for pooling, hops in variants:
            sepal.tl.fit_spatial(
                adata,
                local,
                key_added="ex",
                device="cpu",
                random_state=seed,
                **{**spatial, "pooling": pooling, "n_hops": hops},
            )
            out[f"SEPAL, norm={norm}, {pooling}, {hops} hop"] = score(
                truth[val], adata.layers["ex"][val], observed[val]
            )
    return out


def stain_check(adata, images, weights: Path, finetune: dict, seed: int) -> dict:
    """Validation-section metrics of the fine-tuned MobileNetV2 Δ encoder without and with stain jitter (σ 0.05)."""
    truth = np.asarray(adata.layers["denoised"], dtype=np.float32)
    observed = np.asarray(adata.layers["observed"], dtype=bool)
    val = np.flatnonzero(adata.obs["split"].to_numpy() == "val")
    out = {}
    for jitter in (0.0, 0.05):
        sepal.tl.fit_encoder(
            adata,
            image=images,
            backbone="mobilenetv2_100",
            pretrained=weights / ENCODERS["MobileNetV2"][1],
            key_added="sc",
            device="cpu",
            random_state=seed,
            stain_jitter=jitter,
            **finetune,
        )
        out[f"stain_jitter={jitter}"] = score(truth[val], adata.layers["sc_local"][val], observed[val])
    return out


def stain_norm_check(adata, keys: dict, spatial: dict, seeds: list[int]) -> dict:
    """Validation-section metrics of the frozen Δ head and frozen SEPAL on embeddings with each stain normalisation."""
    truth = np.asarray(adata.layers["denoised"], dtype=np.float32)
    observed = np.asarray(adata.layers["observed"], dtype=bool)
    val = np.flatnonzero(adata.obs["split"].to_numpy() == "val")
    out = {}
    for norm, key in keys.items():
        local = sepal.tl.fit_encoder(adata, embedding_key=key, key_added="sn")
        out[f"Δ head, stain_norm={norm}"] = score(truth[val], adata.layers["sn_local"][val], observed[val])
        runs = []
        for seed in seeds:
            sepal.tl.fit_spatial(adata, local, key_added="sn", device="cpu", random_state=seed, **spatial)
            runs.append(score(truth[val], adata.layers["sn"][val], observed[val]))
        out[f"SEPAL, stain_norm={norm}"] = {m: float(np.mean([r[m] for r in runs])) for m in runs[0]}
    return out


def print_validation(fold: int, result: dict) -> None:
    for name, metrics in result.items():
        print(f"   fold {fold} val {name}: " + " ".join(f"{m} {metrics[m]:+.3f}" for m in METRICS), flush=True)


def frozen_embeddings(raw, images, name: str, weights: Path, cache: str | None, record: dict, stain_norm=None) -> str:
    """Embed every spot with one encoder of ``ENCODERS`` (or load the cached file); returns the ``obsm`` key."""
    arch, file = ENCODERS[name]
    key = f"X_{arch}" + (f"_{stain_norm}" if stain_norm else "")
    t = time.perf_counter()
    cached = Path(cache) / f"{key[2:]}_{raw.n_obs}.npz" if cache else None
    if cached is not None and cached.exists():  # embeddings use no expression: one file serves every run
        stored = np.load(cached, allow_pickle=False)
        assert list(stored["obs_names"]) == list(raw.obs_names)
        raw.obsm[key] = stored["embeddings"]
    else:
        sepal.tl.embed(
            raw,
            arch,
            pretrained=weights / file,
            image=images,
            key_added=key,
            batch_size=32,
            device="cpu",
            stain_norm=stain_norm,
        )
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cached, embeddings=raw.obsm[key], obs_names=np.asarray(raw.obs_names, dtype=str))
    record.setdefault("embed_seconds", {})[key] = time.perf_counter() - t
    print(f"embedded {raw.n_obs} spots into {key}: {record['embed_seconds'][key]:.0f} s", flush=True)
    return key


def merge_results(paths: list[str], out: Path) -> None:
    """One result file from several runs (e.g. more fine-tuned seeds run later): rows united, the first file wins a
    duplicate (fold, seed, model, test set); the summary is recomputed over all rows."""
    records = [json.loads(Path(p).read_text()) for p in paths]
    rows, seen = [], set()
    for record in records:
        for row in record["rows"]:
            key = (row["fold"], row["seed"], row["model"], row["test_set"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
    names = {row["model"] for row in rows}
    models = [m for m in frozen_rows(list(ENCODERS)) + FINETUNED_ROWS if m in names]
    merged = {
        **records[0],
        "command": " + ".join(r["command"] for r in records),
        "merged_from": [
            {"file": Path(p).name, "command": r["command"], "date": r["date"]}
            for p, r in zip(paths, records, strict=True)
        ],
        "rows": rows,
        "summary": summarise_pretrained(rows, models),
    }
    merged["markdown"] = markdown(merged["summary"])
    out.write_text(json.dumps(merged, indent=1, ensure_ascii=False, default=float))
    print(merged["markdown"])


def run_fold(
    adata, images, idx, seeds, finetune_seeds, weights, keys, spatial, finetune, do_explore
) -> tuple[dict, dict, dict]:
    """Predictions per (seed, model) for one fold."""
    truth = np.asarray(adata.layers["denoised"], dtype=np.float32)
    lib = adata.obs["library_id"].astype(str).to_numpy()
    preds: dict = {}
    seconds: dict = {}
    extra: dict = {"ridge_alpha": {}, "head_alpha": {}}
    for seed in seeds:
        preds[(seed, "mean")] = np.broadcast_to(truth[idx["train"]].mean(axis=0), truth.shape)
    for name, key in keys.items():
        t = time.perf_counter()
        ridge, extra["ridge_alpha"][name] = hest_ridge(adata.obsm[key], truth, idx["train"], lib)
        seconds[f"ridge ({name}, HEST)"] = time.perf_counter() - t
        t = time.perf_counter()
        model = sepal.tl.fit_encoder(adata, embedding_key=key, key_added="fz")
        seconds[f"frozen {name} + Δ head"] = time.perf_counter() - t
        extra["head_alpha"][name] = model.config["encoder"]["ridge_alpha"]
        local = np.asarray(adata.layers["fz_local"]).copy()
        for seed in seeds:
            preds[(seed, f"ridge ({name}, HEST)")] = ridge
            preds[(seed, f"frozen {name} + Δ head")] = local
            t = time.perf_counter()
            sepal.tl.fit_spatial(adata, model, key_added="fz", device="cpu", random_state=seed, **spatial)
            seconds[f"SEPAL (frozen {name})"] = time.perf_counter() - t
            preds[(seed, f"SEPAL (frozen {name})")] = np.asarray(adata.layers["fz"]).copy()
        if do_explore:
            extra.setdefault("explore", {})[name] = explore(adata, key, seeds[0], spatial)
    held_out = np.concatenate([idx["test"], idx["B4"]])
    for seed in finetune_seeds:
        common = {"image": images, "device": "cpu", "random_state": seed, "patch_size": finetune["patch_size"]}
        opts = {k: finetune[k] for k in ("epochs", "batch_size", "lr")}
        t = time.perf_counter()
        delta = sepal.tl.fit_encoder(
            adata,
            backbone="mobilenetv2_100",
            pretrained=weights / ENCODERS["MobileNetV2"][1],
            key_added="ft",
            **opts,
            **common,
        )
        preds[(seed, "fine-tuned MobileNetV2 Δ")] = np.asarray(adata.layers["ft_local"]).copy()
        seconds["fine-tuned MobileNetV2 Δ"] = time.perf_counter() - t
        t = time.perf_counter()
        sepal.tl.fit_spatial(adata, delta, key_added="ft", device="cpu", random_state=seed, **spatial)
        preds[(seed, "SEPAL (fine-tuned MobileNetV2)")] = np.asarray(adata.layers["ft"]).copy()
        seconds["SEPAL (fine-tuned MobileNetV2)"] = time.perf_counter() - t
        t = time.perf_counter()
        stnet = sepal.tl.fit_encoder(  # absolute targets start far from a zero-bias head: the larger lr of her2st.py
            adata,
            backbone="densenet121",
            pretrained=weights / ENCODERS["DenseNet-121"][1],
            target="absolute",
            key_added="st",
            **{**opts, "lr": STNET_LR},
            **common,
        )
        sub = adata[held_out].copy()
        sepal.tl.predict(sub, stnet, image=images, key_added="st", tta=True, device="cpu")
        tta = np.full(truth.shape, np.nan, dtype=np.float32)
        tta[held_out] = sub.layers["st"]
        preds[(seed, "STNet recipe")] = tta
        seconds["STNet recipe"] = time.perf_counter() - t
        for label, model, stage in (("fine-tuned MobileNetV2 Δ", delta, "encoder"), ("STNet recipe", stnet, "encoder")):
            val = [e.get("val_mse", np.nan) for e in model.history[stage]]
            extra.setdefault("best_epoch", {})[f"{label} seed {seed}"] = f"{int(np.nanargmin(val)) + 1}/{len(val)}"
    return preds, seconds, extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 folds, 1 seed, short training")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="seeds of the frozen rows (default 0 1 2)")
    parser.add_argument("--finetune-seeds", type=int, nargs="*", default=None, help="seeds of the fine-tuned rows")
    parser.add_argument("--folds", type=int, nargs="+", default=None)
    parser.add_argument("--explore", action="store_true", help="validation-only comparison of frozen SEPAL variants")
    parser.add_argument(
        "--stain-check", action="store_true", help="only: validation metrics of fine-tuning with/without stain jitter"
    )
    parser.add_argument(
        "--stain-norm-check",
        action="store_true",
        help="only: validation metrics of frozen MobileNetV2 rows without / with Macenko and Reinhard normalisation",
    )
    parser.add_argument("--merge", nargs="+", default=None, help="only: unite these result files into --out")
    parser.add_argument("--data", default="/work/shared/data/her2st")
    parser.add_argument("--weights", default="/work/shared/weights")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("--embedding-cache", default=None, help="folder keeping the frozen embeddings between runs")
    args = parser.parse_args()
    if args.merge:
        merge_results(args.merge, Path(args.out or "merged.json"))
        return

    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    finetune_seeds = args.finetune_seeds if args.finetune_seeds is not None else seeds
    folds = args.folds or ([0, 1] if args.quick else [0, 1, 2, 3])
    spatial = {**SPATIAL, "epochs": QUICK["spatial_epochs"]} if args.quick else dict(SPATIAL)
    finetune = {**FINETUNE, "epochs": QUICK["finetune_epochs"]} if args.quick else dict(FINETUNE)
    weights = Path(args.weights)
    out = (
        Path(args.out)
        if args.out
        else Path(__file__).parent
        / "results"
        / ("her2st_pretrained_quick.json" if args.quick else "her2st_pretrained.json")
    )
    torch.set_num_threads(args.threads)
    sepal.settings.verbosity = 0
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    start = time.perf_counter()
    models = frozen_rows(list(ENCODERS)) + (FINETUNED_ROWS if finetune_seeds else [])
    record = {
        "benchmark": "her2st accuracy with pretrained encoders",
        "command": "python benchmarks/her2st_pretrained.py"
        + (" --quick" if args.quick else "")
        + f" --seeds {' '.join(map(str, seeds))} --finetune-seeds {' '.join(map(str, finetune_seeds))}"
        + (" --explore" if args.explore else "")
        + (" --stain-check" if args.stain_check else "")
        + (" --stain-norm-check" if args.stain_norm_check else "")
        + f" --threads {args.threads}",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": {
            "spatial": spatial,
            "finetune": finetune,
            "seeds": seeds,
            "finetune_seeds": finetune_seeds,
            "folds": folds,
            "hest_alphas": list(ALPHAS),
        },
        "machine": machine_info(args.threads),
        "versions": versions(),
        "folds": {},
        "rows": [],
    }
    raw = sepal.datasets.her2st([*C_SECTIONS, EXTRA], path=args.data)
    with tempfile.TemporaryDirectory(prefix="her2st_images_") as cache:
        images = sepal.tl.resolve_images(raw, cache_dir=cache)
        keys = {name: frozen_embeddings(raw, images, name, weights, args.embedding_cache, record) for name in ENCODERS}
        if args.stain_norm_check:
            norm_keys = {None: keys["MobileNetV2"]}
            for norm in STAIN_NORMS:
                norm_keys[norm] = frozen_embeddings(
                    raw, images, "MobileNetV2", weights, args.embedding_cache, record, stain_norm=norm
                )
        for fold in folds:
            split = fold_sections(fold)
            adata = raw.copy()
            sepal.pp.run(adata, preset="her2st", slides=split["train"], n_top=128)
            lib = adata.obs["library_id"].astype(str).to_numpy()
            labels = np.where(np.isin(lib, split["train"]), "train", np.where(lib == split["val"], "val", "test"))
            adata.obs["split"] = labels
            idx = {
                "train": np.flatnonzero(labels == "train"),
                "test": np.flatnonzero(lib == split["test"]),
                "B4": np.flatnonzero(lib == EXTRA),
            }
            t0 = time.perf_counter()
            if args.stain_norm_check:
                result = stain_norm_check(adata, norm_keys, spatial, seeds)
                record["folds"][str(fold)] = {**split, "stain_norm_check": result}
                print_validation(fold, result)
                out.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=float))
                continue
            if args.stain_check:
                result = stain_check(adata, images, weights, finetune, seeds[0])
                record["folds"][str(fold)] = {**split, "stain_check": result}
                print_validation(fold, result)
                out.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=float))
                continue
            preds, seconds, extra = run_fold(
                adata, images, idx, seeds, finetune_seeds, weights, keys, spatial, finetune, args.explore
            )
            truth = np.asarray(adata.layers["denoised"], dtype=np.float32)
            observed = np.asarray(adata.layers["observed"], dtype=bool)
            for (seed, model), pred in preds.items():
                record["rows"] += result_rows(
                    fold, seed, model, split, idx, truth, pred, observed, seconds.get(model, 0.0)
                )
            record["folds"][str(fold)] = {**split, "n_genes": int(adata.n_vars), "extra": extra, "seconds": seconds}
            print(
                f"fold {fold} ({split['test']}): {time.perf_counter() - t0:.0f} s, total {(time.perf_counter() - start) / 60:.1f} min",
                flush=True,
            )
            for model in models:
                sel = [
                    r for r in record["rows"] if r["fold"] == fold and r["model"] == model and r["test_set"] == "test"
                ]
                if sel:
                    print(
                        f"   {model:34s} "
                        + " ".join(f"{m} {np.mean([r['metrics'][m] for r in sel]):+.3f}" for m in METRICS),
                        flush=True,
                    )
            record["summary"] = summarise_pretrained(record["rows"], models)
            record["markdown"] = markdown(record["summary"])
            record["wall_seconds"] = time.perf_counter() - start
            out.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=float))
    record["complete"] = True
    record["wall_seconds"] = time.perf_counter() - start
    out.write_text(json.dumps(record, indent=1, ensure_ascii=False, default=float))
    print("\n" + record.get("markdown", ""))
    print(f"wall time {record['wall_seconds'] / 60:.1f} min -> {out}")


def summarise_pretrained(rows: list[dict], models: list[str]) -> dict:
    """``her2st.summarise`` over this benchmark's rows, with the pairs that the target names."""
    best = [m for m in models if m.startswith("SEPAL")]
    pairs = [(s, b) for s in best for b in models if b.startswith(("ridge", "STNet", "mean"))]
    pairs += [(f"SEPAL (frozen {n})", f"frozen {n} + Δ head") for n in ENCODERS]
    return summarise(rows, models=models, pairs=pairs)


if __name__ == "__main__":
    main()
