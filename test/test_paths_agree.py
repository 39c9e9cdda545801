"""Every path scores the same: the PyTorch checkpoint and its ONNX Runtime export through
training/evaluate.py (flow PNGs from make_flow_dataset), and the node over DDS on the same split replayed
as a bag (flow computed live), within benchmarks/evaluate_paths.py's TOLERANCES. The proof that training
and run time see the same inputs."""

from __future__ import annotations

import pytest
import torch
from contracts import contract_of
from shipped_fixtures import held_out_split, load_benchmark, training_size

from mtl_perception.model import build_model, save_checkpoint, shipped

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]
SHIPPED = shipped.shipped_folder() / shipped.SHIPPED_CHECKPOINT


def _settled_model():
    """A seeded lite network with BatchNorm statistics from a few batches (sharper outputs than identity BN,
    so agreement is tested on decisions that are not all near-ties)."""
    torch.manual_seed(0)
    model = build_model(preset="lite").train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(2, 3, 64, 128) * 255, torch.randn(2, 3, 64, 128) * 4)
    return model.eval()


def _check(report: dict) -> None:
    rows = report["rows"]
    assert rows["checkpoint"]["backend"].startswith("torch") and rows["onnxruntime"]["backend"].startswith(
        "onnxruntime"
    )
    # every frame with ground truth scored on every path (the node processed every frame of the bag)
    assert rows["node"]["frames"] == rows["node"]["frames_with_ground_truth"] == rows["checkpoint"]["frames"]
    for path, check in report["checks"].items():
        assert check["within"], (path, check, rows)


def test_checkpoint_onnx_and_node_agree_on_a_small_set(tmp_path, monkeypatch, torch_one_thread):
    monkeypatch.setenv("MTL_PERCEPTION_CACHE", str(tmp_path / "cache"))
    model = _settled_model()
    checkpoint = save_checkpoint(tmp_path / "model.pt", model, contract=contract_of(model, size=(64, 128)))
    root = held_out_split(
        tmp_path / "data", split="val", seed=3300, sequences=1, frames=8, flow_size=(64, 128), size=(128, 256)
    )
    paths = load_benchmark("evaluate_paths")
    report = paths.evaluate_paths(root=root, split="val", checkpoint=checkpoint, onnx=None)
    _check(report)
    assert "| node |" in paths.format_table(report["rows"], report["checks"])


@pytest.mark.skipif(
    not SHIPPED.is_file(), reason=f"shipped model not yet committed ({SHIPPED}; make shipped-model)"
)
def test_the_shipped_checkpoint_onnx_and_node_agree(tmp_path, monkeypatch, torch_one_thread):
    monkeypatch.setenv("MTL_PERCEPTION_CACHE", str(tmp_path / "cache"))
    root = held_out_split(
        tmp_path / "data", split="val", seed=3400, sequences=1, frames=10, flow_size=training_size(SHIPPED)
    )
    paths = load_benchmark("evaluate_paths")
    _check(
        paths.evaluate_paths(root=root, split="val", checkpoint=SHIPPED, onnx=shipped.shipped_onnx_path())
    )
