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
# whole on one worker (its module fixtures are set up once); TEST_WORKERS=0 runs everything in this process.
TEST_WORKERS ?= 2

test: install-test
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile

test-fast: install-test
	$(BIN)/python -m pytest -m "not slow"

# Everything the project creates in the checkout; local services started by infra/local/ are stopped first.
clean:
	@if [ -d runs/local-services ]; then infra/local/stop.sh; fi
	rm -rf $(VENV) runs .pytest_cache mlruns mlflow.db *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
