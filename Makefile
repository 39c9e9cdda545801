# The two commands of the README: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
VENV := .venv
PY := $(VENV)/bin/python
# Keep DDS discovery on this host unless the caller says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test lint clean
setup:
	bash scripts/setup_env.sh

demo: setup
	$(PY) -m mtl_perception.demo --out demo_output

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) build *.egg-info demo_output
