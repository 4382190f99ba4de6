"""Package-wide settings (cache directory, device, seed, verbosity)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import numpy as np

from ._logging import logger

_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}


class SepalSettings:
    """Settings shared by every ``sepal_tl`` function.

    Attributes
    ----------
    datasetdir
        Where :mod:`sepal_tl.datasets` caches downloads. Defaults to ``$SEPAL_DATA_DIR`` or
        ``~/.cache/sepal_tl``.
    device
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    seed
        Default random seed used when a function's ``random_state`` is ``None``.
    verbosity
        0 = errors, 1 = warnings (default), 2 = info, 3 = debug.
    n_jobs
        Parallel workers for steps that run per slide (``-1``: all cores, the default).
    """

    def __init__(self) -> None:
        self._datasetdir = Path(os.environ.get("SEPAL_DATA_DIR", Path.home() / ".cache" / "sepal_tl"))
        self._device = "auto"
        self._seed = 0
        self._n_jobs = -1
        self._verbosity = 1
        level = os.environ.get("SEPAL_VERBOSITY", "1")
        try:
            self.verbosity = int(level)
        except ValueError as err:
            msg = f"The environment variable SEPAL_VERBOSITY={level!r} must be 0, 1, 2 or 3."
            raise ValueError(msg) from err

    @property
    def datasetdir(self) -> Path:
        """Directory for downloaded datasets."""
        return self._datasetdir

    @datasetdir.setter
    def datasetdir(self, value: str | os.PathLike) -> None:
        if not isinstance(value, str | os.PathLike) or not str(value):
            msg = f"datasetdir must be a folder path (str or Path), got {type(value).__name__} ({value!r})."
            raise TypeError(msg)
        self._datasetdir = Path(value).expanduser()

    @property
    def device(self) -> str:
        """Default device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"``."""
        return self._device

    @device.setter
    def device(self, value: str) -> None:
        if not isinstance(value, str) or not _DEVICE.match(value):
            msg = f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {value!r}."
            raise ValueError(msg) if isinstance(value, str) else TypeError(msg)
        self._device = value

    @property
    def seed(self) -> int:
        """Default random seed (a non-negative integer)."""
        return self._seed

    @seed.setter
    def seed(self, value: int) -> None:
        self._seed = _integer("seed", value, minimum=0)

    @property
    def n_jobs(self) -> int:
        """Parallel workers for per-slide steps: a positive integer, or -1 for all cores."""
        return self._n_jobs

    @n_jobs.setter
    def n_jobs(self, value: int) -> None:
        value = _integer("n_jobs", value, minimum=-1)
        if value == 0:
            msg = "n_jobs must be a positive number of workers or -1 (all cores), got 0."
            raise ValueError(msg)
        self._n_jobs = value

    @property
    def verbosity(self) -> int:
        """Logging verbosity from 0 (errors only) to 3 (debug)."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if isinstance(value, bool) or value not in _LEVELS:
            msg = f"verbosity must be one of {sorted(_LEVELS)}, got {value!r}."
            raise ValueError(msg)
        self._verbosity = value
        logger.setLevel(_LEVELS[value])

    def __repr__(self) -> str:
        return (
            f"SepalSettings(datasetdir={str(self.datasetdir)!r}, device={self.device!r}, seed={self.seed}, "
            f"verbosity={self.verbosity}, n_jobs={self.n_jobs})"
        )


def _integer(name: str, value: int, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"{name} must be an integer, got {type(value).__name__} ({value!r})."
        raise TypeError(msg)
    if value < minimum:
        msg = f"{name} must be >= {minimum}, got {value}."
        raise ValueError(msg)
    return int(value)


settings = SepalSettings()


def n_workers(n_jobs: int | None, n_tasks: int) -> int:
    """Workers for ``n_tasks`` independent tasks.

    ``n_jobs`` (``None``: ``settings.n_jobs``; ``-1``: all cores), never more than there are tasks, at least one.
    """
    jobs = settings.n_jobs if n_jobs is None else _integer("n_jobs", n_jobs, minimum=-1)
    if jobs == 0:
        msg = f"n_jobs must be a positive number of workers or -1 (all cores), got {jobs}."
        raise ValueError(msg)
    if jobs == -1:
        jobs = os.cpu_count() or 1
    return max(1, min(jobs, n_tasks))
