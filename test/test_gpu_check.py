"""benchmarks/gpu_check.py --dry-run: the GPU measurement script runs end to end and writes its report.

The script is run as the GPU machine runs it (a child Python from the repository root, the checkout on
sys.path, nothing installed); the report's JSON and markdown structure is checked, and so is that it
never imports ROS (the GPU image has none).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mtl_perception.pipeline import STAGES

ROOT = Path(__file__).resolve().parents[1]
RUN_WITHOUT_ROS = """
import runpy, sys, json
sys.argv = ["benchmarks/gpu_check.py", "--dry-run", "--out", sys.argv[1]]
try:
    runpy.run_path("benchmarks/gpu_check.py", run_name="__main__")
except SystemExit as done:
    assert not done.code, done.code
ros = sorted(m for m in sys.modules if m.split(".")[0] == "rclpy" or m.startswith("mtl_perception.ros"))
print("ROS-MODULES", json.dumps(ros))
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run(
        [sys.executable, "-c", RUN_WITHOUT_ROS, str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ros_line = [line for line in done.stdout.splitlines() if line.startswith("ROS-MODULES")][-1]
    return out, json.loads((out / "gpu_check.json").read_text()), ros_line


def test_the_dry_run_writes_the_four_report_files_and_imports_no_ros(report):
    out, _, ros_line = report
    assert sorted(p.name for p in out.iterdir()) == [
        "gpu_check.json",
        "gpu_check.md",
        "gpu_tests.log",
        "gpu_tests.xml",
    ]
    assert json.loads(ros_line.split(" ", 1)[1]) == []


def test_the_json_report_has_every_section(report):
    _, data, _ = report
    assert data["dry_run"] is True and data["skipped"] == []
    env = data["environment"]
    assert {
        "torch",
        "torch_cuda",
        "device",
        "onnxruntime",
        "onnxruntime_providers",
        "tensorrt",
        "opencv",
    } <= set(env)
    tests = data["tests"]
    names = [case["test"] for case in tests["cases"]]
    assert any("test_gpu::test_a_steady_state_frame_syncs_the_host_once_the_download" in n for n in names)
    assert any("test_model_engine_cache::test_tensorrt_backend" in n for n in names)
    assert all(case["outcome"] in ("passed", "failed", "error", "skipped") for case in tests["cases"])
    assert tests["failed"] == tests["error"] == 0 and tests["passed"] + tests["skipped"] == len(names) >= 12
    percentile_keys = {"n", "mean_ms", "p50_ms", "p99_ms", "min_ms"}
    assert data["flow"] and all(
        percentile_keys <= set(row) and {"size", "params", "mode"} <= set(row) for row in data["flow"]
    )
    assert {row["backend"] for row in data["network"]} >= {"torch-cpu-fp32", "onnxruntime-cpu-fp32"}
    pipeline = data["pipeline"]
    assert set(pipeline["stages"]) == set(STAGES) and percentile_keys <= set(pipeline["frame"])
    assert pipeline["fps"] > 0 and pipeline["frame"]["n"] >= 2
    assert pipeline["host_syncs_per_frame"] is None  # counted only on CUDA
    assert set(data["targets"]) == {
        "flow_384x768_cuda_defaults_ms", "flow_1024x2048_cuda_defaults_ms", "network_ti_fp16_ms",
        "pipeline_fps", "pipeline_p99_ms", "pipeline_host_syncs",
    }  # fmt: skip
    assert all(t["verdict"] == "not measured" for t in data["targets"].values())  # a dry run measures nothing


def test_the_markdown_report_mirrors_the_json(report):
    out, data, _ = report
    text = (out / "gpu_check.md").read_text()
    assert text.startswith("# GPU check (dry run")
    for heading in ("## GPU tests", "## Flow", "## Network", "## Pipeline", "## Targets"):
        assert f"\n{heading}" in text, heading
    for stage in STAGES:
        assert f"| {stage} |" in text
    assert text.count("| not measured |") == len(data["targets"])
    assert f"passed {data['tests']['passed']}, failed 0, error 0, skipped {data['tests']['skipped']}" in text
