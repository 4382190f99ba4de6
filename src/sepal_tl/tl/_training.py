"""Lightning plumbing shared by both training stages: devices, the task, its callbacks, samplers and the trainer.

Everything Lightning pickles lives at module level, so that ``strategy="ddp_spawn"`` and DataLoader workers
started by ``spawn`` work, and so that the classes can be imported and subclassed:

- :class:`RegressionTask` trains ``net`` with Adam on ``loss(net, batch)`` and logs ``train_mse`` / ``val_mse``
  as the mean over the spots of all processes (batches weighted by their size in a torchmetrics ``MeanMetric``).
- :class:`BestWeights` keeps, in memory, the weights of the epoch with the lowest monitored value. Every process
  sees the same global value and holds the same parameters, so every process ends with the same best weights,
  without a shared file system (multi-node).
- :class:`History` records every epoch's metrics and training time.
- :class:`ShardedLoaders` hands each process its share of the spots: a
  :class:`~torch.utils.data.DistributedSampler` for training and :class:`ShardSampler` (no padding) for
  validation, so that the validation metric counts every spot exactly once.

:func:`run_training` puts them together; the stages only build the network, the loss and the loaders.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Iterator, Sized
from typing import TYPE_CHECKING, Any, cast

import torch
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from sepal_tl._compat import import_lightning
from sepal_tl._logging import logger
from sepal_tl._settings import settings

if TYPE_CHECKING:
    import lightning as L
else:
    L = import_lightning()  # first: it makes torchvision (needed by torchmetrics) importable
from torchmetrics import MeanMetric

#: Metrics logged by :class:`RegressionTask` (and recorded by :class:`History`).
METRICS = ("train_mse", "val_mse")


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


def _batch_size(batch) -> int:
    first = batch[0] if isinstance(batch, list | tuple) else batch
    return len(first)


class RegressionTask(L.LightningModule):
    """Train ``net`` (``task.net``) with Adam on ``loss(net, batch)``, a batch-mean squared error.

    ``train_mse`` and ``val_mse`` are logged per epoch as the mean over the spots of all processes: each batch's
    value is weighted by its size in a :class:`torchmetrics.MeanMetric`, whose sums are added over processes.
    (Lightning's ``sync_dist=True`` averages the per-process spot counts as integers, which truncates: 17
    spots on 2 processes would count as 16.) After :func:`run_training`, ``history`` holds every epoch's
    metrics and ``best_score`` the best monitored value; both travel with the state dict (extra state), so
    that they come back from the worker processes of ``strategy="ddp_spawn"``.

    Parameters
    ----------
    net
        The network to train.
    loss
        ``loss(net, batch) -> scalar tensor``, the mean over the batch's spots. It must be picklable (a
        module-level function or callable object, not a closure) for ``ddp_spawn`` and spawned workers.
    lr, weight_decay
        Adam's learning rate and weight decay.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        loss: Callable[[Any, Any], torch.Tensor],  # called as loss(net, batch)
        *,
        lr: float,
        weight_decay: float,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.lr = lr
        self.weight_decay = weight_decay
        self.history: list[dict[str, float]] = []
        self.best_score = float("nan")
        # NaN losses must show in the metric, not be dropped
        self.train_mse = MeanMetric(nan_strategy="disable")
        self.val_mse = MeanMetric(nan_strategy="disable")

    def _step(self, name: str, batch) -> torch.Tensor:
        value = self.loss(self.net, batch)
        metric = getattr(self, name)
        metric.update(value.detach().float(), weight=_batch_size(batch))
        self.log(name, metric, on_step=False, on_epoch=True, prog_bar=True)
        return value

    def training_step(self, batch, batch_idx):
        return self._step("train_mse", batch)

    def validation_step(self, batch, batch_idx):
        self._step("val_mse", batch)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)

    def get_extra_state(self) -> dict[str, Any]:
        return {"history": self.history, "best_score": self.best_score}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self.history = list(state["history"])
        self.best_score = float(state["best_score"])


