# teamrouter: two commands matter. `make serve` runs it, `make test` proves it.
# bash: `make test` needs pipefail
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev
PG_URL ?= postgresql://postgres@127.0.0.1:5432/test
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: serve test lint typecheck test-sqlite test-postgres bench soak clean migration

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(DEV_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@ $(STAMP)

## serve: run the gateway in dev mode on an embedded SQLite database with the demo provider
serve: $(STAMP)
	TEAMROUTER_ENV=dev $(BIN)/teamrouter serve --host $(HOST) --port $(PORT)

## test: lint, type-check, then the whole suite on SQLite and (when it answers) on PostgreSQL
# The two backends' suites run side by side: each keeps about one core busy and spends much of its
# time waiting on the server processes it starts, so together they take little more than the longer.
# Each line says whose it is; the target fails when either suite does.
test: $(DEV_STAMP) lint typecheck
	@set -o pipefail; \
	( $(MAKE) --no-print-directory test-sqlite 2>&1 | sed -u 's/^/[sqlite] /' ) & sqlite=$$!; \
	( $(MAKE) --no-print-directory test-postgres 2>&1 | sed -u 's/^/[postgres] /' ) & postgres=$$!; \
	wait $$sqlite; sqlite_status=$$?; wait $$postgres; postgres_status=$$?; \
	exit $$(( sqlite_status || postgres_status ))

lint: $(DEV_STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

test-sqlite: $(DEV_STAMP)
	TEAMROUTER_TEST_DB=sqlite $(BIN)/python -m pytest -q --durations=10

# The database-touching tests again on PostgreSQL; skipped with a message when no server answers.
test-postgres: $(DEV_STAMP)
	@if [ -n "$$TEAMROUTER_TEST_POSTGRES_URL" ] || $(BIN)/python -m teamrouter.storage.probe "$(PG_URL)"; then \
		TEAMROUTER_TEST_DB=postgres TEAMROUTER_TEST_POSTGRES_URL=$${TEAMROUTER_TEST_POSTGRES_URL:-$(PG_URL)} \
		$(BIN)/python -m pytest -q -m db --durations=10; \
	else echo "PostgreSQL not reachable at $(PG_URL): skipping the PostgreSQL run"; fi

## migration: regenerate the initial migration from the models (pre-release only)
migration: $(DEV_STAMP)
	$(BIN)/python -m teamrouter.storage.autogen

bench: $(DEV_STAMP)
	$(BIN)/python -m bench.run

## soak: TESTPLAN D36, 4 workers on SQLite for SOAK_MINUTES (default 30) of mixed load, then the checks
SOAK_MINUTES ?= 30
soak: $(DEV_STAMP)
	$(BIN)/python -m bench.soak --minutes $(SOAK_MINUTES) --workers 4 --backend sqlite --clients 24

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache
