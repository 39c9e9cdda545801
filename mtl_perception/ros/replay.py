"""Replay evaluation: bag -> play_bag -> node -> recorded outputs -> metrics against the bag's ground truth.

The same metric code as training (``mtl_perception.metrics``) scores what the node really published, so a
replay number and a validation number mean the same thing. Pieces:

* :func:`read_ground_truth` reads ``/gt/depth``, ``/gt/semantic``, ``/gt/motion`` from the bag (rosbags);
* :func:`evaluate` scores recorded outputs against ground truth with the same stamp;
* :func:`run_replay` starts the node and ``play_bag`` as processes, records the node's outputs with
  :class:`mtl_perception.ros.harness.OutputRecorder` and returns them as a :class:`ReplayRun`.

Why this is in the runtime package and not beside the benchmarks: scoring a model on one's own bag, as the
deployed node sees it, is a user tool (``benchmarks/evaluate_replay.py`` is only its command line), and it
is imported by that script and by the tests from wherever they run, which an installed module allows and a
script folder does not. It is in ``ros/`` because it talks DDS; the node itself never imports it, so the
runtime carries it without depending on it.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mtl_perception.metrics import ConfusionMatrix, DepthARD
from mtl_perception.ros.conversions import image_fields_to_array
from mtl_perception.ros.harness import (
    OutputRecorder,
    console_script,
    node_process,
    require_node_up,
    stamp_ns,
)

GT_TOPICS = {"depth": "/gt/depth", "semantic": "/gt/semantic", "motion": "/gt/motion"}
OUTPUT_TOPICS = ("depth", "semantic", "motion", "semantic/color", "motion/overlay", "depth/camera_info")
#: where a bag written by cityscapes_to_bag carries the camera; the replayed node is remapped onto it
CAMERA_REMAPS = ("-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info")


def read_ground_truth(bag: str | Path) -> dict[int, dict[str, np.ndarray]]:
    """{image stamp (ns): {"depth" | "semantic" | "motion": array}} from a bag written with --with-gt."""
    from rosbags.highlevel import AnyReader

    bag = Path(bag)
    if not (bag / "metadata.yaml").is_file():
        raise FileNotFoundError(f"not a rosbag2 directory (no metadata.yaml): {bag}")
    truth: dict[int, dict[str, np.ndarray]] = {}
    with AnyReader([bag]) as reader:
        by_topic = {topic: key for key, topic in GT_TOPICS.items()}
        connections = [c for c in reader.connections if c.topic in by_topic]
        if not connections:
            raise ValueError(f"{bag} has no ground truth topics {sorted(by_topic)} (write it with --with-gt)")
        for connection, _, raw in reader.messages(connections=connections):
            msg = reader.deserialize(raw, connection.msgtype)
            truth.setdefault(stamp_ns(msg.header), {})[by_topic[connection.topic]] = image_fields_to_array(
                msg
            )
    return truth


def image_stamps(bag: str | Path, topic: str = "/camera/image_raw") -> list[int]:
    """Header stamps of the bag's camera images, in bag order."""
    from rosbags.highlevel import AnyReader

    with AnyReader([Path(bag)]) as reader:
        connections = [c for c in reader.connections if c.topic == topic]
        return [
            stamp_ns(reader.deserialize(raw, c.msgtype).header) for c, _, raw in reader.messages(connections)
        ]


def _to_size(array: np.ndarray, shape: tuple[int, int], nearest: bool) -> np.ndarray:
    if array.shape[:2] == tuple(shape):
        return array
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(array, (shape[1], shape[0]), interpolation=interpolation)


def evaluate(outputs: dict[int, dict], truth: dict[int, dict], num_classes: int = 5) -> dict:
    """Depth ARD, semantic and motion mIoU over frames present in both (predictions resized to GT size)."""
    ard, semantic, motion = DepthARD(), ConfusionMatrix(num_classes), ConfusionMatrix(2)
    frames = sorted(set(outputs) & set(truth))
    for stamp in frames:
        pred, gt = outputs[stamp], truth[stamp]
        if "depth" in pred and "depth" in gt:
            ard.update(_to_size(pred["depth"], gt["depth"].shape, nearest=False), gt["depth"])
        if "semantic" in pred and "semantic" in gt:
            semantic.update(_to_size(pred["semantic"], gt["semantic"].shape, nearest=True), gt["semantic"])
        if "motion" in pred and "motion" in gt:
            motion.update(_to_size(pred["motion"], gt["motion"].shape, nearest=True), gt["motion"])
    return {
        "frames_with_ground_truth": len(truth),
        "frames_evaluated": len(frames),
        "depth_ard": ard.compute(),
        "semantic_miou": semantic.miou(),
        "semantic_iou_per_class": [None if np.isnan(v) else float(v) for v in semantic.iou()],
        "motion_miou": motion.miou(),
        "motion_iou_per_class": [None if np.isnan(v) else float(v) for v in motion.iou()],
    }


