# The two commands: `make run` (main job) and `make test` (whole suite).
# Both install into .venv first; the install is redone only when setup.cfg changes.

PYTHON ?= python3
VENV := .venv
VENV_PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
RUN_DIR ?= runs/builtin
# TensorFlow's C++ start-up noise is held back by keras_s2s.runtime (errors and,
# on GPU machines, device discovery still show); set TF_CPP_MIN_LOG_LEVEL to override.

.PHONY: install run test test-fast bench lint clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(VENV_PYTHON) || $(PYTHON) -m venv $(VENV)
	$(VENV_PYTHON) -m pip install --quiet --upgrade pip
	$(VENV_PYTHON) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# Main job: train on the built-in corpus, evaluate, export, translate.
run: install
	$(VENV_PYTHON) -m training.main_job --run-dir $(RUN_DIR)

# Whole suite, slow end-to-end tests included.
test: install
	$(VENV_PYTHON) -m pytest tests

# Fast tier only.
test-fast: install
	$(VENV_PYTHON) -m pytest tests -m "not slow"

bench: install
	$(VENV_PYTHON) -m pip install --quiet -e '.[bench]'
	$(VENV_PYTHON) -m bench.run

lint: install
	$(VENV_PYTHON) -m pip install --quiet ruff
	$(VENV_PYTHON) -m ruff check keras_s2s training tests bench

clean:
	rm -rf $(VENV) runs .pytest_cache
