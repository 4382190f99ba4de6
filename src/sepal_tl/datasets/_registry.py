"""SHA-256 registry of the her2st files that :func:`sepal_tl.datasets.her2st` may download.

The registry (``her2st_registry.txt`` next to this module, pooch's format: one ``<relative path> <sha256>``
per line) lists every file of the upstream repository's ``data/`` folder that the loader uses, at the
commit :data:`HER2ST_COMMIT`. It holds names and hashes only, never data. Regenerate it from a local copy
of that folder with::

    python -m sepal_tl.datasets._registry /path/to/her2st/data
"""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import os
import sys
from pathlib import Path

__all__ = ["HER2ST_COMMIT", "file_hashes", "load_registry", "write_registry"]

HER2ST_COMMIT = "85df7411b987a7dec3feff9718b869a7a82091ec"
"""Commit of the public ``almaan/her2st`` GitHub repository that the registry describes."""

REGISTRY_FILE = "her2st_registry.txt"
_FOLDERS = ("ST-cnts", "ST-spotfiles", "ST-imgs")


def file_hashes(root: str | os.PathLike) -> dict[str, str]:
    """SHA-256 of every file under the her2st folders of ``root``.

    Parameters
    ----------
    root
        A folder laid out like the repository's ``data/``: ``ST-cnts/``, ``ST-spotfiles/``, ``ST-imgs/``.

    Returns
    -------
    Relative POSIX path → hex digest, sorted by path.
    """
    root = Path(root)
    hashes = {}
    for folder in _FOLDERS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                digest = hashlib.sha256()
                with path.open("rb") as fh:
                    for block in iter(functools.partial(fh.read, 1 << 20), b""):
                        digest.update(block)
                hashes[path.relative_to(root).as_posix()] = digest.hexdigest()
    if not hashes:
        msg = f"No her2st files under {str(root)!r}: expected the folders {list(_FOLDERS)}."
        raise FileNotFoundError(msg)
    return dict(sorted(hashes.items()))


def write_registry(root: str | os.PathLike, path: str | os.PathLike) -> int:
    """Write the registry of the files under ``root`` to ``path``; return the number of files."""
    hashes = file_hashes(root)
    Path(path).write_text("".join(f"{name} {digest}\n" for name, digest in hashes.items()))
    return len(hashes)


def load_registry() -> dict[str, str]:
    """The packaged registry: relative path → SHA-256 hex digest."""
    text = (importlib.resources.files("sepal_tl.datasets") / REGISTRY_FILE).read_text()
    return dict(line.split() for line in text.splitlines() if line.strip())


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sepal_tl.datasets._registry <her2st data folder>")
    n = write_registry(sys.argv[1], Path(__file__).with_name(REGISTRY_FILE))
    print(f"wrote {n} hashes to {Path(__file__).with_name(REGISTRY_FILE)}")
