# The README's two commands (`make run`, `make test`) and a few helpers.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Every install goes through constraints.txt: exact pins, torch==2.13.0 among them.
PIP := $(BIN)/pip install --quiet --constraint constraints.txt
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test install install-test dagster bench lint clean-lake

run: $(VENV)/.installed
	$(BIN)/candlelake run

test: $(VENV)/.installed-test
	$(BIN)/pytest -n 2 --dist loadfile

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(PIP) --editable .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PIP) --editable ".[test]"
	touch $@

dagster: $(VENV)/.installed
	$(BIN)/dagster dev -m dagster_project.definitions

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run_all.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check dagster_project ml app tests bench

clean-lake:
	rm -rf lake/raw lake/curated lake/candlelake.duckdb lake/.cache .dagster_home
