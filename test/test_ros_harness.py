"""mtl_perception.ros.harness: stopping a child (clean SIGINT exit, kill of a hung one), readiness polling
that gives up when the process dies, and the OutputRecorder's records over real rclpy."""

import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from mtl_perception.ros import harness

SIGINT_EXITS_CLEANLY = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGINT, lambda *_: sys.exit(0))\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
SIGINT_IGNORED = (
    "import signal, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)


def start(script: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"  # its handler is installed
    return process


def test_stop_process_returns_the_clean_exit_code_after_sigint():
    process = start(SIGINT_EXITS_CLEANLY)
    assert harness.stop_process(process, timeout=10) == 0


def test_stop_process_kills_a_process_that_ignores_sigint():
    process = start(SIGINT_IGNORED)
    began = time.monotonic()
    assert harness.stop_process(process, timeout=0.5) == -9
    assert time.monotonic() - began < 10


def test_stop_process_leaves_an_exited_process_alone():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    assert harness.stop_process(process) == 3


def test_wait_until_gives_up_as_soon_as_the_process_exits():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    began = time.monotonic()
    assert not harness.wait_until(lambda: False, timeout=60, process=process)
    assert time.monotonic() - began < 30
    assert harness.wait_until(lambda: True, timeout=0, process=process)  # ready wins over an exit


def test_require_node_up_names_the_exit_code_or_what_was_not_seen(tmp_path):
    log = tmp_path / "node.log"
    with open(log, "w") as sink:
        dead = subprocess.Popen(
            [sys.executable, "-c", "print('bad parameter xyz'); raise SystemExit(2)"], stdout=sink
        )
    with pytest.raises(RuntimeError, match=r"(?s)exited with 2 during startup.*bad parameter xyz"):
        harness.require_node_up(lambda: False, process=dead, timeout=60, waiting_for="x", log_path=log)
    alive = start(SIGINT_EXITS_CLEANLY)
    try:
        with pytest.raises(RuntimeError, match="did not advertise /ns/depth within 0.2 s"):
            harness.require_node_up(
                lambda: False, process=alive, timeout=0.2, waiting_for="advertise /ns/depth"
            )
    finally:
        harness.stop_process(alive)


def test_console_script_names_what_is_missing():
    with pytest.raises(FileNotFoundError, match="no_such_script_xyz"):
        harness.console_script("no_such_script_xyz")


@pytest.mark.ros
@pytest.mark.parametrize("keep", ["array", "message", "stamp"])
def test_recorder_keeps_each_message_by_topic_and_stamp(keep):
    rclpy = pytest.importorskip("rclpy")
    from sensor_msgs.msg import CameraInfo, Image

    from mtl_perception.ros.conversions import array_to_image_fields

    namespace = f"/harness_{uuid.uuid4().hex[:8]}"
    pixels = np.arange(4 * 6, dtype=np.float32).reshape(4, 6)
    stamps = [1_700_000_000_000_000_001, 1_700_000_000_500_000_002]
    context = rclpy.Context()
    rclpy.init(context=context)
    publisher_node = rclpy.create_node("harness_publisher", namespace=namespace, context=context)
    try:
        with harness.OutputRecorder(
            ["depth", "depth/camera_info"], namespace=namespace, keep=keep
        ) as recorder:
            depth = publisher_node.create_publisher(Image, "depth", 10)
            info = publisher_node.create_publisher(CameraInfo, "depth/camera_info", 10)
            assert harness.wait_until(
                lambda: depth.get_subscription_count() > 0 and info.get_subscription_count() > 0, timeout=20
            )
            for stamp in stamps:
                msg = Image(**array_to_image_fields(pixels, "32FC1"))
                msg.header.frame_id = "harness_camera"
                msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 10**9)
                camera = CameraInfo(width=6, height=4)
                camera.header = msg.header
                depth.publish(msg)
                info.publish(camera)

            def everything_arrived() -> bool:
                return all(len(recorder.outputs[t]) == len(stamps) for t in recorder.outputs)

            assert recorder.wait_for(everything_arrived, timeout=20)
            grouped = recorder.by_stamp()
    finally:
        publisher_node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert sorted(grouped) == stamps
    assert recorder.frame_ids == {t: dict.fromkeys(stamps, "harness_camera") for t in recorder.outputs}
    # latency = receive wall time - stamp: these stamps lie in 2023, so it is large and positive
    assert all(len(v) == len(stamps) and min(v) > 0 for v in recorder.latency_ms.values())
    for stamp in stamps:
        value, camera = grouped[stamp]["depth"], grouped[stamp]["depth/camera_info"]
        if keep == "stamp":
            assert value is None and camera is None
        elif keep == "array":
            np.testing.assert_array_equal(value, pixels)
            assert (camera.width, camera.height) == (6, 4)  # non-image messages are kept whole
        else:
            assert value.encoding == "32FC1" and (value.height, value.width) == (4, 6)
            assert (camera.width, camera.height) == (6, 4)


def test_recorder_rejects_an_unknown_keep_mode():
    pytest.importorskip("rclpy")
    with pytest.raises(ValueError, match="keep must be one of"):
        harness.OutputRecorder(["depth"], keep="everything")


@pytest.mark.ros
def test_recorder_diagnostics_filter_by_status_name():
    """Stage means average every matching status ('nan' skipped); values come from the latest match only."""
    rclpy = pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    def status(name: str, **values: str) -> DiagnosticStatus:
        return DiagnosticStatus(name=name, values=[KeyValue(key=k, value=v) for k, v in values.items()])

    ours, other = f"/ns_{uuid.uuid4().hex[:6]}/mtl_perception_node: pipeline", "/elsewhere/node: pipeline"
    arrays = [
        DiagnosticArray(status=[status(ours, stage_flow_ms="10.0", backend="a")]),
        DiagnosticArray(status=[status(other, stage_flow_ms="1000.0", backend="x")]),
        DiagnosticArray(status=[status(ours, stage_flow_ms="20.0", stage_network_ms="nan", backend="b")]),
    ]
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("harness_diagnostics", context=context)
    try:
        with harness.OutputRecorder([], keep="stamp") as recorder:
            publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
            assert harness.wait_until(lambda: publisher.get_subscription_count() > 0, timeout=20)
            for array in arrays:
                publisher.publish(array)
            # >=: another run that drew the same ROS domain may publish /diagnostics too (filtered out below)
            assert recorder.wait_for(lambda: len(recorder.diagnostics) >= len(arrays), timeout=20)
            means = recorder.stage_means(ours.split("/mtl")[0])
            latest = recorder.diagnostic_values(ours.split("/mtl")[0])
    finally:
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    assert means == {"flow": 15.0}
    assert latest == {"stage_flow_ms": "20.0", "stage_network_ms": "nan", "backend": "b"}
