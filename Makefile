# logship: `make demo` to see it work, `make test` to prove it.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

OVERLAY ?= k3d

.PHONY: k3d-up k3d-build k3d-monitoring k3d-keda k3d-adapter k3d-apply k3d-all k3d-drain k3d-status k3d-down
.PHONY: install demo test test-unit test-integration test-fault lint format bench bench-quick chaos tools broker clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start (or find) a broker, then run producer and consumer on ./input.txt → ./output.txt;
## one Ctrl-C stops both gracefully and make exits 0 (scripts/demo.py says how).
demo: install broker
	@bash scripts/demo.sh

broker:
	@bash scripts/ensure-broker.sh

## Debian tools the tests drive (promtool, prometheus, shellcheck); installed when missing.
tools:
	@bash scripts/install-tools.sh

## The whole suite: unit (no broker), integration (real broker), fault (private nodes).
test: install tools broker
	$(PY) -m pytest -p no:cacheprovider -q --durations=20 $(PYTEST_ARGS) tests

test-unit: install
	$(PY) -m pytest -q tests/unit

test-integration: install broker
	$(PY) -m pytest -q tests/integration

test-fault: install broker
	$(PY) -m pytest -q tests/fault

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

## Benchmarks against references measured in the same run (see bench/README.md).
bench: install broker
	$(PY) -m bench.run --runs 3 --lines 5000000

## The quick version writes to bench/quick/ (not committed), leaving the full results in place.
bench-quick: install broker
	$(PY) -m bench.run --quick --out bench/quick

## The long fault soak: 50+ kills and 5+ broker restarts over 1,000,000 lines, then
## MODEL_SCENARIOS random model scenarios (tests/fault/test_model.py; each failure prints its seed).
MODEL_SCENARIOS ?= 500
## Then the other soaks (`@pytest.mark.soak`: the longer cluster faults), deselected by make test.
chaos: install broker
	LOGSHIP_CHAOS=1 LOGSHIP_MODEL_SCENARIOS=$(MODEL_SCENARIOS) $(PY) -m pytest -q -s tests/fault -k chaos
	LOGSHIP_CHAOS=1 $(PY) -m pytest -q -s tests/fault -m soak -k "not chaos"

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .demo

## Kubernetes on a laptop (needs Docker, k3d, kubectl, helm): see k8s/README.md#run-on-k3d
k3d-up k3d-build k3d-monitoring k3d-keda k3d-adapter k3d-drain k3d-status k3d-down:
	bash scripts/k3d.sh $(@:k3d-%=%)

## the overlay decides which external-metrics backend (KEDA or prometheus-adapter) is installed
k3d-apply k3d-all:
	bash scripts/k3d.sh $(@:k3d-%=%) $(OVERLAY)
