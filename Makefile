# The two commands a new machine needs (see README): `make demo` and `make test`.
# Everything installs into a local virtual environment (.venv) from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SCALE_CUSTOMERS ?= 2000
SCALE_TRANSACTIONS ?= 20000

.PHONY: setup demo test lint bench bench-small clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

## Build the demo lakehouse: generate landing files (once), then dbt build.
demo: setup
	@if [ ! -f landing/_generator.json ]; then \
	  $(BIN)/privacy-lakehouse generate --customers $(SCALE_CUSTOMERS) --transactions $(SCALE_TRANSACTIONS); \
	fi
	$(BIN)/dbt build

## Every test: lint (ruff, sqlfluff) and pytest (unit, dbt project, privacy and Delta checks).
test: setup lint
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check python tests bench
	$(BIN)/ruff format --check python tests bench
	$(BIN)/sqlfluff lint models macros analyses snapshots tests --processes 2

bench: setup
	$(BIN)/python bench/run.py

bench-small: setup
	$(BIN)/python bench/run.py --small

clean:
	rm -rf target logs lake landing
