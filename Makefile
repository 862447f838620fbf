# Two commands on a fresh machine:  `make quickstart`  and  `make test`  (see README.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install install-test quickstart test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-run pip only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

quickstart: install
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/dpt pipeline run --config configs/pipeline_quickstart.yaml

# Most of the suite waits on servers and subprocesses: two test files at a time fill 2 cores. A test file runs
# whole on one worker (its module fixtures are set up once), longest files first (tests/conftest.py
# LONGEST_FIRST; xdist would otherwise reorder them by their number of tests); TEST_WORKERS=0 runs everything
# in this process. The README's journey (tests/test_readme.py, about 14 minutes) then runs alone: it trains on
# both cores as a newcomer's `make quickstart` does, and beside other tests it took more than twice as long.
TEST_WORKERS ?= 2

test: install-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --ignore=tests/test_readme.py; \
	rest=$$?; $(BIN)/python -m pytest tests/test_readme.py; readme=$$?; \
	test $$rest -eq 0 && test $$readme -eq 0

test-fast: install-test
	$(BIN)/python -m pytest -m "not slow"

# Everything the project creates in the checkout; local services started by infra/local/ are stopped first.
clean:
	@if [ -d runs/local-services ]; then infra/local/stop.sh; fi
	rm -rf $(VENV) runs .pytest_cache mlruns mlflow.db *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