def regression_task(
    net: torch.nn.Module, loss: Callable[[Any, Any], torch.Tensor], *, lr: float, weight_decay: float
) -> RegressionTask:
    """A :class:`RegressionTask` training ``net`` with Adam on ``loss(net, batch)``."""
    return RegressionTask(net, loss, lr=lr, weight_decay=weight_decay)


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A CPU copy of the parameters and buffers (extra state excluded)."""
    return {
        name: value.detach().to("cpu", copy=True)
        for name, value in module.state_dict().items()
        if isinstance(value, torch.Tensor)
    }


class BestWeights(L.Callback):
    """Keep, in memory, the weights of the epoch with the lowest ``monitor`` and load them when training ends.

    The monitored value is read from ``trainer.callback_metrics`` after validation (after the training epoch
    for ``"train_mse"``), where it is already reduced over all processes; NaN values never count as best. The
    best value goes to ``pl_module.best_score``.

    Parameters
    ----------
    monitor
        ``"val_mse"`` or ``"train_mse"``.
    """

    def __init__(self, monitor: str = "val_mse") -> None:
        self.monitor = monitor
        self.best_score = float("inf")
        self._state: dict[str, torch.Tensor] | None = None

    def _update(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.monitor not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics[self.monitor])
        if value < self.best_score:  # False for NaN
            self.best_score = value
            self._state = _weights(pl_module)

    def on_validation_end(self, trainer, pl_module) -> None:
        if self.monitor != "train_mse":
            self._update(trainer, pl_module)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.monitor == "train_mse":
            self._update(trainer, pl_module)

    def on_fit_end(self, trainer, pl_module) -> None:
        if self._state is not None:
            pl_module.load_state_dict(self._state, strict=False)
            pl_module.best_score = self.best_score


class History(L.Callback):
    """Append every epoch's ``train_mse``, ``val_mse`` and training wall time to ``pl_module.history``."""

    def __init__(self) -> None:
        self._start: float = 0.0
        self._val_start: float | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._val_start = time.perf_counter(), None

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._val_start = time.perf_counter()  # Lightning validates inside the training epoch, at its end

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        seconds = (self._val_start or time.perf_counter()) - self._start  # the training pass only
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in METRICS}
        pl_module.history.append({"epoch": trainer.current_epoch, **metrics, "train_seconds": seconds})


class ShardSampler(Sampler[int]):
    """Positions ``rank, rank + world_size, ...`` of ``range(n)``: every item exactly once over all processes.

    Unlike :class:`~torch.utils.data.DistributedSampler` it never pads shards to equal length, so a metric
    reduced over processes counts no item twice. Shards differ in length by at most one.
    """

    def __init__(self, n: int, *, rank: int, world_size: int) -> None:
        if not 0 <= rank < world_size:
            msg = f"rank={rank} must lie in [0, world_size={world_size})."
            raise ValueError(msg)
        self.n, self.rank, self.world_size = int(n), int(rank), int(world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.n, self.world_size))

    def __len__(self) -> int:
        return len(range(self.rank, self.n, self.world_size))


def _rebuild(loader: DataLoader, sampler: Sampler) -> DataLoader:
    """The same loader (batch size, collate, workers, ...) drawing from ``sampler``."""
    return DataLoader(
        loader.dataset,
        batch_size=loader.batch_size,
        sampler=sampler,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        drop_last=loader.drop_last,
        timeout=loader.timeout,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context,
        generator=loader.generator,
        persistent_workers=loader.persistent_workers,
    )


class ShardedLoaders(L.LightningDataModule):
    """Serve the training and validation loaders, split over processes when there are several.

    With one process the loaders are used as they are. With ``world_size`` processes each gets, at the same
    batch size (so the effective batch is ``batch_size × world_size``): for training a
    :class:`~torch.utils.data.DistributedSampler` (shuffled like the given loader, reshuffled every epoch from
    the global seed; the last shard is padded with repeated spots so that all processes take the same number
    of optimiser steps); for validation a :class:`ShardSampler`, which counts every spot exactly once.
    Requires ``Trainer(use_distributed_sampler=False)`` (:func:`run_training` sets it).
    """

    def __init__(self, train: DataLoader, val: DataLoader | None) -> None:
        super().__init__()
        self.train, self.val = train, val

    def _world(self) -> tuple[int, int]:
        assert self.trainer is not None  # Lightning attaches its trainer before it asks for the loaders
        return self.trainer.global_rank, self.trainer.world_size

    def train_dataloader(self) -> DataLoader:
        rank, world = self._world()
        if world == 1:
            return self.train
        sampler: Sampler[int] = DistributedSampler(
            self.train.dataset,
            num_replicas=world,
            rank=rank,
            shuffle=isinstance(self.train.sampler, RandomSampler),
            seed=int(os.environ.get("PL_GLOBAL_SEED", 0)),
        )
        return _rebuild(self.train, sampler)

    def val_dataloader(self) -> DataLoader | list:
        if self.val is None:
            return []
        rank, world = self._world()
        if world == 1:
            return self.val
        n = len(cast(Sized, self.val.dataset))  # our datasets have a length
        if n < world:
            msg = (
                f"{n} validation spots cannot be shared by {world} processes without repeating spots; use fewer "
                "devices or more validation spots."
            )
            raise ValueError(msg)
        return _rebuild(self.val, ShardSampler(n, rank=rank, world_size=world))


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


