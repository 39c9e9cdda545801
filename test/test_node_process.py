"""The installed ``mtl_perception_node`` executable over real DDS (rclpy here, Fast DDS on loopback).

One node process (lite preset, 96x192, ONNX Runtime on the CPU) serves the whole module; frames are
published one at a time from this process with best-effort and reliable publishers and the outputs are
checked against the inputs (encodings, sizes, headers, camera_info scaling, diagnostics, bad input).
"""

import signal
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image  # noqa: E402

from mtl_perception.ros import harness  # noqa: E402
from mtl_perception.ros.conversions import array_to_image_fields, image_fields_to_array  # noqa: E402

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
PARAMS_FILE = REPO / "config" / "params.yaml"
NET_H, NET_W = 96, 192
IN_H, IN_W = 120, 256
SMALL = [
    "-p",
    f"network_height:={NET_H}",
    "-p",
    f"network_width:={NET_W}",
    "-p",
    "model_file:=untrained",
    "-p",
    "model_preset:=lite",
    "-p",
    "backend:=onnxruntime",
    "-p",
    "device:=cpu",
    "-p",
    "flow.levels:=3",
    "-p",
    "flow.iterations:=3",
    "-p",
    "flow.winsize:=15",
    "-p",
    "flow.poly_sigma:=1.2",
]
OUTPUTS = {
    "depth": "32FC1",
    "depth/color": "rgb8",
    "semantic": "mono8",
    "semantic/color": "rgb8",
    "motion": "mono8",
    "motion/overlay": "rgb8",
    "flow": "32FC2",
}


def node_args(*extra: str) -> list[str]:
    return ["--params-file", str(PARAMS_FILE), *SMALL, *extra]


def node_command(*extra: str) -> list[str]:
    return harness.node_command(node_args(*extra))


def make_image(stamp_ns: int, frame_id: str = "test_camera", seed: int = 0, **change) -> Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (IN_H, IN_W, 3), dtype=np.uint8)
    msg = Image(**array_to_image_fields(pixels, "rgb8"))
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    msg.header.frame_id = frame_id
    for key, value in change.items():
        setattr(msg, key, value)
    return msg


