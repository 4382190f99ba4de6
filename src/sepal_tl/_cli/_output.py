"""An output folder a command owns while it runs: locked, marked incomplete until the report is written.

:func:`output_folder` takes the folder's lock (a second run into the same folder fails at once), removes the
previous run's report (the report is the last thing a run writes, so a report always describes the files next
to it) and leaves an ``INCOMPLETE`` marker until the command succeeds. An interrupted or failed run leaves
the marker and no report, so that neither a person nor a rerun mistakes its half-written outputs for
results. Each output file itself is replaced atomically (:mod:`sepal_tl._atomic`).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from anndata import AnnData

from sepal_tl._atomic import FolderLock, atomic_path, write_text

#: Marker present while a command runs and after it fails or is interrupted.
INCOMPLETE = "INCOMPLETE"


@contextmanager
def output_folder(folder: str | os.PathLike, *, report: str | None = "report.md") -> Iterator[Path]:
    """Lock ``folder``, mark it incomplete and drop its old ``report``; unmark it when the block succeeds."""
    folder = Path(folder)
    with FolderLock(folder):
        marker = folder / INCOMPLETE
        write_text(
            marker,
            f"A sepal command started writing here at {time.strftime('%Y-%m-%d %H:%M:%S')} (process {os.getpid()} "
            f"on {socket.gethostname()}) and has not finished: it is running, failed or was interrupted. The "
            "files here may mix this run and an earlier one; rerun the command to complete them.\n",
        )
        if report is not None:
            (folder / report).unlink(missing_ok=True)
        yield folder
        marker.unlink()


def write_h5ad(adata: AnnData, path: Path) -> None:
    """``adata.write_h5ad(path)``, atomically."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
