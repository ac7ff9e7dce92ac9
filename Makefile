# The README's two commands:
#   make run    set up, then run the whole job on the embedded default (synthetic data, SQLite)
#   make test   set up, then the whole quality gate: oracle virtualenvs, lint, every test
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt

.PHONY: setup setup-test run test lint oracles bench clean

setup: $(VENV)/.installed-run
setup-test: $(VENV)/.installed-test

$(VENV)/.installed-run: pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) -e '.[local,parquet,report]'
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-run
	$(PIP) -e '.[local,parquet,report,test,bench,tune]'
	touch $@

run: setup
	$(BIN)/topx run

oracles: setup-test
	$(BIN)/python tests/oracles.py

lint: setup-test
	$(BIN)/ruff check batch tests bench

test: oracles lint
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/train.py
	$(BIN)/python bench/topx.py

clean:
	rm -rf $(VENV) .cache topx-work .pytest_cache .ruff_cache
