"""Package-wide settings (cache directory, device, seed, verbosity)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ._logging import logger

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
        self.device: str = "auto"
        self.seed: int = 0
        self.n_jobs: int = -1
        self._verbosity = 1
        self.verbosity = int(os.environ.get("SEPAL_VERBOSITY", 1))

    @property
    def datasetdir(self) -> Path:
        """Directory for downloaded datasets."""
        return self._datasetdir

    @datasetdir.setter
    def datasetdir(self, value: str | os.PathLike) -> None:
        self._datasetdir = Path(value).expanduser()

    @property
    def verbosity(self) -> int:
        """Logging verbosity from 0 (errors only) to 3 (debug)."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if value not in _LEVELS:
            msg = f"verbosity must be one of {sorted(_LEVELS)}, got {value!r}."
            raise ValueError(msg)
        self._verbosity = value
        logger.setLevel(_LEVELS[value])

    def __repr__(self) -> str:
        return (
            f"SepalSettings(datasetdir={str(self.datasetdir)!r}, device={self.device!r}, seed={self.seed}, "
            f"verbosity={self.verbosity}, n_jobs={self.n_jobs})"
        )


settings = SepalSettings()


def n_workers(n_jobs: int | None, n_tasks: int) -> int:
    """Workers for ``n_tasks`` independent tasks.

    ``n_jobs`` (``None``: ``settings.n_jobs``; ``-1``: all cores), never more than there are tasks, at least one.
    """
    jobs = settings.n_jobs if n_jobs is None else n_jobs
    if jobs == 0 or jobs < -1:
        msg = f"n_jobs must be a positive number of workers or -1 (all cores), got {jobs}."
        raise ValueError(msg)
    if jobs == -1:
        jobs = os.cpu_count() or 1
    return max(1, min(jobs, n_tasks))
