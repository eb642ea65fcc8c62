# The two commands a fresh machine needs: `make demo` and `make test`. Everything installs through scripts/.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python

JAZZY_VENV := .venv-jazzy
# Node tests over DDS that run again under ROS 2 Jazzy (the default venv is Kilted).
JAZZY_TESTS := test/ros/test_node_dds.py test/ros/test_node_lifecycle.py test/ros/test_node_tf_sync.py \
	test/ros/test_node_bad_input.py

.PHONY: setup test lint unit bench bench-gpu demo clean setup-jazzy test-jazzy

setup:
	@scripts/setup_env.sh

lint: setup
	$(VENV)/bin/ruff check .

unit: setup
	$(PY) -m pytest -q test

# Lint, then the whole test suite. pytest exits 5 when it collects nothing: that is a failure here too.
test: lint unit

# A second venv with ROS 2 Jazzy wheels (requirements/ros-jazzy.txt; same base/dev pins), then the node tests over DDS.
setup-jazzy:
	@ST4R_ROS_DISTRO=jazzy ST4R_VENV=$(CURDIR)/$(JAZZY_VENV) scripts/setup_env.sh

test-jazzy: setup-jazzy
	$(JAZZY_VENV)/bin/python -m pytest -q $(JAZZY_TESTS)

bench: setup
	$(PY) benchmarks/bench_model.py

# Synthetic bag (cached in out/demo/cache) → st4rtrack-node over DDS → recorded outputs → out/demo/report/report.md.
# Model: the embedded default, or DEMO_ARGS="--checkpoint PATH" / ST4R_DEMO_CHECKPOINT=PATH.
demo: setup
	$(PY) -m st4rtrack_ros.demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) $(JAZZY_VENV) .pytest_cache .ruff_cache
