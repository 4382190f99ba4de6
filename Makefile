# The two commands of the README. Both create .venv on a fresh machine and install what they need.
# CPU-only machines: every pip call goes through constraints.txt (torch==2.13.0+cpu, torchvision==0.28.0),
# so pip never falls back to the multi-GB CUDA wheels.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --disable-pip-version-check -c constraints.txt

.PHONY: demo test lint clean

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

## make test: install the test and doc tools, lint, run the test suite, and build the docs (warnings are errors)
test: $(VENV)/.test
	$(BIN)/ruff check src tests benchmarks scripts
	$(BIN)/python -m pytest
	$(BIN)/sphinx-build -W -b html docs docs/_build/html

clean:
	rm -rf $(VENV) demo_out .pytest_cache
