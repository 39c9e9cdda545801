"""launch_pytest test of launch/node.launch.py: the launch file starts the node and it answers over DDS.

Needs a ROS 2 Jazzy install with this package built by colcon (the launch file resolves the package share
directory); skipped where launch_pytest is missing (it is not installable from PyPI).
"""

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

launch_pytest = pytest.importorskip(
    "launch_pytest", reason="launch_pytest needs a ROS 2 Jazzy install (not installable from PyPI)"
)
pytest.importorskip("launch_ros", reason="launch_ros needs a ROS 2 Jazzy install (not installable from PyPI)")

import yaml  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from launch_pytest.actions import ReadyToTest  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mtl_perception.ros.conversions import array_to_image_fields  # noqa: E402
from mtl_perception.ros.harness import OutputRecorder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAUNCH_FILE = REPO / "launch" / "node.launch.py"
NAMESPACE = f"mtl_launch_{uuid.uuid4().hex[:8]}"
IMAGE_TOPIC = f"/{NAMESPACE}_camera/image_raw"


@pytest.fixture(scope="module")
def small_params_file(tmp_path_factory) -> Path:
    """The package's params.yaml with a small, fast network (the file is the launch default otherwise)."""
    params = yaml.safe_load((REPO / "config" / "params.yaml").read_text())
    ros_params = params["/**"]["ros__parameters"]
    ros_params.update(
        network_height=96,
        network_width=192,
        model_file="untrained",
        model_preset="lite",
        backend="onnxruntime",
        device="cpu",
        diagnostics_period=0.5,
    )
    ros_params["flow"].update(levels=3, iterations=3)
    path = tmp_path_factory.mktemp("launch") / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


@launch_pytest.fixture(scope="module")
def launch_description(small_params_file):
    include = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)),
        launch_arguments={
            "params_file": str(small_params_file),
            "image_topic": IMAGE_TOPIC,
            "namespace": NAMESPACE,
        }.items(),
    )
    return LaunchDescription([include, ReadyToTest()])


@pytest.mark.launch(fixture=launch_description)
def test_launched_node_publishes_depth_with_the_input_header():
    depth_topic = f"/{NAMESPACE}/depth"
    with OutputRecorder([depth_topic], keep="message", qos=10, name="launch_probe") as probe:
        publisher = probe.node.create_publisher(Image, IMAGE_TOPIC, 10)
        pixels = np.random.default_rng(0).integers(0, 256, (120, 256, 3), dtype=np.uint8)
        msg = Image(**array_to_image_fields(pixels, "rgb8"))
        msg.header.frame_id = "launch_camera"
        msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_000, 42
        deadline = time.monotonic() + 90
        while not probe.outputs[depth_topic] and time.monotonic() < deadline:
            publisher.publish(msg)
            probe.wait_for(lambda: bool(probe.outputs[depth_topic]), timeout=1.0)
        with probe.lock:
            received = list(probe.outputs[depth_topic].values())
        assert received, f"no depth on /{NAMESPACE}/depth within 90 s"
        depth = received[0]
        assert depth.encoding == "32FC1" and (depth.height, depth.width) == (96, 192)
        assert depth.header.frame_id == "launch_camera"
        assert (depth.header.stamp.sec, depth.header.stamp.nanosec) == (1_700_000_000, 42)
