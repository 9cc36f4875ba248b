# Quick start: `make demo` (set-up plus the main job) and `make test` (set-up plus all tests).
# Set-up is idempotent: the virtualenv is reinstalled only when pyproject.toml changes, Kafka's jars are
# resolved by Maven once, and `feedrank infra up` starts Kafka and Redis only if they are not running.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: setup install infra-up infra-down demo test test-unit lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

infra-up: install
	$(BIN)/feedrank infra up

infra-down:
	$(BIN)/feedrank infra down

setup: infra-up

demo: setup
	$(BIN)/feedrank demo

# Unbuffered, with faulthandler: if the interpreter ever crashes, the log shows where.
test: setup
	PYTHONFAULTHANDLER=1 PYTHONUNBUFFERED=1 $(BIN)/python -m pytest -q -ra

test-unit: install
	$(BIN)/python -m pytest -q -m "not integration"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean: infra-down
	rm -rf .feedrank
