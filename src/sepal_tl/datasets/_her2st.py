"""HER2-positive breast cancer legacy ST sections of Andersson et al. 2021 (:func:`her2st`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pooch
from anndata import AnnData

from sepal_tl import io
from sepal_tl._logging import logger
from sepal_tl._settings import settings
from sepal_tl._uns import record

from ._registry import HER2ST_COMMIT, load_registry

__all__ = ["her2st"]

URL_ENV = "SEPAL_HER2ST_URL"
DEFAULT_URL = f"https://github.com/almaan/her2st/raw/{HER2ST_COMMIT}/data/"


def _section_files(registry: dict[str, str]) -> dict[str, dict[str, str]]:
    """Section → ``{"counts": ..., "spots": ..., "image": ...}`` relative paths, from the registry."""
    files: dict[str, dict[str, str]] = {}
    for name in registry:
        folder, _, rest = name.partition("/")
        if folder == "ST-cnts" and rest.endswith(".tsv.gz"):
            files.setdefault(rest.removesuffix(".tsv.gz"), {})["counts"] = name
        elif folder == "ST-spotfiles" and rest.endswith("_selection.tsv"):
            files.setdefault(rest.removesuffix("_selection.tsv"), {})["spots"] = name
        elif folder == "ST-imgs":
            files.setdefault(rest.split("/")[1], {})["image"] = name
    return dict(sorted(files.items()))


def _check_sections(sections: str | Sequence[str] | None, available: dict[str, dict[str, str]]) -> list[str]:
    with_image = [s for s, f in available.items() if "image" in f]
    if sections is None:
        return with_image
    sections = [sections] if isinstance(sections, str) else list(sections)
    unknown = [s for s in sections if s not in available]
    if unknown or not sections:
        msg = (
            f"Unknown her2st section(s) {unknown}. Valid sections: {list(available)}; "
            f"those with an H&E image: {with_image}."
        )
        raise ValueError(msg)
    repeated = sorted({s for s in sections if sections.count(s) > 1})
    if repeated:
        msg = f"her2st sections {repeated} are listed more than once."
        raise ValueError(msg)
    return sections


def _local_root(path: str | os.PathLike) -> Path:
    """The folder holding ``ST-cnts/``: ``path`` itself, or ``path/data`` for a clone of the repository."""
    root = Path(path).expanduser()
    if not (root / "ST-cnts").is_dir() and (root / "data" / "ST-cnts").is_dir():
        root = root / "data"
    if not (root / "ST-cnts").is_dir():
        msg = (
            f"{str(path)!r} is not a her2st data folder: it has no 'ST-cnts/' (nor 'data/ST-cnts/'). "
            "Pass the folder holding ST-cnts/, ST-spotfiles/ and ST-imgs/, or path=None to download."
        )
        raise FileNotFoundError(msg)
    return root


def _local_image(root: Path, section: str, expected: str | None) -> Path | None:
    images = sorted((root / "ST-imgs" / section[0] / section).glob("*.jpg"))
    if not images:
        if expected is not None:
            logger.warning("her2st: no image for section %s under %s; reading counts only.", section, root)
        return None
    return images[0]


def _download(files: list[str], registry: dict[str, str], base_url: str | None) -> tuple[Path, str]:
    """Fetch ``files`` into ``settings.datasetdir / "her2st"`` (cached, SHA-256 checked); return it and the URL."""
    url = base_url or os.environ.get(URL_ENV) or DEFAULT_URL
    url = url if url.endswith("/") else f"{url}/"
    cache = Path(settings.datasetdir) / "her2st"
    fetcher = pooch.create(path=cache, base_url=url, registry={name: registry[name] for name in files})
    for name in files:
        try:
            fetcher.fetch(name, progressbar=False)
        except ValueError as err:  # pooch: the downloaded file does not match the registry's SHA-256
            msg = (
                f"her2st: {name} from {url} does not match its published SHA-256, so it was refused ({err}). The "
                "mirror serves another file: use the default source, or pass path= to a verified local copy."
            )
            raise ValueError(msg) from err
        except OSError as err:  # no network (requests' errors are OSErrors), refused connection, unwritable cache
            cached = " (the cached copy is damaged and was not used)" if (cache / name).exists() else ""
            msg = (
                f"her2st: cannot download {name} from {url} ({type(err).__name__}) and no valid copy is cached in "
                f"{cache}{cached}. Connect to the internet, set {URL_ENV} to a reachable mirror, or pass path= to a "
                "local copy of the data folder."
            )
            raise OSError(msg) from err
    logger.info("her2st: %d files available in %s (source %s)", len(files), cache, url)
    return cache, url


def her2st(
    sections: str | Sequence[str] | None = None,
    *,
    path: str | os.PathLike | None = None,
    base_url: str | None = None,
) -> AnnData:
    """HER2-positive breast cancer sections profiled with legacy Spatial Transcriptomics.

    Andersson et al. 2021, *Spatial deconvolution of HER2-positive breast cancer delineates tumor-associated
    cell type interactions*, Nat Commun 12:6012, public GitHub repository ``almaan/her2st``. Sections are
    named ``<patient letter><replicate>`` (``"A1"`` ... ``"E3"``); 26 are available, five of them (``B4``,
    ``C2``-``C5``) with an H&E image (about 4 MB each; count matrices are 0.2-1 MB). The data carry no
    licence statement: use them for research, do not redistribute them.

    Parameters
    ----------
    sections
        One section name or a list of them. ``None`` loads every section with an image
        (``B4``, ``C2``, ``C3``, ``C4``, ``C5``).
    path
        A local copy of the repository's ``data/`` folder (``ST-cnts/<s>.tsv.gz``,
        ``ST-spotfiles/<s>_selection.tsv``, ``ST-imgs/<patient>/<s>/*.jpg``) or of the whole repository.
        Nothing is downloaded then. ``None`` downloads the files of the requested sections into
        ``sepal.settings.datasetdir / "her2st"`` (once; later calls use that cache), checking every file
        against the SHA-256 hashes shipped with the package. ``datasetdir`` defaults to the environment
        variable ``SEPAL_DATA_DIR``, else ``~/.cache/sepal_tl``; files already there that match their hashes
        are used without any network access.
    base_url
        Where to download from: the URL of the ``data/`` folder. Defaults to the environment variable
        ``SEPAL_HER2ST_URL``, else ``https://github.com/almaan/her2st/raw/<commit>/data/`` at the commit the
        hashes were taken from.

    Returns
    -------
    The sections read with :func:`sepal_tl.io.read_st` (``library_id`` = section name, ``patient`` = its first
    letter) and joined with :func:`sepal_tl.io.concat` (genes measured in every section). Var names are gene
    symbols (``var["gene_symbols"]``). Sections without an image have no ``images`` in
    ``uns["spatial"][section]``. ``uns["sepal"]["datasets"]["her2st"]`` records the sections, the folder read
    and the download URL (``"None"`` for a local ``path``).

    Raises
    ------
    ValueError
        For an unknown section name, or when a downloaded file does not match its SHA-256 hash.
    FileNotFoundError
        When ``path`` is not a her2st folder or lacks a section's counts or spot file.

    Examples
    --------
    >>> import sepal_tl as sepal
    >>> adata = sepal.datasets.her2st(["C2", "C3"])  # downloads about 9 MB on first use
    >>> adata.obs["library_id"].cat.categories.tolist()
    ['C2', 'C3']
    """
    registry = load_registry()
    available = _section_files(registry)
    names = _check_sections(sections, available)
    if path is None:
        root, url = _download([file for s in names for file in available[s].values()], registry, base_url)
    else:
        root, url = _local_root(path), None
    adatas = []
    for section in names:
        files = available[section]
        if path is None:
            image = root / files["image"] if "image" in files else None
        else:
            image = _local_image(root, section, files.get("image"))
        adatas.append(
            io.read_st(root / files["counts"], root / files["spots"], image, library_id=section, patient=section[0])
        )
    adata = io.concat(adatas)
    params = {"sections": names, "path": str(root), "base_url": url, "commit": HER2ST_COMMIT}
    record(adata, "datasets", "her2st", params)
    return adata
