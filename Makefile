# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The gRPC stack meshflow is measured and tested with: grpcio 1.78 serves ~1.4x the small
# requests/s of 1.80-1.85 on the same machine (benchmarks/RESULTS.md). The generated code in
# meshflow/proto is made by this grpcio-tools, and the stale-code test checks it with it.
GRPC_PINS := grpcio==1.78.2 grpcio-health-checking==1.78.2 grpcio-tools==1.78.2 protobuf==6.33.6
# torch's CPU build, installed before the models extra so that pip never picks a CUDA build.
TORCH_PIN := torch==2.13.0

.PHONY: demo quickstart test lint proto bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check $(TORCH_PIN)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,models]' $(GRPC_PINS)
	touch $@

# The shop-the-look search service: index the generated catalog, search, serve the web page.
demo: $(VENV)/.installed
	$(PY) -m services.shop_the_look

# The 15-line prototype of the README.
quickstart: $(VENV)/.installed
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
	$(PY) benchmarks/compare.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
