# edgeprof: `make demo` and `make test` work on a fresh machine (they set up what they need).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
BOARD  := .venv-board

# The ONNX->TFLite converter's own environment (onnx2tf + TensorFlow, ~1.9 GB, pinned; needs
# PyPI once), kept outside the checkout and shared by every cache, the tests and `make bench`.
export EDGEPROF_TOOLS_DIR ?= $(HOME)/.cache/edgeprof-tools

.PHONY: setup tools board-env board-env-old demo test bench clean

setup: $(VENV)/.installed tools

tools: $(VENV)/.installed
	$(BIN)/edgeprof tools install tflite

# torch==2.13.0 first: on these machines that pin is a CPU build on disk; an open range would
# pull a multi-GB CUDA build (see ../shared/docs/stack-notes.md).
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,torch]'
	touch $@

# A minimal "board" interpreter: only numpy 1.26 and the runtimes, like a Raspberry Pi image.
# The tests run the worker in it to prove the worker is self-contained.
board-env: $(BOARD)/.installed
$(BOARD)/.installed:
	test -x $(BOARD)/bin/python || $(PYTHON) -m venv $(BOARD)
	$(BOARD)/bin/python -m pip install -q "numpy==1.26.*" onnxruntime ai-edge-litert
	touch $@

# A board with an older onnxruntime: the lab tests check that a group mixing runtime versions is
# refused before any row is sharded.
board-env-old: $(BOARD)-old/.installed
$(BOARD)-old/.installed:
	test -x $(BOARD)-old/bin/python || $(PYTHON) -m venv $(BOARD)-old
	$(BOARD)-old/bin/python -m pip install -q "numpy==1.26.*" "onnxruntime==1.22.*"
	touch $@

demo: setup
	$(BIN)/edgeprof demo

test: setup board-env board-env-old
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) $(BOARD) $(BOARD)-old .pytest_cache build *.egg-info
