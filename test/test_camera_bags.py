"""Other people's camera bags: rosbags-written sqlite3 and MCAP bags holding CompressedImage (the oracle is
rosbags' own reader), the image-topic choice, and play_bag publishing them with the recorded stamps."""

import os
import subprocess
import sys
import time

import pytest
from camera_bags import COMPRESSED_TOPIC, jpeg_pillow, png_opencv, real_frames, write_camera_bag

from mtl_perception.data.bag_reader import camera_info_topic, choose_image_topic, image_topics, open_bag

STEP = 10**9 // 15


def compressed_frames(count: int = 6):
    frames = real_frames(count)
    return [
        (5 * 10**9 + i * STEP, "rgb8; jpeg compressed bgr8" if i % 2 else "png",
         jpeg_pillow(f) if i % 2 else png_opencv(f))
        for i, f in enumerate(frames)
    ]  # fmt: skip


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_first_image_topic_and_its_camera_info(tmp_path, storage):
    bag = tmp_path / "bag"
    write_camera_bag(bag, compressed_frames(2), storage=storage, extra_topics=True)
    with open_bag(bag) as reader:
        assert image_topics(reader) == {COMPRESSED_TOPIC: "sensor_msgs/msg/CompressedImage"}
        assert choose_image_topic(reader) == (COMPRESSED_TOPIC, "sensor_msgs/msg/CompressedImage")
        with pytest.raises(
            ValueError, match="/imu is not an image topic .* its image topics: /camera/image_raw/c"
        ):
            choose_image_topic(reader, "/imu")
    assert camera_info_topic(COMPRESSED_TOPIC) == "/camera/camera_info"
    assert camera_info_topic("/front/image_rect") == "/front/camera_info"
    assert camera_info_topic("/image_raw/compressed") == "/camera_info"


def test_a_bag_without_images_is_one_line(tmp_path, capsys):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from mtl_perception.ros.play_bag import main

    bag = tmp_path / "imu_only"
    ts = get_typestore(Stores.ROS2_JAZZY)
    with Writer(bag, version=9) as writer:
        writer.add_connection("/imu", "sensor_msgs/msg/Imu", typestore=ts)
    assert main([str(bag), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"play_bag: error: {bag} has no sensor_msgs Image or CompressedImage topic "
        "(/imu (sensor_msgs/msg/Imu))"
    ]


def _play(bag, *args):
    return subprocess.Popen(
        [sys.executable, "-m", "mtl_perception.ros.play_bag", str(bag), "--wait-for-subscribers", "1",
         "--wait-timeout", "15", "--rate", "5", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy(), text=True,
    )  # fmt: skip


@pytest.mark.ros
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_play_bag_publishes_compressed_frames_with_recorded_stamps(tmp_path, storage):
    rclpy = pytest.importorskip("rclpy")
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CompressedImage

    frames = compressed_frames()
    bag = tmp_path / "bag"
    write_camera_bag(bag, frames, storage=storage, extra_topics=True)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("compressed_bag_subscriber", context=context)
    got = []
    node.create_subscription(
        CompressedImage,
        COMPRESSED_TOPIC,
        got.append,
        QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE),
    )
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(node)
    # --start skips the first two frames (0.1 s apart in the bag's recorded time)
    proc = _play(bag, "--start", "0.15")
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(got) < len(frames) - 2:
            executor.spin_once(timeout_sec=0.1)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert proc.returncode == 0, err
    assert f"playing {COMPRESSED_TOPIC} (6 msgs), /camera/camera_info (6 msgs)" in err
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got] == [f[0] for f in frames[2:]]
    assert [m.format for m in got] == [f[1] for f in frames[2:]]
    assert [bytes(m.data) for m in got] == [f[2] for f in frames[2:]]
