# One command sets up and runs the default study (`make study`); one sets up and runs the checks and tests
# (`make test`). Both create .venv from the CPU lock file on first use.
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= python3
VENV := .venv
LOCK ?= requirements-cpu.txt
BIN := $(VENV)/bin
export PATH := $(CURDIR)/$(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
# pip prints one warning per package for this machine's local index folders that lack it; hide only those
QUIET_PIP := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup study test lint typecheck pytest lock clean-study

$(VENV)/.installed-$(LOCK): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q -r $(LOCK) 2>&1 | $(QUIET_PIP)
	$(BIN)/python -m pip install -q --no-deps -e . 2>&1 | $(QUIET_PIP)
	touch $@

setup: $(VENV)/.installed-$(LOCK)

study: setup
	dvc repro

lint: setup
	ruff check src tests benchmarks

typecheck: setup
	mypy src

pytest: setup
	pytest -q

test: lint typecheck pytest

# Recompile the lock files from requirements.in (see docs/decisions.md, "Dependencies")
lock: setup
	pip-compile -q --no-emit-index-url --no-emit-find-links --allow-unsafe --strip-extras \
		-o requirements-cpu.txt requirements.in
	pip-compile -q --no-emit-index-url --no-emit-find-links --allow-unsafe --strip-extras \
		-o requirements-gpu.txt requirements-gpu.in
