import logging
import sys

import pytest

import sepal_tl as sepal
from sepal_tl._compat import ensure_torchvision, import_timm
from sepal_tl._settings import n_workers


def test_settings_roundtrip(tmp_path, monkeypatch):
    # monkeypatch puts both settings (and through verbosity the logger level) back, even when an assertion fails
    monkeypatch.setattr(sepal.settings, "datasetdir", tmp_path / "data")
    assert sepal.settings.datasetdir == tmp_path / "data"
    with pytest.raises(ValueError, match="verbosity"):
        sepal.settings.verbosity = 7
    monkeypatch.setattr(sepal.settings, "verbosity", 3)
    assert logging.getLogger("sepal_tl").level == logging.DEBUG
    assert "datasetdir" in repr(sepal.settings)


def test_n_workers(monkeypatch):
    assert n_workers(4, 2) == 2
    assert n_workers(1, 5) == 1
    monkeypatch.setattr("os.cpu_count", lambda: 6)
    assert n_workers(-1, 1000) == 6  # -1: every core
    assert n_workers(-1, 4) == 4  # never more workers than tasks
    monkeypatch.setattr("os.cpu_count", lambda: None)
    assert n_workers(-1, 1000) == 1  # the core count is unknown: one worker
    monkeypatch.setattr(sepal.settings, "n_jobs", 2)
    assert n_workers(None, 10) == 2
    with pytest.raises(ValueError, match="n_jobs"):
        n_workers(0, 3)


def test_torchvision_guard_makes_timm_usable():
    ensure_torchvision()
    timm = import_timm()
    model = timm.create_model("resnet18", pretrained=False, num_classes=0)
    assert model.num_features == 512
    # idempotent: a second call finds torchvision importable and patches nothing
    assert ensure_torchvision() is False


def test_torchvision_guard_reraises_unrelated_errors(monkeypatch):
    # an import failure that is not about torchvision's compiled ops must surface unchanged
    import builtins

    real_import = builtins.__import__

    def broken(name, *args, **kwargs):
        if name == "torchvision":
            raise RuntimeError("something else entirely")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(RuntimeError, match="something else"):
        ensure_torchvision()
