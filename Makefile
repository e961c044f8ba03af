# Two entry points: `make quickstart` (the iris example end to end) and `make test`.
# Both create .venv from this project's own files on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := sklearn,pytorch,s3,test

.PHONY: quickstart test install clean

$(BIN)/raystore: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -e '.[$(EXTRAS)]'
	touch $@

install: $(BIN)/raystore

quickstart: install
	$(BIN)/python examples/iris/quickstart.py

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
