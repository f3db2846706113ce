# One-command set-up: every target installs what it needs into the repo (.venv, node_modules) or the
# per-user cache (~/.cache/spot-rebalancer, the control plane binaries).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
VENV_STAMP := $(VENV)/.installed
CDK_STAMP := node_modules/.installed

.PHONY: setup test test-unit cluster demo bench lint control-plane

$(VENV_STAMP): requirements.txt lambdas/requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(CDK_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund
	touch $@

## What deploying needs and nothing more: the venv and the pinned CDK CLI (no test bed).
setup: $(VENV_STAMP) $(CDK_STAMP)

control-plane:
	tests/kube/build.sh

## The whole suite, as CI runs it: the checks first, then every test.
test: lint $(CDK_STAMP) control-plane
	$(BIN)/python -m pytest

## Fast inner loop: no control plane, no CDK synth.
test-unit: $(VENV_STAMP)
	$(BIN)/python -m pytest -m "not cluster" tests/unit

## The main job on the local control plane + moto: an interruption storm and the way back.
demo: $(VENV_STAMP) control-plane
	$(BIN)/python -m tests.demo

## Benchmarks: figures measured side by side in one run; never part of the test suite.
bench: $(VENV_STAMP) control-plane
	$(BIN)/python bench/drain.py
	$(BIN)/python bench/planner.py
	$(BIN)/python bench/coldstart.py
	$(BIN)/python bench/event_latency.py
	$(BIN)/python bench/api_requests.py
	$(BIN)/python bench/storm.py

## A local control plane in the foreground, for kubectl.
cluster: $(VENV_STAMP) control-plane
	$(BIN)/python -m tests.kube

## Style, types and the layer contract (pyproject.toml states all three).
lint: $(VENV_STAMP)
	$(BIN)/ruff check lambdas tests infra app.py bench
	$(BIN)/mypy
	PYTHONPATH=lambdas:. $(BIN)/lint-imports
