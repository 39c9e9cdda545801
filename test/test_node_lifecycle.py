"""``mtl_perception_lifecycle_node`` driven through its lifecycle_msgs services over real DDS.

configure loads the model (no topics yet), activate subscribes and publishes, deactivate removes the
topics, activate again works, cleanup drops the model, a configure that cannot load its model fails and
leaves the node unconfigured, shutdown finalizes it, and the process still exits 0 on SIGINT.
"""

import time
import uuid
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
lifecycle_msgs = pytest.importorskip("lifecycle_msgs")
from lifecycle_msgs.msg import State, Transition  # noqa: E402
from lifecycle_msgs.srv import ChangeState, GetState  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mtl_perception.ros import harness  # noqa: E402
from mtl_perception.ros.conversions import array_to_image_fields  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
ARGS = [
    "--params-file", str(REPO / "config" / "params.yaml"),
    "-p", "model_file:=untrained",
    "-p", "model_preset:=lite", "-p", "network_height:=96", "-p", "network_width:=192",
    "-p", "flow.levels:=2", "-p", "flow.iterations:=2",
]  # fmt: skip
EXECUTABLE = "mtl_perception_lifecycle_node"


class Manager:
    """The lifecycle services of one node, called from the recorder's node (its executor spins)."""

    def __init__(self, recorder: harness.OutputRecorder, node_name: str) -> None:
        self.recorder = recorder
        self.get = recorder.node.create_client(GetState, f"{node_name}/get_state")
        self.change = recorder.node.create_client(ChangeState, f"{node_name}/change_state")

    def _call(self, client, request, timeout: float = 120.0):
        assert client.wait_for_service(timeout_sec=60.0), f"no service {client.srv_name}"
        future = client.call_async(request)
        deadline = time.monotonic() + timeout
        while not future.done() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert future.done(), f"{client.srv_name}: no answer in {timeout} s"
        return future.result()

    def state(self) -> int:
        return self._call(self.get, GetState.Request()).current_state.id

    def transition(self, transition_id: int) -> bool:
        return self._call(self.change, ChangeState.Request(transition=Transition(id=transition_id))).success


def frame(stamp_ns: int) -> Image:
    msg = Image(
        **array_to_image_fields(np.random.default_rng(0).integers(0, 256, (120, 160, 3), np.uint8), "rgb8")
    )
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    return msg


def test_transitions_over_the_lifecycle_services(tmp_path):
    namespace = f"/mtl_life_{uuid.uuid4().hex[:6]}"
    broken_namespace = f"{namespace}_broken"
    log, broken_log = tmp_path / "node.log", tmp_path / "broken.log"
    broken_args = [*ARGS, "-p", f"model_file:={tmp_path / 'missing.onnx'}"]
    with (
        harness.node_process(ARGS, namespace=namespace, log_path=log, executable=EXECUTABLE) as process,
        harness.node_process(
            broken_args, namespace=broken_namespace, log_path=broken_log, executable=EXECUTABLE
        ),
        harness.OutputRecorder(["depth"], namespace=namespace, keep="stamp", name="manager") as recorder,
    ):
        manager = Manager(recorder, f"{namespace}/mtl_perception")
        image = recorder.node.create_publisher(Image, "image", 10)
        image_topic, depth_topic = f"{namespace}/image", f"{namespace}/depth"

        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED, log.read_text()
        assert recorder.node.count_subscribers(image_topic) == 0

        assert manager.transition(Transition.TRANSITION_CONFIGURE), log.read_text()
        assert manager.state() == State.PRIMARY_STATE_INACTIVE
        assert "warm-up took" in log.read_text()  # the model is loaded and warm before activation
        assert recorder.node.count_subscribers(image_topic) == 0
        assert recorder.node.count_publishers(depth_topic) == 0

        for round_ in range(2):  # activate, deactivate, and once more: the topics come back
            assert manager.transition(Transition.TRANSITION_ACTIVATE), log.read_text()
            assert manager.state() == State.PRIMARY_STATE_ACTIVE
            assert harness.wait_until(lambda: image.get_subscription_count() > 0, timeout=20)
            stamp = 1_700_000_000_000_000_000 + round_ * 10**9

            def arrived(stamp=stamp) -> bool:
                image.publish(frame(stamp))
                return recorder.wait_for(lambda: stamp in recorder.outputs["depth"], timeout=1.0)

            assert harness.wait_until(arrived, timeout=30), log.read_text()
            assert manager.transition(Transition.TRANSITION_DEACTIVATE)
            assert manager.state() == State.PRIMARY_STATE_INACTIVE
            assert harness.wait_until(lambda: recorder.node.count_subscribers(image_topic) == 0, timeout=10)
            assert harness.wait_until(lambda: recorder.node.count_publishers(depth_topic) == 0, timeout=10)

        assert manager.transition(Transition.TRANSITION_CLEANUP)
        assert manager.state() == State.PRIMARY_STATE_UNCONFIGURED

        broken = Manager(recorder, f"{broken_namespace}/mtl_perception")
        assert not broken.transition(Transition.TRANSITION_CONFIGURE)
        assert broken.state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "configure failed" in broken_log.read_text() and "missing.onnx" in broken_log.read_text()

        assert manager.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert manager.state() == State.PRIMARY_STATE_FINALIZED
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()
