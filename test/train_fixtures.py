"""A tiny training set for the train.py tests, made with the data tools' own command lines.

4 snippets x 20 frames at 128x256 (one annotated frame each: 4 samples), flow at 64x128; generated once
per test process. The tests train the `lite` network at 64x128 on it and validate on the same split.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SPLIT = "train"
BIN = Path(sys.executable).parent  # the venv's console scripts


def _run(*argv: str) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([str(BIN / argv[0]), *argv[1:]], check=True, capture_output=True, env=env, timeout=600)


@functools.lru_cache(maxsize=1)
def train_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="mtl_train_test_"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    _run(
        "make_synthetic_cityscapes",
        "--out",
        str(root),
        "--split",
        SPLIT,
        "--sequences",
        "4",
        "--frames",
        "20",
        "--height",
        "128",
        "--width",
        "256",
        "--seed",
        "5",
    )
    _run(
        "make_flow_dataset",
        "--root",
        str(root),
        "--split",
        SPLIT,
        "--device",
        "cpu",
        "--height",
        "64",
        "--width",
        "128",
    )
    return root


def copy_of_root(tmp_path: Path) -> Path:
    """A private copy a test may damage."""
    target = tmp_path / "data"
    shutil.copytree(train_root(), target)
    return target


def tiny_args(root: Path, output_dir: Path, *extra: str) -> list[str]:
    """train.py flags of a run of a few seconds: lite, 64x128, 4 samples, batch 2 (2 steps per epoch)."""
    return [
        "--data_path",
        str(root),
        "--train_split",
        SPLIT,
        "--val_split",
        SPLIT,
        "--img_resize",
        "64",
        "128",
        "--output_size",
        "128",
        "256",
        "--preset",
        "lite",
        "--epochs",
        "1",
        "--batch_size",
        "2",
        "--workers",
        "0",
        "--tensorboard_images",
        "1",
        "--output_dir",
        str(output_dir),
        *extra,
    ]
