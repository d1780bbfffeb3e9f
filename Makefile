# Two commands for a newcomer: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/lorein simulate --preset sim1-small --R 27 --seed 0 -o demo/sim1-small_R27.h5
	$(BIN)/lorein info demo/sim1-small_R27.h5
	$(BIN)/lorein recon demo/sim1-small_R27.h5 -o demo/lorein
	$(BIN)/lorein eval demo/lorein --truth demo/sim1-small_R27.h5 --label LoREIN

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

test: $(STAMP) lint
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) demo
