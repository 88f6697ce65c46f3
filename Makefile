# On a fresh machine `make train` and `make test` are all you need.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CONSTRAINTS ?= constraints-cpu.txt
ARGS    ?=
# pytest-xdist workers for `make test` / `test-fast` / `coverage` (auto = one per core; 0 = in-process)
JOBS    ?= auto
PYTEST  := WANDB_MODE=offline $(BIN)/python -m pytest

.PHONY: help setup train test test-fast test-gpu coverage bench gpu-check lint docs docs-serve clean

help:  ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14

setup: $(STAMP)  ## create .venv and install tempo with the dev and docs extras

# Reinstall only when the dependency list or pins change.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev,docs]'
	touch $(STAMP)

train: setup  ## train the default model (ARGS="overrides")
	$(BIN)/python -m tempo.train $(ARGS)

# Test tiers (docs/development.md): markers `slow` and `gpu` (pyproject.toml, tests/conftest.py).
test: setup  ## everything that runs on CPU (what CI runs); gpu tests skip with a reason
	$(PYTEST) -q -rs -n $(JOBS) --dist loadfile --timeout 900 $(ARGS)

test-fast: setup  ## unit tests only (not slow, not gpu): before every commit
	$(PYTEST) -q -m "not slow and not gpu" -n $(JOBS) --dist loadfile --timeout 300 $(ARGS)

test-gpu: setup  ## the tests marked gpu, on a CUDA machine (skipped with a reason without one)
	$(PYTEST) -q -rs -m gpu --timeout 900 $(ARGS)

coverage: setup  ## the CPU suite under pytest-cov: line coverage per package, modules under 80 %
	$(PYTEST) -q -n $(JOBS) --dist loadfile --timeout 900 --cov=tempo --cov-report= $(ARGS)
	$(BIN)/python tests/coverage_by_package.py

bench: setup  ## every benchmark, ratios against a baseline measured in the same run
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

gpu-check: setup  ## benchmarks/gpu_check.py: model and loader clips/s on one GPU (< 8 min)
	$(BIN)/python benchmarks/gpu_check.py $(ARGS)

lint: setup  ## ruff
	$(BIN)/ruff check tempo tests benchmarks

docs: setup  ## build the documentation site into site/ (--strict)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: setup  ## serve the documentation at http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:  ## remove .venv, caches, outputs and the built site
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage .coverage.* outputs/*/ multirun wandb lightning_logs site
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
