# Two entry points for newcomers: `make demo` and `make test`. Both create .venv and install what
# they need. torch==2.13.0 is installed first so that the CPU build is used; a GPU user installs the
# CUDA build of torch (see https://pytorch.org/get-started) into .venv before running make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DEMO_DIR ?= demo_output
BACKEND ?= pytorch

.PHONY: install demo test test-all bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[all,test]"
	touch $@

install: $(VENV)/.installed

demo: install
	BACKEND=$(BACKEND) $(BIN)/python -m ptycho.demo --output-dir $(DEMO_DIR) --backend $(BACKEND)

test: install
	$(BIN)/python -m pytest -q -p no:cacheprovider --timeout=900

test-all: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -m "slow or not slow"

bench: install
	PYTHON=$(PYTHON) bash benchmarks/setup_ptychi_env.sh
	$(BIN)/python -m benchmarks.run --output benchmarks/results

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
