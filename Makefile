VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
STAMP_FUZZ := $(VENV)/.installed-fuzz

.PHONY: run test lint typecheck bench fuzz conformance soak chaos clean

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(PY)
	$(PIP) install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(PY)
	$(PIP) install -q -e '.[test,peer,bench]'
	touch $@ $(STAMP_RUN)

$(STAMP_FUZZ): $(STAMP_TEST)
	$(PIP) install -q -e '.[fuzz]'
	touch $@

run: $(STAMP_RUN)
	$(VENV)/bin/observer-relay serve

test: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest

lint: $(STAMP_TEST)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict relay/core relay/ports.py relay/cluster
	$(VENV)/bin/lint-imports

bench: $(STAMP_TEST)
	$(PY) -m bench.run

# Coverage-guided fuzzing (atheris) of the frame reader, the codecs and the HTTP head
# parser, a fixed number of iterations each; crashing inputs land in tests/corpus/.
fuzz: $(STAMP_FUZZ)
	$(PY) -m fuzz.run

# Autobahn|Testsuite (fuzzingclient, Python 2.7 from pyenv) against an echo server on the
# project's own WebSocket transport; summary in docs/conformance.md.
conformance: $(STAMP_TEST)
	$(PY) -m conformance.run

# Every Redis chaos scenario in every variant (make test runs a subset), ~7 minutes.
chaos: $(STAMP_TEST)
	OBSERVER_CHAOS_FULL=1 $(VENV)/bin/pytest tests/test_chaos.py

# Lesson churn with hostile clients: 30 minutes on one node, then 30 on two nodes + Redis.
soak: $(STAMP_TEST)
	$(PY) -m bench.soak

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
