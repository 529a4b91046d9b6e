# The README's two commands (`make run`, `make test`) and a few helpers.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Every install goes through constraints.txt: exact pins, torch==2.13.0 among them.
PIP := $(BIN)/pip install --quiet --constraint constraints.txt
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: run test install install-test dagster app bench lint clean-lake

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
	# the browser test drives Debian's chromium (Playwright's own download is unreachable here)
	command -v chromium >/dev/null || { command -v apt-get >/dev/null && apt-get install -y --no-install-recommends chromium; } || true
	touch $@

dagster: $(VENV)/.installed
	$(BIN)/dagster dev -m dagster_project.definitions

# The explorer over ./lake (or CANDLELAKE_LAKE), on 127.0.0.1 only; it reads, never writes.
CATALOG := $(or $(CANDLELAKE_LAKE),lake)/candlelake.duckdb
app: $(VENV)/.installed
	@test -f $(CATALOG) || { echo "No catalog at $(CATALOG): build the lake first with 'make run' (or '$(BIN)/candlelake catalog' over an existing lake)." >&2; exit 2; }
	$(BIN)/streamlit run app/main.py --server.address 127.0.0.1 --server.headless true --browser.gatherUsageStats false

bench: $(VENV)/.installed-test
	$(BIN)/python bench/run_all.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check dagster_project ml app tests bench

clean-lake:
	rm -rf lake/raw lake/curated lake/candlelake.duckdb lake/.cache .dagster_home
