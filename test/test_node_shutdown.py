"""How the installed node ends: quietly after Ctrl-C while streaming, promptly when signalled in warm-up."""

import os
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from sensor_msgs.msg import Image  # noqa: E402

from mtl_perception.ros import harness  # noqa: E402
from mtl_perception.ros.conversions import array_to_image_fields  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
PARAMS = ["--params-file", str(REPO / "config" / "params.yaml"), "-p", "model_file:=untrained"]
SMALL = [
    "-p", "model_file:=untrained",
    "-p", "model_preset:=lite", "-p", "network_height:=96", "-p", "network_width:=192",
]  # fmt: skip
#: what a normal exit must never print
ALARMING = ("unexpected error", "Failed to publish", "context is invalid", "rosout", "Traceback", "[ERROR]")


def test_ctrl_c_while_streaming_exits_0_without_alarming_messages(tmp_path):
    namespace = f"/mtl_stop_{uuid.uuid4().hex[:6]}"
    log = tmp_path / "node.log"
    process = harness.start_node([*PARAMS, *SMALL], namespace=namespace, log_path=log)
    recorder = harness.OutputRecorder(["depth"], namespace=namespace, keep="stamp", name="stop")
    stop_streaming = threading.Event()
    try:
        publisher = recorder.node.create_publisher(Image, "image", 10)
        harness.require_node_up(
            lambda: publisher.get_subscription_count() > 0,
            process=process,
            timeout=90,
            waiting_for="subscribe to image",
            log_path=log,
        )
        fields = array_to_image_fields(np.zeros((240, 320, 3), np.uint8), "rgb8")

        def stream():
            while not stop_streaming.is_set():
                msg = Image(**fields)
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
                publisher.publish(msg)
                time.sleep(0.05)

        streamer = threading.Thread(target=stream, daemon=True)
        streamer.start()
        assert recorder.wait_for(lambda: len(recorder.outputs["depth"]) >= 3, timeout=60), log.read_text()
        process.send_signal(signal.SIGINT)  # while frames keep arriving and the worker is busy
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        stop_streaming.set()
        harness.stop_process(process)
        recorder.close()
    text = log.read_text()
    assert not [word for word in ALARMING if word in text], text


def test_a_signal_during_warm_up_ends_the_process_at_once(tmp_path):
    """The default ti network at 384x768 warms up for seconds here; SIGTERM in it must not wait for it."""
    process = subprocess.Popen(
        harness.node_command(PARAMS, namespace=f"/mtl_warm_{uuid.uuid4().hex[:6]}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # each log line as it is written: the test signals when it reads "warming up"
        env={**os.environ, "RCUTILS_LOGGING_BUFFERED_STREAM": "0"},
    )
    lines = []
    try:
        for line in process.stdout:
            lines.append(line)
            if "warming up the pipeline" in line:
                break
        assert any("warming up" in line for line in lines), "".join(lines)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        harness.stop_process(process)
    text = "".join(lines) + output
    assert process.returncode == 0, text
    assert "ready:" not in text and "warm-up took" not in text, text  # it did not finish the warm-up first
    assert not [word for word in ALARMING if word in text], text
