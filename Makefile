# Set-up and checks. `make run` and `make test` work on a fresh machine with Python >= 3.10 and pip.
PYTHON ?= python3
VENV   ?= .venv
TORCH  ?= torch==2.13.0
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.cnnprof-installed

.PHONY: run test test-fast lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install only when the dependency list changes (the package itself is installed editable).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q "$(TORCH)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/cnnprof compare resnet50 resnext50

# Everything CI runs: the linter limits, then the whole suite on two workers (pytest-xdist; the optional
# real-model, full-size and PostgreSQL groups skip themselves), the 25 slowest tests listed.
test: lint
	$(BIN)/python -m pytest -n 2 --durations=25

# The everyday lane (under a minute on 2 cores): no test marked slow, two workers (pytest-xdist).
test-fast: lint
	$(BIN)/python -m pytest -m "not slow" -x -n 2

lint: $(STAMP)
	$(BIN)/ruff check cnnprof tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
