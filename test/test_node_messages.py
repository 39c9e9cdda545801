"""What the installed node says when the model itself goes wrong (issue 12: messages a user can trust)."""

import time
import uuid

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
import torch  # noqa: E402
from contracts import contract_of  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from mtl_perception.model import build_model  # noqa: E402
from mtl_perception.model.checkpoint import save_checkpoint  # noqa: E402
from mtl_perception.ros import harness  # noqa: E402
from mtl_perception.ros.conversions import array_to_image_fields  # noqa: E402

pytestmark = pytest.mark.ros


def test_non_finite_model_output_is_named_as_such_not_as_bad_input(tmp_path):
    model = build_model(preset="lite")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float("nan"))
    checkpoint = save_checkpoint(tmp_path / "nan.pt", model, contract=contract_of(model, size=(96, 192)))
    namespace = f"/mtl_nan_{uuid.uuid4().hex[:6]}"
    log = tmp_path / "node.log"
    args = [
        "-p", f"model_file:={checkpoint}", "-p", "backend:=torch", "-p", "device:=cpu",
        "-p", "network_height:=96", "-p", "network_width:=192", "-p", "warmup:=false",
        "-p", "error_throttle:=0.0",
    ]  # fmt: skip
    with (
        harness.node_process(args, namespace=namespace, log_path=log) as process,
        harness.OutputRecorder(["depth"], namespace=namespace, keep="stamp", name="nan") as recorder,
    ):
        publisher = recorder.node.create_publisher(Image, "image", 10)
        harness.require_node_up(
            lambda: publisher.get_subscription_count() > 0,
            process=process,
            timeout=90,
            waiting_for="subscribe to image",
            log_path=log,
        )
        fields = array_to_image_fields(np.full((120, 160, 3), 128, np.uint8), "rgb8")

        def rejected() -> bool:
            msg = Image(**fields)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
            publisher.publish(msg)
            time.sleep(0.5)
            return int(recorder.diagnostic_values(namespace).get("frames_rejected", 0)) > 0

        assert harness.wait_until(rejected, timeout=60), log.read_text()
        status = [s for a in recorder.diagnostics for s in a.status if namespace in s.name][-1]
        assert "the model produced non-finite output" in status.message
    text = log.read_text()
    assert "the model produced non-finite output, frame dropped" in text, text
    assert "bad input" not in text, text
    assert not recorder.outputs["depth"]  # nothing published from a NaN output
