# make quickstart   install, then train Prefix-RFT on the embedded default and print base vs final
# make test         install with the dev extras, then run the test suite (what CI runs)
# make test-sglang  build/reuse ./.venv-sglang (real SGLang 0.5.23 on CPU, tests/sglang/install.sh), run tests/sglang
#                   (embedded models are cached in the venv across runs; PYTEST_ARGS="-k engine" etc. pass through)
SHELL := /bin/bash
ACTIVATE := if [ -z "$${VIRTUAL_ENV:-}$${CONDA_PREFIX:-}" ]; then source .venv/bin/activate; fi
RUN ?= runs/quickstart

.PHONY: install install-dev quickstart test test-fast test-sglang

install:
	bash scripts/install.sh

install-dev:
	bash scripts/install.sh dev

quickstart: install
	$(ACTIVATE); prefix-rft train --config quickstart --output-dir $(RUN)

test: install-dev
	$(ACTIVATE); python -m pytest -q

test-fast: install-dev
	$(ACTIVATE); python -m pytest -q -m "not slow"

test-sglang:
	venv="$$(bash tests/sglang/install.sh | tail -n 1)"; \
	SGLANG_USE_CPU_ENGINE=1 PREFIX_RFT_REQUIRE_SGLANG=1 \
	  PREFIX_RFT_TEST_CACHE="$${PREFIX_RFT_TEST_CACHE:-$$venv/prefix-rft-cache}" \
	  "$$venv/bin/python" -m pytest -q -p no:cacheprovider tests/sglang $(PYTEST_ARGS)
