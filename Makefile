# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint bench bench-smoke bench-scenarios clean

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
## (the browser tests need Debian's chromium: bin/ensure-chromium installs it as root),
## then the benchmark harness at smoke sizes (it fails only if the harness breaks).
test: $(VENV)/.stamp-dev lint
	bin/ensure-chromium
	DEBUG=true $(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/pytest
	$(MAKE) --no-print-directory bench-smoke

lint: $(VENV)/.stamp-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

## The gateway against python-socketio, a bare websockets server and uvicorn with
## an empty app, same load, same run (W1-W4, both backends, about 40 minutes); the table is printed,
## results go to docs/benchmarks.md, docs/bench/peers.json and docs/bench/peers.png.
bench: $(VENV)/.stamp-dev
	$(BIN)/python -m bench.compare

## The same harness at smoke sizes (under a minute): prints the figures, judges nothing,
## writes only under bench/results/; exits non-zero only if the harness itself breaks.
bench-smoke: $(VENV)/.stamp-dev
	$(BIN)/python -m bench.compare --smoke

## The gateway's detailed scenarios (bench/run.py); results in docs/benchmarks.md.
bench-scenarios: $(VENV)/.stamp-dev
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) staticfiles db.sqlite3
