# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test lint proto bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

demo: $(VENV)/.installed
	$(PY) -m services.quickstart

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check meshflow tests services benchmarks proto
	$(VENV)/bin/ruff format --check meshflow tests services benchmarks proto
	$(VENV)/bin/mypy

test: lint
	$(VENV)/bin/pytest -q

proto: $(VENV)/.installed
	$(PY) proto/generate.py

bench: $(VENV)/.installed
	$(PY) benchmarks/flow_bench.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
