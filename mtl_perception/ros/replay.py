"""Replay evaluation: bag -> play_bag -> node -> recorded outputs -> metrics against the bag's ground truth.

The same metric code as training (``mtl_perception.metrics``) scores what the node really published, so a
replay number and a validation number mean the same thing. Pieces:

* :func:`read_ground_truth` reads ``/gt/depth``, ``/gt/semantic``, ``/gt/motion`` from the bag (rosbags);
* :class:`OutputRecorder` subscribes to the node's outputs over DDS and keeps them by input stamp;
* :func:`evaluate` scores recorded outputs against ground truth with the same stamp;
* :func:`run_replay` starts the node and ``play_bag`` as processes and returns the recorder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.metrics import ConfusionMatrix, DepthARD
from mtl_perception.ros.conversions import image_fields_to_array

GT_TOPICS = {"depth": "/gt/depth", "semantic": "/gt/semantic", "motion": "/gt/motion"}
OUTPUT_TOPICS = ("depth", "semantic", "motion", "semantic/color", "motion/overlay", "depth/camera_info")


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


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


class OutputRecorder:
    """Records the node's outputs (arrays for images, messages for camera_info) by input stamp, over DDS."""

    def __init__(self, namespace: str = "/", topics=OUTPUT_TOPICS) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image

        self._rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"replay_recorder_{uuid.uuid4().hex[:8]}", context=self.context)
        self.lock = threading.Lock()
        self.outputs: dict[int, dict] = {}
        self.headers: dict[tuple[str, int], str] = {}
        self.diagnostics: list = []
        namespace = namespace.rstrip("/")
        for topic in topics:
            msg_type = CameraInfo if topic.endswith("camera_info") else Image
            self.node.create_subscription(msg_type, f"{namespace}/{topic}", self._recorder(topic), 50)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _recorder(self, topic: str):
        def record(msg) -> None:
            value = msg if topic.endswith("camera_info") else image_fields_to_array(msg)
            stamp = stamp_ns(msg.header)
            with self.lock:
                self.outputs.setdefault(stamp, {})[topic] = value
                self.headers[(topic, stamp)] = msg.header.frame_id

        return record

    def _on_diagnostics(self, msg) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def diagnostic_values(self, name_part: str = "mtl_perception") -> dict[str, str]:
        """Key/values of the latest /diagnostics status whose name contains ``name_part``."""
        with self.lock:
            for array in reversed(self.diagnostics):
                for status in array.status:
                    if name_part in status.name:
                        return {kv.key: kv.value for kv in status.values}
        return {}

    def wait_quiet(self, quiet: float = 2.0, timeout: float = 60.0) -> None:
        """Return once no new output stamp arrived for ``quiet`` seconds (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self.lock:
                count = sum(len(v) for v in self.outputs.values())
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                return
            time.sleep(0.1)

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)


def console_script(name: str) -> str:
    """Path of one of this package's console scripts next to the running interpreter (venv) or on PATH."""
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH (pip install -e .)")
    return path


def run_replay(
    bag: str | Path,
    node_args: list[str],
    rate: float = 0.5,
    namespace: str | None = None,
    startup_timeout: float = 90.0,
    log_path: str | Path | None = None,
) -> tuple[OutputRecorder, dict]:
    """Start the node (``node_args`` after ``--ros-args``), play ``bag`` into it, record its outputs.

    Returns the recorder (still open: call ``close()``) and a summary with the node's exit code and log.
    """
    namespace = namespace or f"/mtl_replay_{uuid.uuid4().hex[:8]}"
    command = [
        console_script("mtl_perception_node"),
        "--ros-args",
        "-r",
        f"__ns:={namespace}",
        "-r",
        "image:=/camera/image_raw",
        "-r",
        "camera_info:=/camera/camera_info",
        *node_args,
    ]
    log_file = open(log_path, "w") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed below
    node = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT)
    recorder = OutputRecorder(namespace)
    try:
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline and recorder.node.count_publishers(f"{namespace}/depth") == 0:
            if node.poll() is not None:
                raise RuntimeError(f"mtl_perception_node exited with {node.returncode} during startup")
            time.sleep(0.1)
        player = subprocess.run(
            [
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
            ],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if player.returncode != 0:
            raise RuntimeError(f"play_bag failed ({player.returncode}): {player.stderr[-2000:]}")
        recorder.wait_quiet()
        time.sleep(1.0)  # one more diagnostics period
        diagnostics = recorder.diagnostic_values()
    except BaseException:
        recorder.close()
        raise
    finally:
        if node.poll() is None:
            node.send_signal(signal.SIGINT)
            try:
                node.wait(timeout=20)
            except subprocess.TimeoutExpired:
                node.kill()
                node.wait()
        if log_path:
            log_file.close()
    return recorder, {"node_exit_code": node.returncode, "namespace": namespace, "diagnostics": diagnostics}
