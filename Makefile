VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test lint typecheck bench clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test,peer,bench]'
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(VENV)/bin/observer-relay serve

test: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: $(STAMP_TEST)
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
