# nvmlab developer commands. Each target creates .venv and installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.nvmlab-installed

.PHONY: demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	touch $(STAMP)

## Run the main job on the emulated bench with the SQLite default.
demo: $(STAMP)
	$(BIN)/nvmlab demo

## Run the test suite (needs the PostgreSQL server of the lab machine, see README).
test: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	$(BIN)/pytest

## ruff and mypy over the whole tree.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pip install --quiet -e '.[test]' --config-settings editable_mode=strict
	cd /tmp && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p nvmlab

## Benchmarks (print figures; not part of the test suite).
bench: $(STAMP)
	$(BIN)/nvmlab bench

clean:
	rm -rf $(VENV) build *.egg-info
