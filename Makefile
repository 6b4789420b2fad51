# Two user-facing targets; each sets itself up on a fresh machine.
#   make demo   the paper's Figure 2 (ImageNet EfficientNet-Lite0, convolutionalized, on a cat
#               photo), then trains FCN-32s/16s/8s on the embedded "shapes" set; writes runs/demo/
#               (about two minutes on 2 CPU cores; matplotlib comes with it for curves.png)
#   make test   ruff + lint-imports (the layers contract) + the whole pytest suite, then the
#               numerics-sensitive tests again as an AVX2-only CPU computes them (on AVX-512)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned to the builds on this machine's disk (pip takes them locally).
TORCH  := torch==2.14.1 torchvision==0.29.1
# An AVX-512 CPU computing as an AVX2-only one: ATen's, oneDNN's and MKL's kernel choice.
AVX2   := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
# Tests whose results depend on the kernels' summation order (fast vs exact, ONNX, DDP).
NUMERIC_TESTS := tests/models tests/accel tests/inference tests/distributed

.PHONY: demo test chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[plots,weights,demo]"
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(BIN)/pip install -q -e ".[dev,export,plots,serve,serve-test,timm,weights,demo]"
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
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q
	@if grep -q avx512 /proc/cpuinfo; then \
		echo "== $(NUMERIC_TESTS) again with $(AVX2)"; \
		$(AVX2) $(BIN)/python -m pytest -q $(NUMERIC_TESTS); \
	else \
		echo "== this CPU has no AVX-512: the run above was the AVX2 run"; \
	fi
