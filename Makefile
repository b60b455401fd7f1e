# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.stamp-run: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	touch $@

$(VENV)/.stamp-dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@ $(VENV)/.stamp-run

## Start one gateway on the embedded default (SQLite, in-memory layer) at HOST:PORT.
run: $(VENV)/.stamp-run
	DEBUG=$${DEBUG:-true} PYTHON=$(BIN)/python bin/serve

## Lint, the import rule, migrations check, then the whole test suite
## (the browser tests need Debian's chromium: bin/ensure-chromium installs it as root).
test: $(VENV)/.stamp-dev lint
	bin/ensure-chromium
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## Load test the gateway; results in docs/benchmarks.md.
bench: $(VENV)/.stamp-dev
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) staticfiles db.sqlite3