@dataclass(frozen=True)
class ReplayRun:
    """What one replay recorded: outputs as {stamp: {topic: array}} (camera_info as the message), the
    frame_id of each output as {topic: {stamp: frame_id}}, the node's exit code after SIGINT, its namespace
    and its last /diagnostics values."""

    outputs: dict[int, dict[str, Any]]
    frame_ids: dict[str, dict[int, str]]
    node_exit_code: int
    namespace: str
    diagnostics: dict[str, str]


def play_bag_command(bag: str | Path, *, rate: float) -> list[str]:
    """``play_bag`` for a replay: waits for the node's subscription, then plays quietly at ``rate``."""
    return [
        console_script("play_bag"),
        str(bag),
        "--rate",
        str(rate),
        "--wait-for-subscribers",
        "1",
        "--wait-timeout",
        "30",
        # Discovery is not symmetric: the player's writer can match the node's reader before the
        # reader has matched the writer, and a best-effort first frame would then be lost.
        "--start-delay",
        "1.0",
        "--quiet",
    ]


def run_replay(
    *,
    bag: str | Path,
    node_args: list[str],
    rate: float = 0.5,
    namespace: str | None = None,
    startup_timeout: float = 90.0,
    log_path: str | Path | None = None,
) -> ReplayRun:
    """Start the node (``node_args`` after ``--ros-args``), play ``bag`` into it, record its outputs.

    Raises RuntimeError (with the end of the node log, if ``log_path`` is given) when the node exits or
    does not advertise its outputs within ``startup_timeout`` s, or when ``play_bag`` fails.
    """
    namespace = namespace or f"/mtl_replay_{uuid.uuid4().hex[:8]}"
    recorder = OutputRecorder(OUTPUT_TOPICS, namespace=namespace, name="replay_recorder")
    try:
        with node_process([*CAMERA_REMAPS, *node_args], namespace=namespace, log_path=log_path) as node:
            require_node_up(
                lambda: recorder.node.count_publishers(f"{namespace}/depth") > 0,
                process=node,
                timeout=startup_timeout,
                waiting_for=f"advertise {namespace}/depth",
                log_path=log_path,
            )
            player = subprocess.run(
                play_bag_command(bag, rate=rate), capture_output=True, text=True, timeout=600
            )
            if player.returncode != 0:
                raise RuntimeError(f"play_bag failed ({player.returncode}): {player.stderr[-2000:]}")
            recorder.wait_quiet()
            time.sleep(1.0)  # one more diagnostics period
            # by namespace: other nodes on the same domain publish /diagnostics too
            diagnostics = recorder.diagnostic_values(namespace)
        outputs = recorder.by_stamp()
        with recorder.lock:
            frame_ids = {topic: dict(ids) for topic, ids in recorder.frame_ids.items()}
    finally:
        recorder.close()
    return ReplayRun(
        outputs=outputs,
        frame_ids=frame_ids,
        node_exit_code=node.returncode,
        namespace=namespace,
        diagnostics=diagnostics,
    )


def node_arguments(
    *,
    params_file: str | Path,
    model_file: str = "",
    preset: str = "ti",
    backend: str = "auto",
    device: str = "auto",
    network_size: tuple[int, int] = (0, 0),
    extra: tuple[str, ...] | list[str] = (),
) -> list[str]:
    """The node's arguments for a scored replay: ``params_file`` plus these overrides, outputs published at
    the camera (= ground-truth) resolution, as TI evaluates. ``model_file`` "" is the shipped model."""
    args = ["--params-file", str(params_file)]
    for name, value in [
        ("model_file", model_file),
        ("model_preset", preset),
        ("backend", backend),
        ("device", device),
        ("network_height", network_size[0]),
        ("network_width", network_size[1]),
        ("output_size", "input"),
    ]:
        args += ["-p", f"{name}:={value}" if value != "" else f'{name}:=""']
    for item in extra:
        args += ["-p", item]
    return args


def score_replay(
    *, bag: str | Path, node_args: list[str], rate: float = 0.25, log_path: str | Path | None = None
) -> dict:
    """Replay ``bag`` through the node and score what it published against the bag's ground truth.

    Returns :func:`evaluate`'s metrics plus the frame counts, the node's exit code, its model label (from
    /diagnostics) and its last diagnostics. Raises RuntimeError when the node or the player fails.
    """
    truth = read_ground_truth(bag)
    stamps = image_stamps(bag)
    run = run_replay(bag=bag, node_args=node_args, rate=rate, log_path=log_path)
    result = evaluate(run.outputs, truth)
    result.update(
        bag=str(bag),
        model=run.diagnostics.get("model", ""),
        images_in_bag=len(stamps),
        frames_with_outputs=len(run.outputs),
        node_exit_code=run.node_exit_code,
        diagnostics=run.diagnostics,
    )
    return result
