# On a fresh machine `make train` and `make test` are all you need.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CONSTRAINTS ?= constraints-cpu.txt
ARGS    ?=

.PHONY: help setup train test test-fast bench lint docs docs-serve clean

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

test: setup  ## the whole CPU suite (what CI runs)
	WANDB_MODE=offline $(BIN)/python -m pytest -q $(ARGS)

test-fast: setup  ## the suite without the slow tests
	WANDB_MODE=offline $(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: setup  ## every benchmark, ratios against a baseline measured in the same run
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: setup  ## ruff
	$(BIN)/ruff check tempo tests benchmarks

docs: setup  ## build the documentation site into site/ (--strict)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: setup  ## serve the documentation at http://127.0.0.1:8000
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

clean:  ## remove .venv, caches, outputs and the built site
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs/*/ multirun wandb lightning_logs site
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
