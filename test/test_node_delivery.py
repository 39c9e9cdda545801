"""Every camera frame reaches the node in its default configuration, over real DDS (issue 12).

The installed ``mtl_perception_node`` starts as ``ros2 run`` starts it (the packaged params.yaml, nothing
set in its environment but this test run's domain and discovery range); a default rclpy publisher in
this process (reliable, keep last 10, Fast DDS defaults: the shared-memory transport included) sends
1280x720 rgb8 frames at 4 Hz. Without the node's own transport profile the same run delivered 2-6 of 20
frames (docs/benchmarks.md); the node's ``frames_received`` must now count every one. The module's node
also shows that a gap in the input stamps is reported as loss in /diagnostics.
"""

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mtl_perception.ros import harness  # noqa: E402
from mtl_perception.ros.conversions import array_to_image_fields  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
# a small network: this test is about delivery, not the model (frames still go through the pipeline)
SMALL = [
    "-p", "model_file:=untrained",
    "-p", "model_preset:=lite", "-p", "network_height:=96", "-p", "network_width:=192",
    "-p", "flow.levels:=2", "-p", "flow.iterations:=2", "-p", "diagnostics_period:=0.5",
]  # fmt: skip
FRAMES, RATE = 20, 4.0


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    namespace = f"/mtl_delivery_{uuid.uuid4().hex[:8]}"
    log = tmp_path_factory.mktemp("delivery") / "node.log"
    args = ["--params-file", str(REPO / "config" / "params.yaml"), *SMALL]
    with harness.node_process(args, namespace=namespace, log_path=log, stop_timeout=20) as process:
        recorder = harness.OutputRecorder([], namespace=namespace, name="delivery")
        try:
            publishers = {
                "reliable": recorder.node.create_publisher(Image, "image", 10),  # rclpy's default QoS
                "best_effort": recorder.node.create_publisher(Image, "image", qos_profile_sensor_data),
            }
            harness.require_node_up(
                lambda: recorder.node.count_subscribers(f"{namespace}/image") > 0
                and bool(recorder.diagnostic_values(namespace)),
                process=process,
                timeout=90,
                waiting_for=f"subscribe to {namespace}/image and publish /diagnostics",
                log_path=log,
            )
            yield recorder, publishers, namespace, log
        finally:
            recorder.close()
    assert process.returncode == 0, harness.log_tail(log)


def received(recorder, namespace) -> int:
    return int(recorder.diagnostic_values(namespace).get("frames_received", 0))


def send(publisher, frames: int, rate: float, stamps_s, size=(720, 1280)) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    fields = array_to_image_fields(pixels, "rgb8")
    for i in range(frames):
        msg = Image(**fields)
        msg.header.frame_id = "delivery_camera"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(int(stamps_s[i] * 1e9), 10**9)
        publisher.publish(msg)
        time.sleep(1.0 / rate)


@pytest.mark.parametrize("publisher_qos", ["reliable", "best_effort"])
def test_default_node_receives_every_1280x720_frame_of_a_default_publisher(node, publisher_qos):
    recorder, publishers, namespace, log = node
    publisher = publishers[publisher_qos]
    assert harness.wait_until(lambda: publisher.get_subscription_count() > 0, timeout=20)
    time.sleep(1.0)  # both sides matched (discovery runs both ways)
    before = received(recorder, namespace)
    start = time.time()
    send(publisher, FRAMES, RATE, [start + i / RATE for i in range(FRAMES)])
    recorder.wait_for(lambda: False, timeout=2.0)  # two more diagnostics periods
    assert harness.wait_until(lambda: received(recorder, namespace) - before >= FRAMES, timeout=10), (
        f"{publisher_qos} publisher: the node received {received(recorder, namespace) - before} of "
        f"{FRAMES} frames:\n{harness.log_tail(log)}"
    )
    values = recorder.diagnostic_values(namespace)
    assert received(recorder, namespace) - before == FRAMES
    # the conftest keeps DDS on this host: the node runs its profile with localhost discovery
    assert "UDPv4 only" in values["transport"] and "localhost discovery" in values["transport"]


def test_stamp_gaps_are_reported_as_input_loss(node):
    """Frames 12-14 of a 10 Hz stamp sequence never sent: /diagnostics counts 3 lost and says WARN."""
    recorder, publishers, namespace, _ = node
    base = 1_800_000_000.0  # far from the other test's stamps: a pause, not loss
    stamps = [base + i * 0.1 for i in range(12)] + [base + i * 0.1 for i in range(15, 22)]
    lost_before = int(recorder.diagnostic_values(namespace).get("frames_lost", 0))
    send(publishers["reliable"], len(stamps), 8.0, stamps, size=(120, 160))

    def lost() -> int:
        return int(recorder.diagnostic_values(namespace).get("frames_lost", 0)) - lost_before

    assert harness.wait_until(lambda: lost() >= 3, timeout=10), recorder.diagnostic_values(namespace)
    assert lost() == 3
    with recorder.lock:
        messages = [s.message for a in recorder.diagnostics for s in a.status if namespace in s.name]
    assert any(m.startswith("losing input frames before the node") for m in messages), messages[-5:]
    assert float(recorder.diagnostic_values(namespace)["input_period_ms"]) == pytest.approx(100.0, rel=0.05)
