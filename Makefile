# Everything a fresh machine with Python and pip needs: `make test`, `make demo`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install test lint typecheck demo bench clean

# The Keras tests run once per backend, each in its own process (Keras fixes
# its backend at import); the other tests once.
KERAS_TESTS := tests/test_keras_callback.py tests/test_keras_resume.py \
	tests/test_keras_save_errors.py tests/test_keras_loop.py tests/test_reliability_kill.py \
	tests/test_keras_background.py tests/test_keras_counting.py tests/test_keras_optimizers.py \
	tests/test_keras_fit_resumed.py tests/test_keras_preemption.py tests/test_keras_cluster.py

# torch is installed first, on its own, as the CPU build (torch==2.13.0 alone
# resolves to 2.13.0+cpu here); the test extras then find it installed. On
# one command line with the self-referencing `[test]` extra, pip resolved the
# CUDA build and several GB of nvidia-* wheels instead.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -qq --upgrade pip
	$(BIN)/python -m pip install -qq torch==2.13.0
	$(BIN)/python -m pip install -qq -e '.[test]'
	@if $(BIN)/python -m pip list 2>/dev/null | grep -q '^nvidia-'; then \
		echo "the virtual environment holds CUDA packages (nvidia-*): torch is not the CPU build"; \
		exit 1; fi
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	KERAS_BACKEND=tensorflow $(BIN)/python -m pytest tests property_tests $(PYTEST_ARGS)
	@# The JAX and PyTorch runs go at once, one per core; each prints its report
	@# when both are done, and either failing fails the target.
	@logs=$$(mktemp -d); \
	KERAS_BACKEND=jax $(BIN)/python -m pytest $(KERAS_TESTS) $(PYTEST_ARGS) >$$logs/jax 2>&1 & jax=$$!; \
	KERAS_BACKEND=torch $(BIN)/python -m pytest $(KERAS_TESTS) $(PYTEST_ARGS) >$$logs/torch 2>&1; torch=$$?; \
	wait $$jax; jax=$$?; \
	echo "== KERAS_BACKEND=jax: exit $$jax"; cat $$logs/jax; \
	echo "== KERAS_BACKEND=torch: exit $$torch"; cat $$logs/torch; \
	rm -rf $$logs; test $$jax -eq 0 -a $$torch -eq 0

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
