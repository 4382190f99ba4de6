"""Hostile settings: wrong types and ranges are refused when set, and the old value is kept."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from sepal_tl._settings import n_workers, settings


@pytest.fixture(autouse=True)
def _restore():
    saved = (settings.n_jobs, settings.seed, settings.device, settings.verbosity, settings.datasetdir)
    yield
    settings.n_jobs, settings.seed, settings.device, settings.verbosity, settings.datasetdir = saved


BAD = [
    ("n_jobs", "4", TypeError),
    ("n_jobs", 4.0, TypeError),
    ("n_jobs", None, TypeError),
    ("n_jobs", True, TypeError),
    ("n_jobs", 0, ValueError),
    ("n_jobs", -2, ValueError),
    ("seed", "0", TypeError),
    ("seed", 1.5, TypeError),
    ("seed", -1, ValueError),
    ("seed", False, TypeError),
    ("device", "gpu", ValueError),
    ("device", "cuda:x", ValueError),
    ("device", "CPU", ValueError),
    ("device", "", ValueError),
    ("device", 0, TypeError),
    ("device", None, TypeError),
    ("verbosity", "2", ValueError),
    ("verbosity", 5, ValueError),
    ("verbosity", -1, ValueError),
    ("verbosity", True, ValueError),
    ("datasetdir", 5, TypeError),
    ("datasetdir", "", TypeError),
    ("datasetdir", None, TypeError),
]


@pytest.mark.parametrize(("name", "value", "error"), BAD)
def test_bad_settings_are_refused_and_the_old_value_kept(name, value, error):
    before = getattr(settings, name)
    with pytest.raises(error, match=name):
        setattr(settings, name, value)
    assert getattr(settings, name) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [("n_jobs", 1), ("n_jobs", -1), ("n_jobs", np.int64(3)), ("seed", 0), ("seed", np.int32(7))]
    + [("device", d) for d in ("auto", "cpu", "cuda", "cuda:1", "mps")]
    + [("verbosity", v) for v in (0, 1, 2, 3)],
)
def test_good_settings_are_kept(name, value):
    setattr(settings, name, value)
    assert getattr(settings, name) == value


def test_datasetdir_expands_user(tmp_path):
    settings.datasetdir = "~/sepal_cache"
    assert "~" not in str(settings.datasetdir)


@pytest.mark.parametrize(("jobs", "error"), [("4", TypeError), (0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_n_workers_checks_an_explicit_n_jobs(jobs, error):
    with pytest.raises(error, match="n_jobs"):
        n_workers(jobs, 4)


def test_n_workers_bounds():
    assert n_workers(8, 3) == 3 and n_workers(1, 0) == 1


def test_bad_verbosity_environment_variable_is_named():
    code = "import sepal_tl"
    result = subprocess.run(
        [sys.executable, "-c", code], env={"SEPAL_VERBOSITY": "loud", "PATH": ""}, capture_output=True, text=True
    )
    assert result.returncode != 0 and "SEPAL_VERBOSITY='loud'" in result.stderr
