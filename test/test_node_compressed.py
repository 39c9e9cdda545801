"""The node as a process over DDS, fed CompressedImage by ``play_bag`` from a rosbags-written MCAP bag of real
footage: every good frame comes out with its recorded stamp; bad data (truncated JPEG, 0 bytes, an unknown
codec, a lone size change) is dropped, counted and named; gaps, a stamp going back and a lasting size change
restart the flow history, and the node says so."""

import cv2
import pytest
from camera_bags import jpeg_pillow, png_opencv, real_frames, write_camera_bag

pytest.importorskip("rclpy")
from mtl_perception.ros.replay import run_replay  # noqa: E402

pytestmark = pytest.mark.ros
STEP = 10**9 // 15
SMALL_NODE = [
    "--params-file", "config/params.yaml",
    "-p", "image_transport:=compressed",
    "-p", "network_height:=96", "-p", "network_width:=192",
    "-p", "model_file:=untrained", "-p", "model_preset:=lite",
    "-p", "backend:=onnxruntime", "-p", "device:=cpu",
    "-p", "flow.levels:=3", "-p", "flow.iterations:=3",
    "-p", "error_throttle:=0.0", "-p", "diagnostics_period:=0.5",
]  # fmt: skip


def test_compressed_bag_through_the_node(tmp_path):
    f = real_frames(12)
    small = [cv2.resize(x, (128, 60), interpolation=cv2.INTER_AREA) for x in f]
    t0 = 1_700_000_000 * 10**9
    jpeg = "rgb8; jpeg compressed bgr8"
    frames = [
        (t0, "jpeg", jpeg_pillow(f[0]), "ok"),
        (t0 + STEP, jpeg, jpeg_pillow(f[1]), "ok"),
        (t0 + 2 * STEP, "png", png_opencv(f[2]), "ok"),
        (t0 + 3 * STEP, jpeg, jpeg_pillow(f[3])[:4000], "truncated JPEG"),
        (t0 + 4 * STEP, jpeg, b"", "0 bytes of image data"),
        (t0 + 5 * STEP, "h264", b"\x00\x00\x00\x01\x67" * 20, "unsupported compressed format 'h264'"),
        (t0 + 3 * 10**9, jpeg, jpeg_pillow(f[4]), "gap"),  # a pause: the flow restarts
        (t0 + 3 * 10**9 + STEP, jpeg, jpeg_pillow(f[5]), "ok"),
        (t0 + 3 * 10**9 - STEP, jpeg, jpeg_pillow(f[6]), "stamp did not increase"),
        (t0 + 4 * 10**9, jpeg, jpeg_pillow(small[7]), "size changed mid-stream"),  # a lone glitch: dropped
        (t0 + 4 * 10**9 + STEP, jpeg, jpeg_pillow(f[8]), "ok"),
        (t0 + 4 * 10**9 + 2 * STEP, jpeg, jpeg_pillow(small[9]), "size changed mid-stream"),
        (t0 + 4 * 10**9 + 3 * STEP, jpeg, jpeg_pillow(small[10]), "image size or encoding changed"),
        (t0 + 4 * 10**9 + 4 * STEP, "png", png_opencv(small[11]), "ok"),
    ]
    bag = tmp_path / "robot_bag"
    write_camera_bag(bag, [x[:3] for x in frames], storage="mcap", log_step_ns=2 * 10**8)
    log = tmp_path / "node.log"
    run = run_replay(bag=bag, node_args=SMALL_NODE, rate=0.5, log_path=log)
    text = log.read_text()
    assert run.node_exit_code == 0, text
    processed = ("ok", "gap", "stamp did not increase", "image size or encoding changed")
    good = [stamp for stamp, _, _, what in frames if what in processed]
    bad = [what for _, _, _, what in frames if what not in processed]
    assert sorted(run.outputs) == sorted(good), text  # every good frame, none of the bad ones
    for stamp in good:
        assert run.frame_ids["depth"][stamp] == "cam"
    values = run.diagnostics
    assert values["image_transport"] == "compressed" and values["image_decoder"] == "cv2"
    assert int(values["frames_received"]) == len(frames)
    assert int(values["frames_rejected"]) == len(bad) and int(values["frames_processed"]) == len(good)
    assert int(values["resets"]) == 4  # the first frame, the gap, the stamp going back, the new size
    assert values["last_reset"] == "image size or encoding changed"
    for what in bad:
        assert what in text, what
    for reason in ("gap 2.", "stamp did not increase", "image size or encoding changed"):
        assert "flow history reset at stamp" in text and reason in text, reason
    assert "/camera/image_raw/compressed (CompressedImage)" in text
