# The two commands of the README: `make demo` (set up, run the main job) and `make test` (set up, run the tests).
VENV := .venv
PY := $(VENV)/bin/python
# Keep DDS discovery on this host unless the caller says otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST

.PHONY: setup demo test lint table shipped-model clean
setup:
	bash scripts/setup_env.sh

# The shipped model on a held-out drive; also refreshes the README's picture docs/images/demo_mosaic.png.
# Until a trained model is committed (mtl_perception/model/weights/shipped.pt, `make shipped-model`), the demo
# runs the seeded untrained model, asked for explicitly and labelled UNTRAINED in everything it writes.
ifeq ($(wildcard mtl_perception/model/weights/shipped.pt),)
DEMO_MODEL := --model untrained
else
DEMO_MODEL := --readme-image docs/images/demo_mosaic.png
endif
demo: setup
	$(PY) -m mtl_perception.demo --out demo_output $(DEMO_MODEL)

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
# data, flow, training/train.py (lite, 128x256), held-out evaluation, provenance. Hours on 2 CPU cores.
# EPOCHS=20 MILESTONES=15 by default; WORK=data/shipped_model holds the data and the run.
shipped-model: setup
	bash scripts/make_shipped_model.sh

clean:
	rm -rf $(VENV) build *.egg-info demo_output table_output
