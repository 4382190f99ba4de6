"""Distributed training on CPU (gloo): two DDP processes give what one process gives; ``ddp_spawn`` works.

The same fit runs three ways through this file used as a script (``python tests/test_tl_ddp.py MODE OUT``):
``single`` (one process), ``ddp`` (two processes started by ``torch.distributed.run``, as torchrun or SLURM
would) and ``spawn`` (``strategy="ddp_spawn"``, Lightning starts the two processes). Training is full-batch
(one batch of 32 spots, 16 per process under DDP), so the gradient of every step is the same mean over the
same spots in all modes and the runs agree up to float32 rounding: metrics within a relative 1e-4, predictions
within 1e-4. Validation has 17 spots in batches of 4, so the two processes get 9 and 8 spots (3 and 2
batches): a padded sampler would count one spot twice and change ``val_mse``.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sepal_tl._compat import ensure_torchvision

if __name__ in ("__main__", "__mp_main__"):
    # run as a script, and in the processes ddp_spawn starts (they import this file before unpickling
    # Lightning's objects): make a CPU machine's CUDA torchvision build importable first
    ensure_torchvision()

N_TRAIN, N_VAL, N_FEATURES, N_GENES = 32, 17, 12, 3
EPOCHS, PATIENCE = 40, 6
TOLERANCE = 1e-4


def _data():
    """Few noisy training spots and many features: validation MSE falls, then rises (overfitting)."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(N_FEATURES, N_GENES)).astype(np.float32)
    x = rng.normal(size=(N_TRAIN + N_VAL + 5, N_FEATURES)).astype(np.float32)
    y = x @ weights * 0.3 + rng.normal(scale=1.0, size=(x.shape[0], N_GENES)).astype(np.float32)
    return x, y


def mse_loss(net, batch):
    """Mean squared error of ``net(x)`` against ``y`` (module level, so that ``ddp_spawn`` can pickle it)."""
    import torch

    x, y = batch
    return torch.nn.functional.mse_loss(net(x), y)


