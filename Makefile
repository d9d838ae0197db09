# Every target creates what it needs on a fresh machine. `make test` is exactly what CI runs.
SHELL := /bin/bash
export PYENV_VERSION ?= 3.12.1:3.13.0:3.11.7
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1
PYTHON ?= $(shell command -v python3.12 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
SAM := .venv-sam/bin/sam

.PHONY: setup lint typecheck validate build unit unit-py311 test local bench chaos redrive deploy clean

$(VENV)/.installed: requirements-dev.txt layers/common/requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q uv
	$(VENV)/bin/uv pip install -q --python $(PY) -r requirements-dev.txt -e .
	touch $@

# The code must also run on Python 3.11 (the default python3 of a fresh machine): unit and integration tests there.
PYTHON311 ?= $(shell command -v python3.11 2>/dev/null)
.venv311/.installed: requirements-dev.txt layers/common/requirements.txt pyproject.toml
	test -x .venv311/bin/python || $(PYTHON311) -m venv .venv311
	.venv311/bin/python -m pip install -q uv
	.venv311/bin/uv pip install -q --python .venv311/bin/python -r requirements-dev.txt -e .
	touch $@

.venv-sam/.installed: requirements-sam.txt
	test -x .venv-sam/bin/python || $(PYTHON) -m venv .venv-sam
	.venv-sam/bin/python -m pip install -q uv
	.venv-sam/bin/uv pip install -q --python .venv-sam/bin/python -r requirements-sam.txt
	touch $@

setup: $(VENV)/.installed .venv-sam/.installed

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy

validate: .venv-sam/.installed
	$(SAM) validate --lint
	.venv-sam/bin/cfn-lint template.yaml

# sam build ships no bytecode and Lambda cannot write it, so every cold start compiled the layer: precompile it
# (unchecked-hash: no mtime check on Lambda's read-only file system). Measured by make bench: ingest import 1,325 -> 533 ms.
build: .venv-sam/.installed
	$(SAM) build
	$(PYTHON) -m compileall -q -j 0 --invalidation-mode unchecked-hash .aws-sam/build/CommonLayer/python \
		.aws-sam/build/IngestFunction .aws-sam/build/DeliveryFunction

unit: $(VENV)/.installed
	$(VENV)/bin/pytest -q

unit-py311: .venv311/.installed
	.venv311/bin/pytest -q -p no:cacheprovider tests/unit tests/integration

test: lint typecheck validate build unit-py311 unit

local: $(VENV)/.installed
	$(PY) -m devstack

bench: $(VENV)/.installed
	$(PY) -m bench

chaos: $(VENV)/.installed
	$(PY) -m devstack.chaos $(ARGS)

redrive: $(VENV)/.installed
	$(PY) -m ops.redrive $(ARGS)

deploy: build
	$(SAM) deploy $(if $(ENV),--config-env $(ENV),)

clean:
	rm -rf .aws-sam .pytest_cache .mypy_cache .ruff_cache .venv311
