# The two commands a fresh machine needs: `make demo` and `make test`. Everything installs through scripts/.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: setup test lint unit bench bench-gpu demo clean

setup:
	@scripts/setup_env.sh

lint: setup
	$(VENV)/bin/ruff check .

unit: setup
	$(PY) -m pytest -q test

# Lint, then the whole test suite. pytest exits 5 when it collects nothing: that is a failure here too.
test: lint unit

bench: setup
	$(PY) benchmarks/bench_model.py

# Synthetic bag (cached in out/demo/cache) → st4rtrack-node over DDS → recorded outputs → out/demo/report/report.md.
# Model: the embedded default, or DEMO_ARGS="--checkpoint PATH" / ST4R_DEMO_CHECKPOINT=PATH.
demo: setup
	$(PY) -m st4rtrack_ros.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
