# Two commands do all set-up on a fresh Debian 12 machine (as root): `make demo` and `make test`.
VENV := .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint bench deps host-packages clean

deps: host-packages $(VENV)/.installed

host-packages:
	@scripts/install-host-packages

# Reinstalled only when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: deps
	$(BIN)/python -m fleetlab.demo

test: deps
	$(BIN)/pytest -ra

lint: deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: deps
	$(BIN)/python bench/lab_boot.py

clean:
	-$(BIN)/fleetlab down --all
	rm -rf build $(VENV)
