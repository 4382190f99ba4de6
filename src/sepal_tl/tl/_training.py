"""Lightning plumbing shared by both training stages: devices, trainer, best checkpoint, loss history."""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from sepal_tl._compat import import_lightning
from sepal_tl._logging import logger
from sepal_tl._settings import settings


def resolve_device(device: str | None) -> tuple[str, Any]:
    """Lightning ``(accelerator, devices)`` for ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    device = settings.device if device in (None, "auto") else device
    if device == "auto":
        return ("gpu", 1) if torch.cuda.is_available() else ("cpu", 1)
    if device == "cpu":
        return "cpu", 1
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            msg = f"device={device!r} but CUDA is not available; use device='cpu' or 'auto'."
            raise ValueError(msg)
        index = device.partition(":")[2]
        return "gpu", [int(index)] if index else 1
    msg = f"device={device!r} is not supported; use 'auto', 'cpu', 'cuda' or 'cuda:N'."
    raise ValueError(msg)


def device_of(device: str | None) -> torch.device:
    """The torch device for inference."""
    accelerator, devices = resolve_device(device)
    if accelerator == "gpu":
        return torch.device(f"cuda:{devices[0]}" if isinstance(devices, list) else "cuda")
    return torch.device("cpu")


def regression_task(
    net: torch.nn.Module, loss: Callable[[torch.nn.Module, Any], torch.Tensor], *, lr: float, weight_decay: float
):
    """A LightningModule that trains ``net`` (``task.net``) with Adam on ``loss(net, batch)``.

    ``train_mse`` and ``val_mse`` are logged per epoch (progress bar, checkpoint and history read them).
    """
    L = import_lightning()

    class RegressionTask(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def training_step(self, batch, batch_idx):
            value = loss(self.net, batch)
            self.log("train_mse", value, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch[0]))
            return value

        def validation_step(self, batch, batch_idx):
            value = loss(self.net, batch)
            self.log("val_mse", value, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(batch[0]))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=lr, weight_decay=weight_decay)

    return RegressionTask()


def _history_callback():
    L = import_lightning()

    class History(L.Callback):
        """Keeps every epoch's ``train_mse``, ``val_mse`` and the wall time of its training pass."""

        def __init__(self) -> None:
            self.epochs: list[dict[str, float]] = []
            self._start, self._val_start = 0.0, None

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self._start, self._val_start = time.perf_counter(), None

        def on_validation_epoch_start(self, trainer, pl_module) -> None:
            self._val_start = time.perf_counter()  # Lightning validates inside the training epoch, at its end

        def on_train_epoch_end(self, trainer, pl_module) -> None:
            seconds = (self._val_start or time.perf_counter()) - self._start  # the training pass only
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("train_mse", "val_mse")}
            self.epochs.append({"epoch": trainer.current_epoch, **metrics, "train_seconds": seconds})

    return History()


@contextlib.contextmanager
def _quiet(*names: str):
    """Raise the given loggers to WARNING for the duration of the block."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(max(log.level, logging.WARNING))
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)


def run_training(
    task,
    train_loader,
    val_loader,
    *,
    epochs: int,
    device: str | None,
    patience: int | None,
    trainer_kwargs: dict[str, Any] | None,
) -> tuple[list[dict[str, float]], float]:
    """Train ``task`` with Lightning and load its best weights (lowest ``val_mse``, else ``train_mse``).

    Progress bar, best-checkpoint (a temporary directory unless ``trainer_kwargs["default_root_dir"]`` is given),
    optional early stopping, bf16 autocast on GPUs that support it. ``trainer_kwargs`` go to
    :class:`lightning.pytorch.Trainer` and win over our defaults (e.g. ``devices=4, strategy="ddp"``).
    Returns the per-epoch history and the best monitored value.
    """
    L = import_lightning()
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    accelerator, devices = resolve_device(device)
    monitor = "val_mse" if val_loader is not None else "train_mse"
    if val_loader is None:
        logger.warning("no 'val' spots: keeping the epoch with the lowest training MSE.")
    history = _history_callback()
    with tempfile.TemporaryDirectory(prefix="sepal_ckpt_") as tmp:
        kwargs = dict(trainer_kwargs or {})
        root = Path(kwargs.pop("default_root_dir", tmp))
        checkpoint = ModelCheckpoint(
            dirpath=root / "checkpoints", monitor=monitor, mode="min", save_top_k=1, save_weights_only=True
        )
        callbacks = [checkpoint, history, *kwargs.pop("callbacks", [])]
        if patience is not None:
            callbacks.append(EarlyStopping(monitor=monitor, mode="min", patience=patience))
        bf16 = accelerator == "gpu" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        options = {
            "max_epochs": epochs,
            "accelerator": accelerator,
            "devices": devices,
            "precision": "bf16-mixed" if bf16 else "32-true",
            "logger": False,
            "enable_model_summary": False,
            "enable_progress_bar": settings.verbosity >= 1,
            "default_root_dir": root,
            "num_sanity_val_steps": 0,
            **kwargs,
        }
        with warnings.catch_warnings(), _quiet("lightning.pytorch", "lightning.fabric"):
            # Lightning's start-up banner (GPU/TPU availability, tips) stays out of our users' logs; without
            # validation spots it also notes that validation_step goes unused, which is expected here.
            warnings.filterwarnings("ignore", message=".*no `val_dataloader`", category=UserWarning)
            warnings.filterwarnings("ignore", message=".*treespec", category=Warning)
            trainer = L.Trainer(callbacks=callbacks, **options)
            trainer.fit(task, train_dataloaders=train_loader, val_dataloaders=val_loader)
        best = float(checkpoint.best_model_score) if checkpoint.best_model_score is not None else float("nan")
        if checkpoint.best_model_path:
            state = torch.load(checkpoint.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            task.load_state_dict(state)
    task.to("cpu")
    return history.epochs, best
