# The two commands of the README. Both create .venv on a fresh machine and install what they need.
# CPU-only machines: every pip call goes through constraints.txt (torch==2.13.0+cpu, torchvision==0.28.0),
# so pip never falls back to the multi-GB CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt

# Everything ruff checks and formats; mypy checks src/ (the paths are in pyproject.toml [tool.mypy]).
CODE := src tests benchmarks scripts
# pytest-xdist: two processes (CI has 2 cores), each test file whole in one of them so that its module fixtures are
# built once. `make test XDIST=` runs the suite in one process.
XDIST ?= -n 2 --dist loadfile

.PHONY: demo test test-fast lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Stamp files: reinstall only when the dependency declarations change.
$(VENV)/.core: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) "torch==2.13.0+cpu" -e .
	touch $@

$(VENV)/.test: $(VENV)/.core
	$(PIP) -e ".[test,doc,dev]"
	touch $@

## make demo: the main job, end to end on the embedded synthetic dataset (report in demo_out/)
demo: $(VENV)/.core
	$(BIN)/sepal demo --out demo_out

## make lint: ruff's lint rules and format check on the code, mypy on src/ (the checks of .pre-commit-config.yaml)
lint: $(VENV)/.test
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy

## make test: lint, the whole test suite (slow tests included), and the docs (warnings are errors); what CI runs
test: lint
	$(BIN)/python -m pytest $(XDIST)
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

## make test-fast: the test suite without the tests marked slow (network training, notebooks, subprocesses)
test-fast: $(VENV)/.test
	$(BIN)/python -m pytest -m "not slow" $(XDIST)

clean:
	rm -rf $(VENV) demo_out .pytest_cache
