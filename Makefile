# One venv, pinned dependencies; every target creates it when missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
INPUT ?= data_sample
OUTPUT ?= out/demo

.PHONY: help venv demo test lint format sample clean

help:
	@echo "make demo    set up $(VENV) and run the pipeline on $(INPUT) -> $(OUTPUT)"
	@echo "make test    set up $(VENV), lint, run the test suite (what CI runs)"
	@echo "make lint    ruff check + format check      make format   ruff format"
	@echo "make sample  regenerate data_sample/        make clean    remove $(VENV) and out/"

$(BIN)/fruits: requirements.txt requirements-dev.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt -e .
	@touch $@

venv: $(BIN)/fruits

demo: venv
	$(BIN)/fruits run --input "$(INPUT)" --output "$(OUTPUT)" --mode overwrite

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest

format: venv
	$(BIN)/ruff format .

sample: venv
	rm -rf data_sample/Training data_sample/Test
	$(BIN)/python -m fruits.sample_data data_sample

clean:
	rm -rf $(VENV) out
