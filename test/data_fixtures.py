"""Shared synthetic dataset for the data tests: generated once per test process (2 x 30 frames, 128x256)."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

SPLIT = "val"
CITY = "testcity"
HEIGHT, WIDTH = 128, 256
SEQUENCES, FRAMES = 2, 30


@functools.lru_cache(maxsize=1)
def synthetic_root() -> Path:
    """Root of a small synthetic Cityscapes tree (images, GT, camera, vehicle, timestamps)."""
    from mtl_perception.data.synthetic import generate

    root = Path(tempfile.mkdtemp(prefix="mtl_data_test_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    generate(root, SPLIT, SEQUENCES, FRAMES, HEIGHT, WIDTH, seed=3, city=CITY, show_progress=False)
    return root


FLOW_SIZE = (64, 128)


@functools.lru_cache(maxsize=1)
def synthetic_root_with_flow() -> Path:
    """The same tree plus its flow dataset (make_flow_dataset at 64x128, the project's Farnebäck)."""
    from mtl_perception.model import FlowContract
    from mtl_perception_training.make_flow_dataset import make_flow_dataset

    root = synthetic_root()
    make_flow_dataset(root, SPLIT, flow=FlowContract(size=FLOW_SIZE), device="cpu", show_progress=False)
    return root
