"""End to end on a rosbag replay: synthetic sequence -> bag with GT -> play_bag -> node -> recorded outputs.

Checks that every frame the node processed produced every output with the input's stamp and frame_id, that
the node's own diagnostics agree with what was received, and scores the outputs with mtl_perception.metrics
(cross-checked against torchmetrics on the same arrays).
"""

import subprocess
import time

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassJaccardIndex

pytest.importorskip("rclpy")
from mtl_perception.ros.harness import console_script  # noqa: E402
from mtl_perception.ros.replay import (  # noqa: E402
    OUTPUT_TOPICS,
    evaluate,
    image_stamps,
    read_ground_truth,
    run_replay,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]
FRAMES, H, W = 6, 64, 128


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    subprocess.run(
        [
            console_script("make_synthetic_cityscapes"),
            "--out",
            str(root / "syn"),
            "--split",
            "val",
            "--sequences",
            "1",
            "--frames",
            str(FRAMES),
            "--height",
            str(H),
            "--width",
            str(W),
        ],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            console_script("cityscapes_to_bag"),
            "--root",
            str(root / "syn"),
            "--split",
            "val",
            "--out",
            str(root / "bag"),
            "--with-gt",
        ],
        check=True,
        capture_output=True,
    )
    return root / "bag"


def test_replay_every_processed_frame_has_every_output(bag, tmp_path):
    node_args = [
        "--params-file",
        "config/params.yaml",
        "-p",
        f"network_height:={H}",
        "-p",
        f"network_width:={W}",
        "-p",
        "model_file:=untrained",
        "-p",
        "model_preset:=lite",
        "-p",
        "backend:=onnxruntime",
        "-p",
        "device:=cpu",
        "-p",
        "output_size:=input",
        "-p",
        "flow.levels:=3",
        "-p",
        "flow.iterations:=3",
        "-p",
        "diagnostics_period:=0.5",
    ]
    log = tmp_path / "node.log"
    run = run_replay(bag=bag, node_args=node_args, rate=0.5, log_path=log)
    outputs = run.outputs
    assert run.node_exit_code == 0, log.read_text()
    stamps = image_stamps(bag)
    assert len(stamps) == FRAMES
    assert outputs, f"no outputs recorded:\n{log.read_text()}"
    assert set(outputs) <= set(stamps)
    assert stamps[-1] in outputs  # keep-latest never drops the last frame
    for stamp, by_topic in outputs.items():
        assert set(by_topic) == set(OUTPUT_TOPICS), (stamp, sorted(by_topic))
        assert {run.frame_ids[t][stamp] for t in OUTPUT_TOPICS} == {"camera_left_optical_frame"}
        assert by_topic["depth"].shape == (H, W) and by_topic["motion/overlay"].shape == (H, W, 3)
    diagnostics = run.diagnostics
    assert int(diagnostics["frames_processed"]) == len(outputs)
    assert int(diagnostics["frames_received"]) == FRAMES
    assert int(diagnostics["frames_dropped"]) == FRAMES - len(outputs)

    truth = read_ground_truth(bag)
    scores = evaluate(outputs, truth)
    (gt_stamp,) = truth
    assert scores["frames_evaluated"] == 1 and gt_stamp == stamps[-1]
    for task, classes in (("semantic", 5), ("motion", 2)):
        oracle = MulticlassJaccardIndex(classes, average="none", ignore_index=255)
        per_class = oracle(
            torch.tensor(outputs[gt_stamp][task], dtype=torch.long),
            torch.tensor(truth[gt_stamp][task], dtype=torch.long),
        )
        present = [v is not None for v in scores[f"{task}_iou_per_class"]]
        np.testing.assert_allclose(
            [v for v in scores[f"{task}_iou_per_class"] if v is not None],
            per_class.numpy()[present],
            rtol=1e-6,
        )
    assert 0 <= scores["depth_ard"] and np.isfinite(scores["depth_ard"])


def test_replay_names_a_node_that_fails_to_start(bag, tmp_path):
    """An impossible parameter: run_replay raises at once with the node's own message, not after a timeout."""
    log = tmp_path / "node.log"
    began = time.monotonic()
    with pytest.raises(RuntimeError, match=r"(?s)exited with [1-9].*network_height"):
        run_replay(bag=bag, node_args=["-p", "network_height:=100"], log_path=log, startup_timeout=120)
    assert time.monotonic() - began < 100
