# mlx-platform: `make serve` to run the service, `make test` to run the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP_SERVE := $(VENV)/.installed-serve
STAMP_TEST := $(VENV)/.installed-test
STAMP_FUZZ := $(VENV)/.installed-fuzz

.PHONY: serve test test-postgres lint bench soak clean install fuzz ui

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_SERVE): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[server]"
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[server,test,lint]"
	touch $@ $(STAMP_SERVE)

install: $(STAMP_SERVE)

serve: $(STAMP_SERVE)
	$(PY) -m compileall -q src
	$(VENV)/bin/mlx serve

# Whole files to each xdist worker, the longest first (tests/conftest.py: LONGEST_FILES), so
# that a module's server starts once; TEST_WORKERS measured (docs/decisions.md, "Test tiers").
TEST_WORKERS ?= 4
PYTEST_XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# The project's modules compiled once (an editable install is not compiled, and where
# PYTHONDONTWRITEBYTECODE is set every `mlx serve`, `mlx` and worker process the tests start
# would compile them again: ~0.1 s of CPU each).
COMPILE := $(PY) -m compileall -q src tests/fixtures

# Every tier: unit, in-process (the app over ASGI), process (`mlx serve`, the CLI, replicas).
test: $(STAMP_TEST)
	$(COMPILE)
	$(PY) -m pytest $(PYTEST_XDIST) -q

# What depends on the database, on PostgreSQL (a server on 127.0.0.1:5432, user postgres,
# trust auth): the in-process tier, each server on a database of its own, dropped at the end.
# The process tier (mark `process`: replicas, the CLI, workers counted as the service's
# children...) is not about the database: `make test` alone runs it.
test-postgres: $(STAMP_TEST)
	$(COMPILE)
	MLX_TEST_DATABASE=postgres $(PY) -m pytest $(PYTEST_XDIST) -q -m "not process" \
		tests/integration tests/e2e

$(STAMP_FUZZ): pyproject.toml | $(PY)
	$(PIP) install --quiet -e ".[server,fuzz]"
	touch $@ $(STAMP_SERVE)

# schemathesis over the whole OpenAPI of a real service (fresh MLX_HOME, free port, admin
# token); fails on any server error. More cases: make fuzz FUZZ_ARGS="--max-examples 500"
FUZZ_ARGS ?=
fuzz: $(STAMP_FUZZ)
	$(PY) scripts/fuzz.py $(FUZZ_ARGS)

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

bench: $(STAMP_TEST)
	$(COMPILE)
	$(PY) bench/run.py

# Five minutes of mixed reads, writes and invocations against one fresh `mlx serve` (issue 11):
# throughput, p50/p99, errors (target 0), service memory at start and end (growth < 10%).
# Options pass through: make soak ARGS="--duration 60 --clients 4 --postgres"
soak: $(STAMP_TEST)
	$(COMPILE)
	$(PY) bench/soak.py $(ARGS)

# The web dashboard (/ui): frontend/ built with its locked toolchain (npm ci: package-lock.json)
# into src/mlx_platform/server/ui_dist/, which is committed and shipped in the package, so that
# `make serve` and `pip install` need no Node. Needs Node.js 20+ and npm.
ui:
	cd frontend && npm ci --no-audit --no-fund && npm run build

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
