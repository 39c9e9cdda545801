"""benchmarks/bench_train.py, shrunk: the script a lent GPU runs for the training-speed target (``--gpu``)
must not first fail there, where device minutes are few. It drives train.py's own ``train_one_epoch`` with
its own argument namespace, so a new train.py flag breaks it without any train.py test noticing."""

import json
import subprocess
import sys
from pathlib import Path

from train_fixtures import SPLIT, train_root

ROOT = Path(__file__).resolve().parents[1]


def test_bench_train_times_the_step_and_the_loader(tmp_path):
    out = tmp_path / "train.json"
    command = [
        sys.executable, "benchmarks/bench_train.py", "--presets", "lite", "--methods", "vanilla", "upgrad",
        "--size", "32", "64", "--batch_size", "2", "--steps", "2", "--warmup", "1", "--amp",
        "--channels_last", "--data_path", str(train_root()), "--split", SPLIT, "--workers", "0",
        "--loader_batches", "2", "--json", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert [(r["preset"], r["method"], r["amp"]) for r in result["steps"]] == [
        ("lite", "vanilla", True),
        ("lite", "upgrad", True),
    ]
    for row in result["steps"]:
        assert row["time_per_step_s"] > 0 and row["samples_per_s"] > 0 and row["peak_memory_mb"] > 0
    assert result["loader"]["samples_per_s"] > 0
    assert "| lite | upgrad | 32x64 | 2 | bf16 | True |" in done.stdout


# The lent GPU's image: the checkout as it is (no mtl_perception_training installed), no torchjd, no ROS.
AS_ON_THE_GPU_IMAGE = """
import runpy, sys
for name in ("mtl_perception_training", "torchjd", "rclpy"):
    sys.modules[name] = None  # import fails, as where the package is absent
sys.path.insert(0, "benchmarks")
sys.argv = ["benchmarks/bench_train.py", "--presets", "lite", "--size", "32", "64", "--steps", "1", "--amp",
            "--json", sys.argv[1]]
runpy.run_path("benchmarks/bench_train.py", run_name="__main__")  # an import of torchjd would fail here
"""


def test_bench_train_runs_from_a_bare_checkout_without_torchjd(tmp_path):
    out = tmp_path / "train.json"
    done = subprocess.run(
        [sys.executable, "-c", AS_ON_THE_GPU_IMAGE, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert [r["method"] for r in json.loads(out.read_text())["steps"]] == ["vanilla"]
