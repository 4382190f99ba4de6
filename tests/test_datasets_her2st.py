from __future__ import annotations

import functools
import gzip
import hashlib
import re
import shutil
import socket
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

import sepal_tl as sepal
from sepal_tl._settings import SepalSettings
from sepal_tl.datasets._her2st import DEFAULT_URL, URL_ENV
from sepal_tl.datasets._registry import HER2ST_COMMIT, file_hashes, load_registry

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HER2ST = DATA / "her2st"

needs_her2st = pytest.mark.skipif(not HER2ST.is_dir(), reason="shared her2st copy not available")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Server:
    """A local HTTP server for one folder that counts the GET requests it answers."""

    def __init__(self, root: Path) -> None:
        self.requests: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                with server._lock:
                    server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.httpd.timeout = 5
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def serve(monkeypatch):
    """Start local HTTP servers (``serve(folder) -> _Server``); all are shut down at teardown."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", URL_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    servers: list[_Server] = []

    def start(root: Path) -> _Server:
        servers.append(_Server(root))
        return servers[-1]

    yield start
    for server in servers:
        server.close()
    assert not any(server.thread.is_alive() for server in servers)


@pytest.fixture
def datasetdir(tmp_path, monkeypatch) -> Path:
    target = tmp_path / "datasets"
    monkeypatch.setattr(sepal.settings, "datasetdir", target)
    return target


# --- registry ---------------------------------------------------------------------------------------


def test_registry_lists_all_sections():
    registry = load_registry()
    assert len(registry) == 57
    assert all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in registry.values())
    images = sorted(name for name in registry if name.startswith("ST-imgs/"))
    assert [name.split("/")[2] for name in images] == ["B4", "C2", "C3", "C4", "C5"]
    assert sum(name.startswith("ST-cnts/") for name in registry) == 26
    assert HER2ST_COMMIT in DEFAULT_URL
    assert DEFAULT_URL.startswith("https://github.com/almaan/her2st/raw/") and DEFAULT_URL.endswith("/data/")


@pytest.mark.realdata
@needs_her2st
def test_registry_matches_local_copy():
    assert file_hashes(HER2ST) == load_registry()


def test_unknown_and_repeated_sections():
    with pytest.raises(ValueError, match=r"Unknown her2st section\(s\) \['Z9'\].*'A1'.*with an H&E image: \['B4'"):
        sepal.datasets.her2st(["C2", "Z9"], path="unused")
    with pytest.raises(ValueError, match="Unknown"):
        sepal.datasets.her2st([], path="unused")
    with pytest.raises(ValueError, match="more than once"):
        sepal.datasets.her2st(["C2", "C2"], path="unused")


def test_not_a_her2st_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a her2st data folder"):
        sepal.datasets.her2st("C2", path=tmp_path)


# --- local copy -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def local_c2_b4():
    if not HER2ST.is_dir():
        pytest.skip("shared her2st copy not available")
    return sepal.datasets.her2st(["C2", "B4"], path=HER2ST)


@pytest.mark.realdata
@needs_her2st
def test_local_read(local_c2_b4):
    adata = local_c2_b4
    assert adata.obs["library_id"].cat.categories.tolist() == ["C2", "B4"]
    assert adata.obs["library_id"].value_counts().to_dict() == {"B4": 283, "C2": 187}
    assert adata.obs.groupby("library_id", observed=True)["patient"].first().astype(str).to_dict() == {
        "C2": "C",
        "B4": "B",
    }
    assert adata.obs_names.is_unique
    assert "gene_symbols" in adata.var
    assert adata.n_vars > 10_000
    assert adata.X.dtype == np.float32
    assert np.array_equal(adata.X.data, np.round(adata.X.data))
    assert (adata.layers["counts"] != adata.X).nnz == 0
    for section in ("C2", "B4"):
        entry = adata.uns["spatial"][section]
        hires = entry["images"]["hires"]
        assert hires.dtype == np.uint8 and max(hires.shape[:2]) == 2000
        xy = adata.obsm["spatial"][(adata.obs["library_id"] == section).to_numpy()]
        scaled = xy * entry["scalefactors"]["tissue_hires_scalef"]
        assert (scaled >= 0).all() and (scaled[:, 0] < hires.shape[1]).all() and (scaled[:, 1] < hires.shape[0]).all()
        assert 100 < entry["scalefactors"]["spot_diameter_fullres"] < 200  # ~136 px at 0.733 um/px
    params = adata.uns["sepal"]["datasets"]["her2st"]
    assert params["sections"] == ["C2", "B4"] and params["base_url"] == "None"
    assert params["commit"] == HER2ST_COMMIT


@pytest.mark.realdata
@needs_her2st
def test_local_read_matches_io(local_c2_b4):
    c2 = sepal.io.read_st(
        HER2ST / "ST-cnts" / "C2.tsv.gz",
        HER2ST / "ST-spotfiles" / "C2_selection.tsv",
        HER2ST / "ST-imgs" / "C" / "C2" / "5714_HE_BT_C2.jpg",
        library_id="C2",
    )
    part = local_c2_b4[local_c2_b4.obs["library_id"] == "C2"]
    assert (part.obs_names == c2.obs_names).all()
    genes = part.var_names
    assert (part.X != c2[:, genes].X).nnz == 0


@pytest.mark.realdata
@needs_her2st
def test_count_only_section_and_repository_root(tmp_path):
    (tmp_path / "data").symlink_to(HER2ST, target_is_directory=True)
    adata = sepal.datasets.her2st("A1", path=tmp_path)
    assert adata.obs["library_id"].cat.categories.tolist() == ["A1"]
    assert adata.obs["patient"].astype(str).unique().tolist() == ["A"]
    assert adata.uns["spatial"]["A1"]["images"] == {}


@pytest.mark.realdata
@needs_her2st
def test_default_sections_are_those_with_images():
    adata = sepal.datasets.her2st(path=HER2ST)
    assert adata.obs["library_id"].cat.categories.tolist() == ["B4", "C2", "C3", "C4", "C5"]
    assert all("hires" in entry["images"] for entry in adata.uns["spatial"].values())


# --- download ---------------------------------------------------------------------------------------


@pytest.mark.realdata
@needs_her2st
def test_download_checks_hashes_and_caches(serve, datasetdir, local_c2_b4):
    server = serve(HER2ST)
    adata = sepal.datasets.her2st(["C2", "A1"], base_url=server.url)

    expected = {
        "ST-cnts/C2.tsv.gz",
        "ST-spotfiles/C2_selection.tsv",
        "ST-imgs/C/C2/5714_HE_BT_C2.jpg",
        "ST-cnts/A1.tsv.gz",
        "ST-spotfiles/A1_selection.tsv",
    }
    assert sorted(server.requests) == sorted(f"/{name}" for name in expected)
    cache = datasetdir / "her2st"
    fetched = {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()}
    assert fetched == expected
    registry = load_registry()
    for name in expected:
        assert _sha256(cache / name) == registry[name]

    assert adata.obs["library_id"].cat.categories.tolist() == ["C2", "A1"]
    assert "hires" in adata.uns["spatial"]["C2"]["images"]
    assert adata.uns["spatial"]["A1"]["images"] == {}
    params = adata.uns["sepal"]["datasets"]["her2st"]
    assert params["base_url"] == server.url and params["path"] == str(cache)
    c2 = adata[adata.obs["library_id"] == "C2"]
    local = local_c2_b4[local_c2_b4.obs["library_id"] == "C2"]
    assert (c2.obs_names == local.obs_names).all()
    np.testing.assert_array_equal(c2.obsm["spatial"], local.obsm["spatial"])
    np.testing.assert_array_equal(
        c2.uns["spatial"]["C2"]["images"]["hires"], local.uns["spatial"]["C2"]["images"]["hires"]
    )

    # Second call: everything comes from the cache, no request reaches the server.
    n_requests = len(server.requests)
    again = sepal.datasets.her2st(["A1", "C2"], base_url=server.url)
    assert len(server.requests) == n_requests
    assert again.obs["library_id"].cat.categories.tolist() == ["A1", "C2"]


@pytest.mark.realdata
@needs_her2st
def test_download_url_from_environment(serve, datasetdir, monkeypatch):
    server = serve(HER2ST)
    monkeypatch.setenv(URL_ENV, server.url.rstrip("/"))  # a missing trailing slash is added
    adata = sepal.datasets.her2st("A2")
    assert adata.n_obs > 0
    assert sorted(server.requests) == ["/ST-cnts/A2.tsv.gz", "/ST-spotfiles/A2_selection.tsv"]


@pytest.mark.realdata
@needs_her2st
def test_corrupted_download_is_rejected(serve, datasetdir, tmp_path):
    mirror = tmp_path / "mirror"
    for name in ("ST-cnts/A1.tsv.gz", "ST-spotfiles/A1_selection.tsv"):
        (mirror / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HER2ST / name, mirror / name)
    # Change one count in the matrix: still a valid gzip TSV, but not the published file.
    counts = mirror / "ST-cnts" / "A1.tsv.gz"
    lines = gzip.decompress(counts.read_bytes()).split(b"\n")
    lines[1] = lines[1].replace(b"\t0", b"\t7", 1)
    counts.write_bytes(gzip.compress(b"\n".join(lines), compresslevel=1))
    server = serve(mirror)

    with pytest.raises(ValueError, match="(?i)hash"):
        sepal.datasets.her2st("A1", base_url=server.url)
    assert server.requests  # the file was fetched, then refused
    assert not (datasetdir / "her2st" / "ST-cnts" / "A1.tsv.gz").exists()


def _refused_url() -> str:
    """A local URL nobody listens on: any download attempt fails at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/"


