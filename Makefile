# The two commands a newcomer needs: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install run test lint format migrations bench bench-quick clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall whenever pyproject.toml changes.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: install
	@bash scripts/run.sh

test: install
	@bash scripts/test.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Pre-release: one initial migration, regenerated from the models.
migrations: install
	rm -f capi_destinations/migrations/0*.py
	DJANGO_SETTINGS_MODULE=tests.settings $(BIN)/python -m django makemigrations capi_destinations --name initial
	$(BIN)/ruff format capi_destinations/migrations >/dev/null

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache dist build *.egg-info