def fit(mode: str, out: Path) -> None:
    """Train the tiny regression in ``mode`` and write what this process ends with to ``out`` (JSON)."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from sepal_tl._compat import import_lightning
    from sepal_tl.tl._training import regression_task, run_training

    L = import_lightning()

    torch.set_num_threads(1)
    L.seed_everything(0, verbose=False)
    x, y = (torch.from_numpy(a) for a in _data())
    net = torch.nn.Sequential(torch.nn.Linear(N_FEATURES, 16), torch.nn.Tanh(), torch.nn.Linear(16, N_GENES))
    train = DataLoader(TensorDataset(x[:N_TRAIN], y[:N_TRAIN]), batch_size=N_TRAIN, shuffle=True)
    val = DataLoader(TensorDataset(x[N_TRAIN : N_TRAIN + N_VAL], y[N_TRAIN : N_TRAIN + N_VAL]), batch_size=4)
    trainer_kwargs = {"enable_progress_bar": False}
    if mode != "single":
        trainer_kwargs.update(accelerator="cpu", devices=2, strategy="ddp" if mode == "ddp" else "ddp_spawn")
    task = regression_task(net, mse_loss, lr=0.05, weight_decay=0.0)
    history, best = run_training(
        task,
        train,
        val,
        epochs=EPOCHS,
        device="cpu",
        patience=PATIENCE,
        trainer_kwargs=trainer_kwargs,
        deterministic=True,
    )
    with torch.no_grad():
        pred = task.net(x[N_TRAIN + N_VAL :]).numpy()
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    result = {"history": history, "best": best, "pred": pred.tolist(), "rank": rank}
    (out.parent / f"{out.stem}.rank{rank}.json").write_text(json.dumps(result))


def _run(args: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def _results(tmp_path: Path, stem: str) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(tmp_path.glob(f"{stem}.rank*.json"))]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> dict:
    tmp_path = tmp_path_factory.mktemp("single")
    _run([sys.executable, __file__, "single", str(tmp_path / "single")], tmp_path)
    (result,) = _results(tmp_path, "single")
    epochs = [e["val_mse"] for e in result["history"]]
    best_epoch = int(np.argmin(epochs))
    # the case is informative: the best epoch is neither the first nor the last, and early stopping ends the fit
    assert 0 < best_epoch < len(epochs) - 1 < EPOCHS - 1
    assert result["best"] == pytest.approx(min(epochs))
    return result


def _assert_same_fit(result: dict, reference: dict) -> None:
    assert len(result["history"]) == len(reference["history"])  # early stopping at the same epoch
    for got, want in zip(result["history"], reference["history"], strict=True):
        assert got["train_mse"] == pytest.approx(want["train_mse"], rel=TOLERANCE)
        assert got["val_mse"] == pytest.approx(want["val_mse"], rel=TOLERANCE)
    best_epoch = int(np.argmin([e["val_mse"] for e in result["history"]]))
    assert best_epoch == int(np.argmin([e["val_mse"] for e in reference["history"]]))
    assert result["best"] == pytest.approx(reference["best"], rel=TOLERANCE)
    np.testing.assert_allclose(result["pred"], reference["pred"], atol=TOLERANCE)


@pytest.mark.slow
def test_ddp_two_processes_match_one(single, tmp_path):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    _run([*torchrun, __file__, "ddp", str(tmp_path / "ddp")], tmp_path)
    ranks = _results(tmp_path, "ddp")
    assert [r["rank"] for r in ranks] == [0, 1]
    assert ranks[0]["pred"] == ranks[1]["pred"]  # every process ends with the same best weights
    assert ranks[0]["history"][0]["val_mse"] == ranks[1]["history"][0]["val_mse"]  # one global metric
    for result in ranks:
        _assert_same_fit(result, single)


@pytest.mark.slow
def test_ddp_spawn_returns_best_weights_and_history(single, tmp_path):
    _run([sys.executable, __file__, "spawn", str(tmp_path / "spawn")], tmp_path)
    (result,) = _results(tmp_path, "spawn")  # the main process: weights and history came back from rank 0
    _assert_same_fit(result, single)


def test_shard_sampler_covers_every_spot_once():
    from sepal_tl.tl._training import ShardSampler

    shards = [list(ShardSampler(17, rank=r, world_size=3)) for r in range(3)]
    assert [len(s) for s in shards] == [6, 6, 5]
    assert sorted(sum(shards, [])) == list(range(17))
    with pytest.raises(ValueError, match="rank=3"):
        ShardSampler(17, rank=3, world_size=3)


def test_task_and_callbacks_pickle():
    import torch

    from sepal_tl.tl._training import BestWeights, History, regression_task

    task = regression_task(torch.nn.Linear(2, 1), mse_loss, lr=0.1, weight_decay=0.0)
    task.history = [{"epoch": 0, "val_mse": 1.5}]
    clone = pickle.loads(pickle.dumps(task))
    assert clone.history == task.history
    assert torch.equal(clone.net.weight, task.net.weight)
    for callback in (BestWeights("val_mse"), History()):
        assert type(pickle.loads(pickle.dumps(callback))) is type(callback)


def test_memmap_image_source_pickles_without_pixels(tmp_path):
    from sepal_tl.io._image_sources import ImageSource

    pixels = np.random.default_rng(0).integers(0, 256, size=(300, 200, 3), dtype=np.uint8)
    np.save(tmp_path / "he.npy", pixels)
    source = ImageSource(np.load(tmp_path / "he.npy", mmap_mode="r"), 1.0, "slide")
    payload = pickle.dumps(source)
    assert len(payload) < pixels.nbytes / 100  # the worker re-opens the file instead of receiving the pixels
    clone = pickle.loads(payload)
    assert not clone.in_memory
    np.testing.assert_array_equal(clone.crop_pixels(10, 20, 50), pixels[10:60, 20:70])


if __name__ == "__main__":
    fit(sys.argv[1], Path(sys.argv[2]))
