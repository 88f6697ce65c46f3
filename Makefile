# On a fresh machine `make train` and `make test` are all you need.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
CONSTRAINTS ?= constraints-cpu.txt
ARGS    ?=

.PHONY: setup train test test-fast bench lint clean

setup: $(STAMP)

# Reinstall only when the dependency list or pins change.
$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

train: setup
	$(BIN)/python -m tempo.train $(ARGS)

test: setup
	WANDB_MODE=offline $(BIN)/python -m pytest -q $(ARGS)

test-fast: setup
	WANDB_MODE=offline $(BIN)/python -m pytest -q -m "not slow" $(ARGS)

bench: setup
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

lint: setup
	$(BIN)/ruff check tempo tests benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache outputs/*/ multirun wandb lightning_logs
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
