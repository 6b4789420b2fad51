# Two user-facing targets; each sets itself up on a fresh machine.
#   make demo   trains FCN-32s/16s/8s on the embedded "shapes" set and writes runs/demo/
#   make test   ruff + the whole pytest suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned to the builds on this machine's disk (pip takes them locally).
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: demo test chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,export,serve,serve-test]"
	touch $@

# the serve page's browser test drives Debian's chromium; where apt cannot install it the
# test skips and says why
chromium:
	@command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
		{ SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo -n); \
		  $$SUDO apt-get update -q >/dev/null 2>&1; \
		  $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 || \
		  echo "make: could not install chromium (the browser test will skip)"; }

demo: $(VENV)/.installed
	$(BIN)/fcnseg demo

test: $(VENV)/.installed-dev chromium
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/python -m pytest -q
