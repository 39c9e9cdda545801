"""The model the package ships: present, installed with the package, with its provenance, and above the
quality bounds on held-out generated data (training/evaluate.py's evaluation, the path users run)."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from importlib import resources
from pathlib import Path

import pytest
from shipped_fixtures import BOUNDS, HEIGHT, WIDTH, held_out_split, training_size, within

from mtl_perception.inference import fixed_input_size
from mtl_perception.model import load_checkpoint, shipped

REPO = Path(__file__).resolve().parents[1]
SHIPPED = shipped.shipped_folder() / shipped.SHIPPED_CHECKPOINT
needs_shipped = pytest.mark.skipif(
    not SHIPPED.is_file(), reason=f"shipped model not yet committed ({SHIPPED}; make shipped-model)"
)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_shipped_model_is_committed_with_its_provenance():
    """The three files are package data, shipped.json describes them, the checkpoint has its provenance."""
    weights = resources.files("mtl_perception.model") / shipped.WEIGHTS_FOLDER
    for name in (shipped.SHIPPED_CHECKPOINT, shipped.SHIPPED_ONNX, "shipped.json"):
        assert (weights / name).is_file(), f"{name} is not in the installed package"
    record = json.loads((weights / "shipped.json").read_text())
    for name, digest in record["files"].items():
        assert _sha256(Path(str(weights / name))) == digest, f"{name} is not the file shipped.json describes"
    model, extra = load_checkpoint(Path(str(weights / shipped.SHIPPED_CHECKPOINT)))  # weights_only=True
    provenance = extra["provenance"]
    assert provenance["data_seeds"] == {"train": 1000, "val": 2000, "test": 3000}
    assert provenance["git_commit"] not in ("", "unknown") and provenance["training_seconds"] > 0
    assert any("training/train.py" in line for line in provenance["recipe"])
    assert provenance["held_out_metrics"]["depth_ard"] > 0
    assert model.config.preset == "lite" and extra["img_resize"] == [128, 256]
    assert fixed_input_size(Path(str(weights / shipped.SHIPPED_ONNX))) == (128, 256)


@pytest.mark.slow
def test_a_built_wheel_carries_the_shipped_files(tmp_path):
    """A non-editable install gets the weights: build a wheel of the tracked tree plus stand-in weights."""
    tracked = subprocess.run(
        ["git", "-C", str(REPO), "ls-files", "-z"], capture_output=True, check=True
    ).stdout.split(b"\0")
    source = tmp_path / "src"
    for name in filter(None, (t.decode() for t in tracked)):
        if (REPO / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, source / name)
    weights = source / "mtl_perception" / "model" / shipped.WEIGHTS_FOLDER
    weights.mkdir(parents=True, exist_ok=True)
    names = (shipped.SHIPPED_CHECKPOINT, shipped.SHIPPED_ONNX, "shipped.json")
    for name in names:
        (weights / name).write_bytes(b"stand-in")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
         str(tmp_path / "wheel"), str(source)],
        check=True, capture_output=True,
    )  # fmt: skip
    (wheel,) = (tmp_path / "wheel").glob("mtl_perception-*.whl")
    content = set(zipfile.ZipFile(wheel).namelist())
    for name in names:
        assert f"mtl_perception/model/weights/{name}" in content, sorted(content)


@pytest.fixture(scope="module")
def held_out_metrics(tmp_path_factory, torch_one_thread):
    """training/evaluate.py on a held-out set of its own seed (3100), at 256x512, metrics as fractions."""
    from mtl_perception_training import evaluate

    root = held_out_split(
        tmp_path_factory.mktemp("held_out"),
        split="test",
        seed=3100,
        sequences=4,  # four streets: one or two are too few for an mIoU bound near the targets
        frames=10,
        flow_size=training_size(SHIPPED),
    )
    args = evaluate.parse_args(
        ["--data_path", str(root), "--split", "test", "--output_size", str(HEIGHT), str(WIDTH)]
        + ["--workers", "0", "--device", "cpu"]
    )  # no --checkpoint: the shipped model
    result = evaluate.run(args)
    assert result["setup"]["model"] == str(SHIPPED) and result["setup"]["images"] == 4 * 8
    return result["metrics"]


@needs_shipped
@pytest.mark.slow
@pytest.mark.parametrize("metric", sorted(BOUNDS))
def test_the_shipped_model_stays_above_the_bounds_on_held_out_data(held_out_metrics, metric):
    value = held_out_metrics[metric]
    op, limit = BOUNDS[metric]
    assert within(value, BOUNDS[metric]), f"{metric} {value:.4f} is not {op} {limit}"


def test_the_bounds_are_looser_than_the_targets_and_can_fail():
    targets = {"depth_ard": 0.20, "semantic_miou": 0.75, "motion_miou": 0.70}
    for metric, (op, limit) in BOUNDS.items():
        assert (limit >= targets[metric]) if op == "<=" else (limit <= targets[metric])
        assert abs(limit - targets[metric]) <= 0.05  # slightly looser, not meaningless
        assert not within(1.0 if op == "<=" else 0.0, BOUNDS[metric])
