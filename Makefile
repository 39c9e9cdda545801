# The two commands of the README: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
VENV := .venv
PY := $(VENV)/bin/python
# Keep DDS discovery on this host unless the caller says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo readme-image test lint table shipped-model clean
setup:
	bash scripts/setup_env.sh

# The shipped model on a held-out drive, into demo_output/ (git ignores it: `make demo` leaves the tree clean).
# `python -m mtl_perception.demo --model untrained` runs the seeded untrained network instead (labelled so).
demo: setup
	$(PY) -m mtl_perception.demo --out demo_output

# Refresh the README's picture docs/images/demo_mosaic.png from the demo (a few pixels differ between
# machines, so it is its own target, run when the model or the figure changes).
readme-image: setup
	$(PY) -m mtl_perception.demo --out demo_output --readme-image docs/images/demo_mosaic.png

test: setup
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check .

# The seed's results table (docs/training.md, "Results table"): every row x 3 seeds on generated data,
# lite preset (under an hour on 2 CPU cores). TABLE_ARGS="--preset ti --data_path ROOT --gpus 0 1" for
# TI's setting on Cityscapes.
TABLE_OUT ?= table_output
table: setup
	$(PY) training/make_table.py --out $(TABLE_OUT) $(TABLE_ARGS)

# Re-create the shipped model (mtl_perception/model/weights/; docs/training.md, "The shipped model"): generated
# data, flow, training/train.py (lite, 128x256), held-out evaluation, provenance. About an hour on 2 quiet
# CPU cores. EPOCHS=30 MILESTONES=24 TRAIN_SEQUENCES=48 by default; WORK=data/shipped_model holds it all.
shipped-model: setup
	bash scripts/make_shipped_model.sh

clean:
	rm -rf $(VENV) build *.egg-info demo_output table_output
