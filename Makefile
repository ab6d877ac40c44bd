# connector: run `make help` for the list of targets.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml requirements/constraints.txt | cksum | cut -d' ' -f1)

.DEFAULT_GOAL := help
.PHONY: help install services test test-fast lint fmt typecheck check demo web worker beat flower bench chaos lock clean

help: ## Show the available targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml requirements/constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c requirements/constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP) ## Create .venv and install connector with its dev tools

services: ## Check (and start if needed) the local PostgreSQL and Redis
	@scripts/ensure-services.sh

test: install services ## Run every test (unit and integration, on real PostgreSQL and Redis)
	$(BIN)/pytest $(PYTEST_ARGS)

test-fast: install ## Run the unit tests only
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: install ## ruff check, ruff format --check and the layering contracts (import-linter)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

fmt: install ## Format the code
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: install ## mypy (strict on connector/, web/, workers/)
	$(BIN)/mypy

check: lint typecheck test ## Everything CI runs

demo: install services ## Run the whole service on the simulators and print what happened
	$(BIN)/python -m connector.demo

web: install ## The webhook receiver (development server)
	$(BIN)/flask --app 'web:create_app()' run --port $${PORT:-5000}

worker: install ## A Celery worker on every queue
	$(BIN)/celery -A workers.celery_app worker -l info -Q webhooks,sync,pulls,maintenance

beat: install ## Celery Beat
	$(BIN)/celery -A workers.celery_app beat -l info --scheduler workers.beat:LockedScheduler -s var/beat-state

bench: install services ## Run the benchmarks and print their tables
	$(BIN)/python bench/run_all.py

chaos: install services ## Run the fault-injection scenarios
	$(BIN)/python bench/chaos.py

lock: ## Re-resolve dependencies within pyproject's ranges and rewrite the lock
	$(PYTHON) -m venv /tmp/connector-lock && /tmp/connector-lock/bin/pip install -q -e '.[dev]'
	/tmp/connector-lock/bin/pip freeze --exclude-editable | grep -v '^connector' > requirements/constraints.txt
	rm -rf /tmp/connector-lock

clean: ## Remove caches and local state
	rm -rf .pytest_cache .mypy_cache .ruff_cache var connector.db
