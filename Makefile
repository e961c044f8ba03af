# Two entry points: `make quickstart` (the iris example end to end) and `make test`.
# Both create .venv from this project's own files on first use; the quickstart installs only what
# it needs (raystore and scikit-learn), the tests everything.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := all,test
QUICKSTART_EXTRAS := sklearn

.PHONY: quickstart test lint install clean deployments

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-quickstart: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[$(QUICKSTART_EXTRAS)]'
	touch $@

$(VENV)/.installed-all: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[$(EXTRAS)]'
	touch $@ $(VENV)/.installed-quickstart

install: $(VENV)/.installed-all

quickstart: $(VENV)/.installed-quickstart
	$(BIN)/python examples/iris/quickstart.py $(QUICKSTART_ARGS)

# The layer contracts of docs/architecture.md and ruff (lint and format) first: a violation fails the build.
lint: install
	$(BIN)/lint-imports --no-logo --no-cache
	$(BIN)/ruff check raystore tests benchmarks examples docs
	$(BIN)/ruff format --check raystore tests benchmarks examples docs

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# deployments/*.yaml: the examples' Serve configs for cluster.yaml's cluster, side by side under
# /iris, /composition and /pytorch_gpu, their models pinned to the versions `latest` means in this
# machine's store (train the examples first; push those versions to CLUSTER_STORE before deploying).
CLUSTER_STORE ?= s3://my-raystore-bucket/store
CLUSTER_EXAMPLES ?= /home/ubuntu/raystore-examples
EXAMPLES := iris composition pytorch_gpu

deployments: install
	for example in $(EXAMPLES); do \
	  $(BIN)/raystore build service:svc --working-dir examples/$$example --store $(CLUSTER_STORE) \
	    --pythonpath $(CLUSTER_EXAMPLES)/$$example --route-prefix /$$example -o deployments/$$example.yaml || exit 1; \
	done

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
