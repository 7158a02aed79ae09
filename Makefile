# Everything a fresh machine with Python and pip needs: `make test`, `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test lint typecheck demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest tests property_tests $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests property_tests examples benchmarks
	$(BIN)/mypy

demo: $(STAMP)
	$(BIN)/python examples/demo.py

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_template.py
	$(BIN)/python benchmarks/bench_scan.py
	$(BIN)/python benchmarks/bench_fit.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .hypothesis