def make_camera_info(stamp_ns: int) -> CameraInfo:
    info = CameraInfo(width=IN_W, height=IN_H, distortion_model="plumb_bob", d=[0.0] * 5)
    info.k = [200.0, 0.0, 128.0, 0.0, 210.0, 60.0, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [200.0, 0.0, 128.0, -20.0, 0.0, 210.0, 60.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.header.stamp.sec, info.header.stamp.nanosec = divmod(stamp_ns, 10**9)
    info.header.frame_id = "test_camera"
    return info


def stamp_ns(msg) -> int:
    return harness.stamp_ns(msg.header)


class Probe(harness.OutputRecorder):
    """Test-side rclpy node: publishes frames, records every output message by topic and stamp."""

    def __init__(self, namespace: str) -> None:
        best_effort = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
        super().__init__(
            [*OUTPUTS, "depth/camera_info"],
            namespace=namespace,
            keep="message",
            qos=10,
            qos_overrides={"depth/camera_info": best_effort},
            name="probe",
        )
        best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)
        self.image_best_effort = self.node.create_publisher(Image, "image", best_effort)
        self.image_reliable = self.node.create_publisher(Image, "image", 10)
        self.camera_info = self.node.create_publisher(CameraInfo, "camera_info", 10)

    def wait(self, predicate, timeout: float) -> bool:
        return self.wait_for(predicate, timeout)

    def all_outputs(self, stamp: int, topics=None) -> bool:
        return all(stamp in self.outputs[t] for t in (topics or self.outputs))


@pytest.fixture(scope="module")
def running_node(tmp_path_factory):
    namespace = f"/mtl_test_{uuid.uuid4().hex[:8]}"
    log = tmp_path_factory.mktemp("node") / "node.log"
    args = node_args(
        "-p",
        "publish_flow:=true",
        "-p",
        "diagnostics_period:=0.5",
        "-p",
        "error_throttle:=0.0",
        "-p",
        "palette_rgb:=[0x804080, 0x4682B4, 0xDC143C, 0x00008E, 0x000000]",
        "-p",
        f"qos_overrides.{namespace}/depth/camera_info.publisher.reliability:=best_effort",
    )
    with harness.node_process(args, namespace=namespace, log_path=log, stop_timeout=15) as process:
        probe = Probe(namespace)
        try:
            # ready when the node has subscribed to our image topic and every output has a publisher
            ready = harness.wait_until(
                lambda: (
                    probe.image_reliable.get_subscription_count() > 0
                    and all(probe.node.count_publishers(f"{namespace}/{t}") > 0 for t in OUTPUTS)
                ),
                timeout=60,
                process=process,
            )
            assert ready, f"node did not come up:\n{log.read_text()}"
            yield process, probe, log
        finally:
            probe.close()
    print(log.read_text())
    assert process.returncode == 0, "the node did not exit cleanly on SIGINT"


def send_and_wait(
    probe: Probe, msg: Image, publisher=None, topics=None, timeout: float = 30.0, info=None
) -> bool:
    """Publish `msg` (repeatedly, in case the first sample races discovery) until its outputs arrive."""
    publisher = publisher or probe.image_best_effort
    stamp = stamp_ns(msg)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if info is not None:
            probe.camera_info.publish(info)
            time.sleep(0.1)
        publisher.publish(msg)
        if probe.wait(lambda: probe.all_outputs(stamp, topics), timeout=3.0):
            return True
    return False


def test_outputs_carry_input_header_encodings_and_sizes(running_node):
    _, probe, log = running_node
    stamp = 1_700_000_000_123_456_789
    ok = send_and_wait(probe, make_image(stamp), info=make_camera_info(stamp))
    missing = [topic for topic, by_stamp in probe.outputs.items() if stamp not in by_stamp]
    assert ok, f"no outputs on {missing} for the frame:\n{log.read_text()}"
    for topic, encoding in OUTPUTS.items():
        msg = probe.outputs[topic][stamp]
        assert msg.encoding == encoding, topic
        assert (msg.height, msg.width) == (NET_H, NET_W), topic
        assert msg.header.frame_id == "test_camera" and stamp_ns(msg) == stamp, topic
        assert len(msg.data) == msg.step * msg.height
    depth = image_fields_to_array(probe.outputs["depth"][stamp])
    assert depth.dtype == np.float32 and np.all(np.isnan(depth) | (depth > 0))
    semantic = image_fields_to_array(probe.outputs["semantic"][stamp])
    assert semantic.max() < 5
    palette = np.array([[0x80, 0x40, 0x80], [0x46, 0x82, 0xB4], [0xDC, 0x14, 0x3C], [0, 0, 0x8E], [0, 0, 0]])
    color = image_fields_to_array(probe.outputs["semantic/color"][stamp])
    np.testing.assert_array_equal(color, palette[semantic])
    assert set(np.unique(image_fields_to_array(probe.outputs["motion"][stamp]))) <= {0, 1}
    flow = image_fields_to_array(probe.outputs["flow"][stamp])
    assert flow.shape == (NET_H, NET_W, 2) and np.isfinite(flow).all()

    info = probe.outputs["depth/camera_info"][stamp]
    sx, sy = NET_W / IN_W, NET_H / IN_H
    assert (info.width, info.height) == (NET_W, NET_H) and info.header.frame_id == "test_camera"
    np.testing.assert_allclose(info.k, [200 * sx, 0, 128 * sx, 0, 210 * sy, 60 * sy, 0, 0, 1])
    np.testing.assert_allclose(info.p, [200 * sx, 0, 128 * sx, -20 * sx, 0, 210 * sy, 60 * sy, 0, 0, 0, 1, 0])


def test_qos_defaults_and_parameter_overrides(running_node):
    """Input best effort (takes reliable and best-effort cameras), outputs reliable; overridable."""
    from rclpy.qos import DurabilityPolicy

    # the override in the fixture: depth/camera_info published best effort (the probe subscribes best effort)
    _, probe, _ = running_node
    namespace = probe.node.get_namespace()
    (image_sub,) = probe.node.get_subscriptions_info_by_topic(f"{namespace}/image")
    assert image_sub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT
    (depth_pub,) = probe.node.get_publishers_info_by_topic(f"{namespace}/depth")
    assert depth_pub.qos_profile.reliability == ReliabilityPolicy.RELIABLE
    assert depth_pub.qos_profile.durability == DurabilityPolicy.VOLATILE
    (info_pub,) = probe.node.get_publishers_info_by_topic(f"{namespace}/depth/camera_info")
    assert info_pub.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT


def test_reliable_publisher_is_accepted_and_flow_partner_used(running_node):
    _, probe, log = running_node
    base = 1_700_000_100_000_000_000
    step = 10**9 // 17  # 17 Hz: the partner of frame 2 is frame 0 (flow_dt = 2/17 s)
    for i in range(3):
        msg = make_image(base + i * step, seed=i)
        assert send_and_wait(probe, msg, probe.image_reliable, topics=["depth", "flow"]), log.read_text()
    flow = image_fields_to_array(probe.outputs["flow"][base + 2 * step])
    assert np.abs(flow).sum() > 0  # a real partner: the flow of random frames is not all zero


def test_bad_frames_are_dropped_with_a_named_error_and_node_recovers(running_node):
    process, probe, log = running_node
    base = 1_700_000_200_000_000_000
    bad = [
        make_image(base + 1, data=bytes(10)),  # truncated
        make_image(base + 2, encoding="yuv422"),  # unsupported
        make_image(base + 3, height=0, width=0, step=0, data=b""),  # zero size
    ]
    for msg in bad:
        probe.image_reliable.publish(msg)
        time.sleep(0.4)
    good = make_image(base + 10, seed=5)
    assert send_and_wait(probe, good, probe.image_reliable, topics=["depth", "semantic", "motion"])
    assert process.poll() is None
    for msg in bad:
        assert stamp_ns(msg) not in probe.outputs["depth"]
    text = log.read_text()
    assert "data length 10 != step*height" in text
    assert "unsupported image encoding 'yuv422'" in text
    assert "zero-size image" in text


def test_diagnostics_report_counters_rates_and_stages(running_node):
    _, probe, _ = running_node

    def latest():
        for array in reversed(probe.diagnostics):
            for status in array.status:
                if "mtl_perception" in status.name:
                    values = {kv.key: kv.value for kv in status.values}
                    if (
                        int(values.get("frames_processed", 0)) >= 1
                        and int(values.get("frames_rejected", 0)) >= 3
                    ):
                        return status, values
        return None

    assert probe.wait(lambda: latest() is not None, timeout=20), (
        "no diagnostics with processed and rejected frames"
    )
    status, values = latest()
    for key in [
        "input_rate_hz",
        "output_rate_hz",
        "latency_receive_to_publish_ms",
        "latency_stamp_to_publish_ms",
        "stage_convert_ms",
        "stage_flow_ms",
        "stage_network_ms",
        "stage_publish_ms",
        "frames_received",
        "frames_processed",
        "frames_dropped",
        "frames_rejected",
        "resets",
        "backend",
        "device",
    ]:
        assert key in values, key
    assert values["backend"].startswith("onnxruntime") and values["device"] == "cpu"
    assert values["model"].startswith("UNTRAINED seeded 'lite' model")  # model_file:=untrained, labelled
    assert int(values["frames_received"]) >= int(values["frames_processed"]) + int(values["frames_rejected"])
    assert status.hardware_id


def test_sigterm_during_operation_shuts_down_cleanly(tmp_path):
    process = subprocess.Popen(
        node_command("-r", f"__ns:=/mtl_sig_{uuid.uuid4().hex[:6]}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if "ready:" in line or not line:
            break
    assert any("ready:" in line for line in lines), "".join(lines)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0, process.stdout.read()


def test_startup_errors_exit_nonzero_with_a_clear_message(tmp_path):
    """Impossible parameters, a missing and a corrupt model file: message naming the cause, exit code != 0."""
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"this is not an onnx model")
    cases = [
        (["-p", "model_file:=/nonexistent/model.onnx"], "not found"),
        (["-p", f"model_file:={corrupt}"], "corrupt.onnx"),
        (["-p", "network_height:=100"], "network_height"),
        (["-p", "output_size:=full"], "output_size"),
        (["--params-file", "/nope/params.yaml"], "/nope/params.yaml"),  # refused by rcl itself
        (["-p", "depth_color.near:=90.0"], "depth_color.near"),
    ]
    # all at once: each start pays the torch import, so running them side by side saves most of the time
    processes = [
        subprocess.Popen(node_command(*args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for args, _ in cases
    ]
    for process, (args, cause) in zip(processes, cases, strict=True):
        output, _ = process.communicate(timeout=120)
        assert process.returncode != 0, (args, output)
        assert cause in output, (args, output)
        assert "Traceback" not in output, (args, output)


def test_depth_color_is_the_documented_colour_map_of_depth(running_node):
    from mtl_perception.colormap import colorize_depth

    _, probe, log = running_node
    stamp = 1_700_000_300_000_000_000
    assert send_and_wait(probe, make_image(stamp, seed=7), topics=["depth", "depth/color"]), log.read_text()
    depth = image_fields_to_array(probe.outputs["depth"][stamp])
    color = image_fields_to_array(probe.outputs["depth/color"][stamp])
    np.testing.assert_array_equal(color, colorize_depth(depth, near=1.0, far=80.0))  # params.yaml range


def test_diagnostics_level_returns_to_ok_after_rejected_frames(running_node):
    """WARN follows the recent window: after a rejected frame and good ones, the level is OK again."""
    from diagnostic_msgs.msg import DiagnosticStatus

    _, probe, log = running_node
    base = 1_700_000_400_000_000_000
    probe.image_reliable.publish(make_image(base, encoding="yuv422"))
    time.sleep(0.6)
    count = len(probe.diagnostics)
    for i in range(1, 4):
        good = make_image(base + i * 10**8, seed=i)
        assert send_and_wait(probe, good, probe.image_reliable, topics=["depth"])

    def ok_after(count=count) -> bool:
        return any(
            status.level == DiagnosticStatus.OK and "mtl_perception" in status.name
            for array in probe.diagnostics[count:]
            for status in array.status
        )

    assert probe.wait(ok_after, timeout=10), [s.message for a in probe.diagnostics[-4:] for s in a.status]
    assert int(probe.diagnostic_values()["frames_rejected"]) >= 1  # the total still counts it
