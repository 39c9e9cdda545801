"""The replay evaluation, meant for meaning and not only for messages: a held-out generated split ->
``cityscapes_to_bag --with-gt`` -> ``play_bag`` -> the node with the shipped model -> recorder -> metrics
against the bag's ground truth, through the one documented command ``benchmarks/evaluate_replay.py
--cityscapes ROOT --split S``; the metrics must stay above the held-out bounds."""

from __future__ import annotations

import json

import pytest
from shipped_fixtures import BOUNDS, held_out_split, load_benchmark, within

from mtl_perception.model import shipped

pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]
SHIPPED = shipped.shipped_folder() / shipped.SHIPPED_CHECKPOINT


@pytest.mark.skipif(
    not SHIPPED.is_file(), reason=f"shipped model not yet committed ({SHIPPED}; make shipped-model)"
)
def test_replaying_a_held_out_bag_through_the_node_meets_the_bounds(tmp_path, monkeypatch):
    monkeypatch.setenv("MTL_PERCEPTION_CACHE", str(tmp_path / "cache"))  # the node's ONNX export of the .pt
    root = held_out_split(tmp_path / "held", split="val", seed=3200, sequences=3, frames=10, flow_size=None)
    out, log = tmp_path / "replay.json", tmp_path / "node.log"
    evaluate_replay = load_benchmark("evaluate_replay")
    argv = ["--cityscapes", str(root), "--split", "val", "--out", str(out), "--node-log", str(log)]
    assert evaluate_replay.main(argv) == 0, log.read_text()
    result = json.loads(out.read_text())
    assert result["node_exit_code"] == 0 and result["images_in_bag"] == 30
    # keep-latest may drop a frame on a loaded machine; most annotated frames must be scored
    assert result["frames_with_ground_truth"] == 24 and result["frames_evaluated"] >= 20, log.read_text()
    assert result["model"].startswith("shipped ") and str(SHIPPED) in result["model"]
    for metric, bound in BOUNDS.items():
        assert within(result[metric], bound), f"{metric} {result[metric]:.4f} is not {bound[0]} {bound[1]}"
