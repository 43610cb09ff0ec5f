# Two commands on a fresh machine:
#   make demo   installs into .venv, indexes the built-in demo corpus, runs a few queries and a dedupe
#   make test   installs into .venv and runs the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Without an NVIDIA GPU, ask PyTorch's CPU wheel index too: its torch==2.13.0+cpu wins over the CUDA build.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,--extra-index-url https://download.pytorch.org/whl/cpu)
DEMO_QUERIES := "read a file line by line" "parse a date from a string" "copy a directory tree"

.PHONY: demo test bench clean

$(BIN)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q --retries 1 --timeout 15 -c constraints.txt $(TORCH_INDEX) torch
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test]'
	touch $@

demo: $(BIN)/.installed
	$(BIN)/semsearch demo-corpus indexes/stdlib.jsonl
	$(BIN)/semsearch index indexes/stdlib.jsonl --index stdlib
	for q in $(DEMO_QUERIES); do echo; echo "== $$q"; $(BIN)/semsearch query --index stdlib -k 5 "$$q"; done
	@echo; echo "== near-duplicate docstrings (cosine >= 0.985)"
	$(BIN)/semsearch dedupe --index stdlib --threshold 0.985

test: $(BIN)/.installed
	$(BIN)/python -m pytest -q

bench: $(BIN)/.installed
	$(BIN)/python benchmarks/core.py

clean:
	rm -rf $(VENV) indexes/*/ indexes/*.jsonl
