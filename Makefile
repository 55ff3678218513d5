# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test test-matrix lint format migrations wheel bench bench-quick bench-floor soak clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# `make run` needs only the app and the demo site's own packages (the `demo` extra).
DEMO_STAMP := $(VENV)/.demo-installed
$(DEMO_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	@touch $(DEMO_STAMP)

run: $(DEMO_STAMP)
	@bash scripts/run.sh

# Lint, then the suite on SQLite and PostgreSQL under the oldest and the newest supported
# (Django, Python) pair (noxfile.py); `make test-matrix` runs every pair.
test: install
	@bash scripts/test.sh

test-matrix: install
	@bash scripts/test.sh --matrix

# Style (ruff), types (mypy with django-stubs) and the layering (import-linter's contracts in
# pyproject.toml; docs/ARCHITECTURE.md explains them).
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# A wheel to install into another site (README: "installing into an existing site").
wheel: install
	rm -f dist/django_capi_destinations-*.whl
	$(BIN)/python -m build --wheel --no-isolation --outdir dist .
	@ls dist/django_capi_destinations-*.whl

# Pre-release: one initial migration, regenerated from the models. Only 0001 is deleted:
# 0002_event_fillfactor is kept by hand (a PostgreSQL storage parameter of the event table,
# which models cannot express; docs/BENCHMARKS.md, issue 21). It is moved aside while 0001 is
# regenerated, since makemigrations would otherwise number the new file after it.
migrations: install
	rm -f capi_destinations/migrations/0001_*.py
	mv capi_destinations/migrations/0002_event_fillfactor.py capi_destinations/0002_event_fillfactor.py.kept
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python -m django makemigrations capi_destinations --name initial \
		|| { mv capi_destinations/0002_event_fillfactor.py.kept capi_destinations/migrations/0002_event_fillfactor.py; exit 1; }
	mv capi_destinations/0002_event_fillfactor.py.kept capi_destinations/migrations/0002_event_fillfactor.py
	$(BIN)/ruff format capi_destinations/migrations >/dev/null

# Bounded soak (loopback only; PostgreSQL database `soak`, Redis db 8): `make soak SOAK_SECONDS=120`.
SOAK_SECONDS ?= 120
soak: install
	$(BIN)/python -m pip install --quiet -e '.[dev,soak]'
	$(BIN)/python -m soak --seconds $(SOAK_SECONDS)

# Benchmarks (docs/BENCHMARKS.md): `make bench` runs every row at full size and writes the table;
# `make bench-quick` (or `make bench ARGS=--quick`) is the same in under two minutes.
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	@touch $(BENCH_STAMP)

bench: install $(BENCH_STAMP)
	@bash bench/run.sh $(ARGS)

bench-quick: install $(BENCH_STAMP)
	@bash bench/run.sh --quick $(ARGS)

# PostgreSQL's per-row floor in plain SQL (own database, ~20 min): `make bench-floor ARGS=--help`.
bench-floor: install $(BENCH_STAMP)
	$(BIN)/python -m bench.floor $(ARGS)

clean:
	rm -rf $(VENV) .nox .pytest_cache .ruff_cache .mypy_cache .import_linter_cache dist build *.egg-info