@pytest.mark.realdata
@needs_her2st
def test_data_dir_from_environment_is_the_cache_and_needs_no_network(tmp_path, monkeypatch):
    """``SEPAL_DATA_DIR`` names the cache; verified files already there are read with no download."""
    data_dir = tmp_path / "data"
    for name in ("ST-cnts/A1.tsv.gz", "ST-spotfiles/A1_selection.tsv"):
        (data_dir / "her2st" / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HER2ST / name, data_dir / "her2st" / name)
    monkeypatch.setenv("SEPAL_DATA_DIR", str(data_dir))
    assert SepalSettings().datasetdir == data_dir
    monkeypatch.setattr(sepal.settings, "datasetdir", SepalSettings().datasetdir)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")

    adata = sepal.datasets.her2st("A1", base_url=_refused_url())
    assert adata.obs["library_id"].cat.categories.tolist() == ["A1"]
    assert adata.uns["sepal"]["datasets"]["her2st"]["path"] == str(data_dir / "her2st")
    # a cached file that no longer matches its hash is fetched again, and here that fails
    counts = data_dir / "her2st" / "ST-cnts" / "A1.tsv.gz"
    counts.write_bytes(counts.read_bytes()[:-10])
    with pytest.raises(OSError, match="cannot download ST-cnts/A1.tsv.gz"):
        sepal.datasets.her2st("A1", base_url=_refused_url())


def test_no_network_and_a_damaged_cache_give_a_clear_error(datasetdir, monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    damaged = datasetdir / "her2st" / "ST-cnts" / "A1.tsv.gz"
    damaged.parent.mkdir(parents=True)
    damaged.write_bytes(b"half a file")
    with pytest.raises(OSError, match=r"cannot download ST-cnts/A1.tsv.gz .*damaged.*path="):
        sepal.datasets.her2st("A1", base_url=_refused_url())