@contextlib.contextmanager
def _restore_determinism():
    """Undo the process-wide ``torch.use_deterministic_algorithms`` that ``Trainer(deterministic=...)`` sets."""
    enabled, warn_only = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


def run_training(
    task: RegressionTask,
    train_loader: DataLoader,
    val_loader: DataLoader | None,
    *,
    epochs: int,
    device: str | None,
    patience: int | None,
    trainer_kwargs: dict[str, Any] | None,
    deterministic: bool | str | None = None,
) -> tuple[list[dict[str, float]], float]:
    """Train ``task`` with Lightning and load its best weights (lowest ``val_mse``, else ``train_mse``).

    Progress bar, best weights kept in memory (:class:`BestWeights`), optional early stopping on the same
    global value, bf16 autocast on GPUs that support it. ``trainer_kwargs`` go to
    :class:`lightning.pytorch.Trainer` and win over our defaults, e.g. ``{"devices": 4, "strategy": "ddp"}``,
    ``{"strategy": "ddp_spawn"}``, ``{"num_nodes": 2}`` (see the distributed-training page of the docs).
    With several processes the loaders are split by :class:`ShardedLoaders` (``batch_size`` is per process),
    metrics are reduced over processes, and every process ends with the same best weights.

    Parameters
    ----------
    task
        From :func:`regression_task`.
    train_loader, val_loader
        Training and validation loaders (``None``: no validation spots; the best epoch is then the one with the
        lowest training MSE).
    epochs
        Maximum number of epochs.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    patience
        Stop after this many epochs without improvement (``None``: off).
    trainer_kwargs
        Extra :class:`lightning.pytorch.Trainer` arguments; ``callbacks`` are added to ours.
    deterministic
        Passed to the Trainer: ``True`` makes GPU runs reproducible (deterministic kernels only; an operation
        without one raises), ``"warn"`` only warns about such operations. The process-wide torch setting is
        restored afterwards.

    Returns
    -------
    The per-epoch history and the best monitored value (NaN when no epoch gave a finite value).
    """
    from lightning.pytorch.callbacks import Checkpoint, EarlyStopping

    accelerator, devices = resolve_device(device)
    monitor = "val_mse" if val_loader is not None else "train_mse"
    if val_loader is None:
        logger.warning("no 'val' spots: keeping the epoch with the lowest training MSE.")
    kwargs = dict(trainer_kwargs or {})
    if kwargs.get("use_distributed_sampler", False):
        msg = (
            "trainer_kwargs['use_distributed_sampler']=True would pad the validation spots and split them twice; "
            "leave it out: the spots are split over processes by sepal_tl.tl._training.ShardedLoaders."
        )
        raise ValueError(msg)
    extra_callbacks = list(kwargs.pop("callbacks", []))
    callbacks = [BestWeights(monitor), History(), *extra_callbacks]
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
        # best weights are kept in memory; Lightning's own checkpoint files only if the user asks for them
        "enable_checkpointing": any(isinstance(cb, Checkpoint) for cb in extra_callbacks),
        "num_sanity_val_steps": 0,
        "use_distributed_sampler": False,  # ShardedLoaders splits the spots, without padding validation
        **({} if deterministic is None else {"deterministic": deterministic}),
        **kwargs,
    }
    task.history, task.best_score = [], float("nan")
    data = ShardedLoaders(train_loader, val_loader)
    with _restore_determinism(), warnings.catch_warnings(), _quiet("lightning.pytorch", "lightning.fabric"):
        # Lightning's start-up banner (GPU/TPU availability, tips) stays out of our users' logs; without
        # validation spots it also notes that the (empty) validation loader has no batches, which is expected.
        warnings.filterwarnings("ignore", message=".*Total length of `list` across ranks is zero", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*treespec", category=Warning)
        trainer = L.Trainer(callbacks=callbacks, **options)
        trainer.fit(task, datamodule=data)
    task.to("cpu")
    return list(task.history), float(task.best_score)
