# Two commands matter: `make study` (the whole matched-pair study) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: study test lint bench ioi-demo clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

study: $(STAMP)
	$(BIN)/interpgpt study

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

test: lint
	$(BIN)/python -m pytest -q tests

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

ioi-demo: $(STAMP)
	$(BIN)/interpgpt ioi-demo --out runs/ioi-demo

clean:
	rm -rf runs .pytest_cache
