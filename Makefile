# One venv, pinned dependencies; every target creates it when missing.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
INPUT ?= data_sample
OUTPUT ?= out/demo
NOTEBOOK_OUTPUT ?= out/notebooks
NOTEBOOKS := 01_local_setup 02_featurization 03_pca

.PHONY: help venv demo test lint format sample clean lab notebooks history mutation

help:
	@echo "make demo    set up $(VENV) and run the pipeline on $(INPUT) -> $(OUTPUT)"
	@echo "make test    set up $(VENV), lint, run the test suite (what CI runs)"
	@echo "make lint    ruff check + format check      make format   ruff format"
	@echo "make sample  regenerate data_sample/        make clean    remove $(VENV) and out/"
	@echo "make lab     open JupyterLab on notebooks/"
	@echo "make notebooks  run 01-03 headless (papermill) on $(INPUT) -> $(NOTEBOOK_OUTPUT)"
	@echo "make history    start the Spark History Server on local event logs (port 18080)"
	@echo "make mutation   mutation testing of the modules the README promises (hours; MUTANTS='fruits.pca*' for some)"

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
	rm -rf $(VENV) out mutants

lab: venv
	$(BIN)/jupyter lab --notebook-dir notebooks

# INPUT / NOTEBOOK_OUTPUT may be local folders (relative to here) or s3:// URIs.
notebooks: venv
	mkdir -p out/executed
	for nb in $(NOTEBOOKS); do \
	  $(BIN)/papermill --no-progress-bar notebooks/$$nb.ipynb out/executed/$$nb.ipynb \
	    -p input_uri "$(INPUT)" -p output_uri "$(NOTEBOOK_OUTPUT)" || exit 1; \
	done

history: venv
	$(BIN)/python -c "from fruits.config import default_event_log_dir as d; \
	  from fruits.session import history_server_command as c; print(c(d()))" | sh
	@echo "Spark History Server: http://localhost:18080 (stop: $(BIN)/python -c 'import pyspark, os; \
	  print(os.path.dirname(pyspark.__file__))'/sbin/stop-history-server.sh)"

# Not part of CI. mutmut mutates the modules named in pyproject.toml's [tool.mutmut]
# in a copy (mutants/) and runs, for each mutant, the fast tests that cover it.
# The data and weights are given as absolute paths, since the tests run in mutants/.
FRUITS_DATA ?= $(abspath ../shared/data/fruits-360)
FRUITS_WEIGHTS ?= $(abspath ../shared/models/mobilenet_v2_1.0_224_no_top_reconstructed.h5)
MUTANTS ?=
mutation: venv
	rm -rf mutants
	FRUITS_DATA="$(FRUITS_DATA)" FRUITS_WEIGHTS="$(FRUITS_WEIGHTS)" $(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results
