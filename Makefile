# nvmlab developer commands. Each target creates .venv and installs what it needs:
# `make demo` only nvmlab and its runtime dependencies, `make job` those and matplotlib (the
# report), the other targets the test extras.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
RUN_STAMP  := $(VENV)/.nvmlab-runtime
TEST_STAMP := $(VENV)/.nvmlab-test
JOB_STAMP  := $(VENV)/.nvmlab-report
STRICT := --config-settings editable_mode=strict

.PHONY: job demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e . $(STRICT)
	touch $(RUN_STAMP)

$(JOB_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[report]' $(STRICT)
	touch $(JOB_STAMP) $(RUN_STAMP)

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]' $(STRICT)
	touch $(TEST_STAMP) $(RUN_STAMP) $(JOB_STAMP)

## Run the main job on the emulated bench with the SQLite default: characterize a 64 x 64
## crossbar, tune a weight layer into it, write a report (examples/jobs/overnight.toml).
job: $(JOB_STAMP)
	$(BIN)/nvmlab run examples/jobs/overnight.toml

## The tour's first step: read the conductance map of an emulated crossbar and store it.
demo: $(RUN_STAMP)
	$(BIN)/nvmlab demo

## Run the test suite (needs the PostgreSQL server of the lab machine, see README).
## Reinstalls first: the strict editable install must learn about new modules.
test: $(TEST_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]' $(STRICT)
	$(BIN)/pytest

## ruff and mypy over the whole tree.
lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pip install --quiet -e '.[test]' $(STRICT)
	cd /tmp && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p nvmlab

## Benchmarks (print figures; not part of the test suite).
bench: $(TEST_STAMP)
	$(BIN)/nvmlab bench

clean:
	rm -rf $(VENV) build *.egg-info
