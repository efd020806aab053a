# Immunization Bench. Every target sets itself up: `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0          # CPU build from local disk on the dev machines
	$(BIN)/pip install -q -e ".[test,lm-eval]" -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

# The main job on the offline default: the tiny suite (built on first use, then cached).
run: $(STAMP)
	$(BIN)/harness run --defence repnoise --attack sft-1k

lint: $(STAMP)
	$(BIN)/ruff check harness defences attacks tasks tests benchmarks

test: $(STAMP) lint
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python benchmarks/stage_times.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
