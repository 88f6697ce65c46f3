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

.PHONY: help setup train test test-fast test-gpu coverage bench gpu-check lint clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F ':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv and install tempo with the dev tools

# Reinstall only when the dependency list or pins change.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

train: setup ## python -m tempo.train $(ARGS)
	$(BIN)/python -m tempo.train $(ARGS)

# Test tiers (docs/development.md): markers `slow` and `gpu` (pyproject.toml, tests/conftest.py).
test: setup ## everything that runs on CPU (what CI runs); gpu tests skip with a reason
	$(PYTEST) -q -rs -n $(JOBS) --dist loadfile --timeout 900 $(ARGS)

test-fast: setup ## unit tests only (not slow, not gpu): before every commit
	$(PYTEST) -q -m "not slow and not gpu" -n $(JOBS) --dist loadfile --timeout 300 $(ARGS)

test-gpu: setup ## the tests marked gpu, on a CUDA machine (skipped with a reason without one)
	$(PYTEST) -q -rs -m gpu --timeout 900 $(ARGS)

coverage: setup ## make test under pytest-cov: line coverage per package, then per module
	$(PYTEST) -q -n $(JOBS) --dist loadfile --timeout 900 --cov=tempo --cov-report= $(ARGS)
	$(BIN)/python tests/coverage_by_package.py

bench: setup ## the CPU benchmarks in benchmarks/bench_*.py
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

gpu-check: setup ## benchmarks/gpu_check.py: model and loader clips/s on one GPU (< 8 min)
	$(BIN)/python benchmarks/gpu_check.py $(ARGS)

lint: setup ## ruff check
	$(BIN)/ruff check tempo tests benchmarks

clean: ## remove the venv, caches and run outputs
	rm -rf $(VENV) .pytest_cache .ruff_cache .coverage .coverage.* outputs/*/ multirun wandb lightning_logs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
