"""scverse conventions checked on the whole public API (cf. scanpy's package-structure test)."""

import inspect
import subprocess
import sys

import pytest

import sepal_tl as sepal

SUBPACKAGES = [sepal.io, sepal.datasets, sepal.pp, sepal.tl, sepal.pl]
FUNCTIONS = [
    (f"{module.__name__}.{name}", getattr(module, name))
    for module in SUBPACKAGES
    for name in module.__all__
    if inspect.isfunction(getattr(module, name))
]


def test_every_subpackage_has_public_api_listed():
    for module in SUBPACKAGES:
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.__all__ lists missing {name}"


@pytest.mark.parametrize(("name", "func"), FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_signature_conventions(name, func):
    params = list(inspect.signature(func).parameters.values())
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    assert len(positional) <= 3, f"{name}: options after the data must be keyword-only"
    if params and params[0].name == "adata":
        assert "AnnData" in str(params[0].annotation), f"{name}: adata must be annotated AnnData"
    if "copy" in inspect.signature(func).parameters:
        copy = inspect.signature(func).parameters["copy"]
        assert copy.kind is copy.KEYWORD_ONLY and copy.default is False, name
        returns = str(inspect.signature(func).return_annotation)
        # copy=False returns None, or for pp.run the documented summary table
        assert "None" in returns or (name == "sepal_tl.pp.run" and "DataFrame" in returns), name
    assert func.__doc__ and "Parameters" in func.__doc__ or not params, f"{name}: numpydoc Parameters section"


def test_import_is_light():
    # `import sepal_tl` must stay fast (< 2 s): no deep-learning stack, squidpy or scanpy until a function needs them
    code = "import sys, sepal_tl; print(sorted(m for m in ('torch', 'timm', 'torch_geometric', 'squidpy', 'scanpy', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
