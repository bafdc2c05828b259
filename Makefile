# torchbloop developer tasks. Every target sets up what it needs itself.
#   make demo    - the main job: set-up, data, and a small comparison of Bloop with its baselines
#   make test    - set-up and the test suite (fast tests; a few minutes on 2 cores)
#   make docs    - set-up and the documentation site, every example executed (docs/_build/html)
# TORCH picks the torch build the venv gets; the default is the CPU wheel these machines carry.
# Elsewhere, e.g.: make test TORCH="torch"  (or any pip requirement for torch you prefer).

PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: venv docs test test-slow test-distributed lint typecheck check data demo bench bench-quick clean

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -e ".[test,dev,experiments,integrations]"
	touch $(STAMP)

venv: $(STAMP)

DOCS_STAMP := $(VENV)/.docs-installed
$(DOCS_STAMP): $(STAMP)
	$(PIP) install -q -e ".[docs]"
	touch $(DOCS_STAMP)

# Strict: any warning (broken reference, failing example or doctest) fails the build.
SPHINX := $(PY) -m sphinx -W --keep-going -n -q -d docs/_build/doctrees
docs: $(DOCS_STAMP)
	$(SPHINX) -b html docs/site docs/_build/html
	$(SPHINX) -b doctest docs/site docs/_build/doctest
	@echo "docs: open docs/_build/html/index.html"

test: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-distributed: $(STAMP)
	$(PY) -m pytest -q -m "distributed and not slow" $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check src tests benchmarks examples docs/site
	$(PY) -m ruff format --check src tests benchmarks examples docs/site

typecheck: $(STAMP)
	$(PY) -m mypy

check: lint typecheck test

data: $(STAMP)
	$(PY) -m torchbloop.experiments.data fetch

demo: $(STAMP) data
	$(VENV)/bin/torchbloop demo

bench: $(STAMP)
	$(PY) benchmarks/run.py --write docs/benchmarks.md

bench-quick: $(STAMP)
	$(PY) benchmarks/run.py --quick

clean:
	rm -rf $(VENV) build dist docs/_build docs/site/generated docs/site/sg_execution_times.rst src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
