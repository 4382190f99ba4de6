"""Writes that never leave half a file behind, and a lock that keeps two runs out of one folder.

Every output is first written to a hidden temporary file or folder *in the same directory* and then renamed
onto its final name (:func:`os.replace`, atomic on POSIX and Windows for files): a reader sees the old
content or the new content, never a mixture, and an interrupted write leaves only a ``.*.tmp-*`` entry.
Folders are swapped with two renames (old out of the way, new in place), so an interruption between them
leaves the new folder under its temporary name and the old one under a ``.*.old-*`` name, never a mixture.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: Name of the lock file :class:`FolderLock` holds in a locked folder.
LOCK_NAME = ".sepal.lock"


def _sibling(path: Path, tag: str, suffix: str = "") -> Path:
    """A hidden, unique name next to ``path`` (ending in ``suffix``, for writers that look at the extension)."""
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; when the block succeeds, rename it onto ``path``.

    The block writes the temporary file however it likes (``np.save``, ``write_h5ad``, ...); if the block
    raises, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = _sibling(path, "tmp", path.suffix)
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Atomically replace ``path`` with ``text`` (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


@contextmanager
def atomic_folder(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield a new, empty temporary folder next to ``path``; when the block succeeds, move it to ``path``.

    An existing ``path`` is replaced only when ``replace`` is true (else :class:`FileExistsError`) and is deleted
    only after the new folder is in place. If the block raises, the temporary folder is removed and ``path``
    is untouched.
    """
    path = Path(path)
    tmp = _sibling(path, "tmp")
    tmp.mkdir(parents=False)
    try:
        yield tmp
        for file in tmp.rglob("*"):
            if file.is_file():
                with open(file, "rb+") as fh:
                    os.fsync(fh.fileno())
        old = None
        if path.exists() or path.is_symlink():
            if not replace:
                msg = f"{str(path)!r} exists; it is not replaced."
                raise FileExistsError(msg)
            old = _sibling(path, "old")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(path.parent)
    if old is not None:
        if old.is_dir() and not old.is_symlink():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)


def sha256(path: str | os.PathLike, *, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class FolderLockedError(RuntimeError):
    """Another process holds the lock of an output folder."""


class FolderLock:
    """An exclusive lock on a folder, held by an OS file lock on ``folder/.sepal.lock``.

    The operating system releases the lock when its process ends, however it ends (Ctrl-C, ``kill -9``, a
    crash), so a stale lock file never blocks a later run. A second process (or a second lock in the same
    process) that tries the same folder gets :class:`FolderLockedError` at once, naming the holder.

    Use as a context manager: ``with FolderLock(out): ...``.
    """

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self._fd: int | None = None

    def _holder(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8").strip() or "another process"
        except OSError:
            return "another process"

    def acquire(self) -> None:
        """Take the lock or raise :class:`FolderLockedError`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            if not _try_lock(fd):
                os.close(fd)
                msg = (
                    f"{str(self.folder)!r} is in use by {self._holder()}: two runs must not write into one output "
                    "folder. Wait for the other run to finish, or choose another output folder."
                )
                raise FolderLockedError(msg)
            try:  # the file may have been removed by the holder that just released it: lock the new one
                same = os.path.samestat(os.fstat(fd), os.stat(self.path))
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and release the lock (removal first, so that no waiter locks a dead file)."""
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing the descriptor releases the OS lock
        self._fd = None

    def __enter__(self) -> FolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _try_lock(fd: int) -> bool:
    """Non-blocking exclusive OS lock on an open file; ``False`` when someone else holds it."""
    try:
        import fcntl
    except ImportError:  # Windows
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]  # Windows-only module
        except OSError:
            return False
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True
