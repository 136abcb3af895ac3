# make quickstart   install, then train Prefix-RFT on the embedded default and print base vs final
# make test         install with the dev extras, then run the test suite (what CI runs)
SHELL := /bin/bash
ACTIVATE := if [ -z "$${VIRTUAL_ENV:-}$${CONDA_PREFIX:-}" ]; then source .venv/bin/activate; fi
RUN ?= runs/quickstart

.PHONY: install install-dev quickstart test test-fast

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
