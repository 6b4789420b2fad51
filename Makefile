# Two user-facing targets; each sets itself up on a fresh machine.
#   make demo   trains FCN-32s/16s/8s on the embedded "shapes" set and writes runs/demo/
#               (about two minutes on 2 CPU cores; matplotlib comes with it for curves.png)
#   make test   ruff + the whole pytest suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned to the builds on this machine's disk (pip takes them locally).
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[plots]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,export,plots]"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/fcnseg demo

test: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q
