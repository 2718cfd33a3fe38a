# All set-up happens here: each target creates .venv with pip when it is missing.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
SHARED  := $(abspath ../shared/data)

# Offline MedMNIST mirror: ../shared/data/medmnist when present and the variable is unset.
ifeq ($(origin MEDCLASS_DATA_DIR), undefined)
  ifneq ($(wildcard $(SHARED)/medmnist),)
    export MEDCLASS_DATA_DIR := $(SHARED)/medmnist
  endif
endif

.PHONY: demo test test-all bench lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/medclass train --data pneumoniamnist --recipe default --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

test-all: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/python bench/medmnist.py
	$(BIN)/python bench/clinical.py
	$(BIN)/python bench/augment.py

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
