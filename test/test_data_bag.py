"""cityscapes_to_bag round trip (rosbags AnyReader is the oracle) and play_bag replay through real rclpy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from data_fixtures import CITY, FRAMES, HEIGHT, SEQUENCES, SPLIT, WIDTH, synthetic_root
from rosbags.highlevel import AnyReader

from mtl_perception.data import (
    FrameId,
    cityscapes_path,
    disparity_to_depth,
    label_ids_to_semantic,
    read_camera,
)
from mtl_perception.data.bag import START_TIME_NS, convert, main
from mtl_perception.model.contract import FlowContract
from mtl_perception.pipeline_config import PipelineConfig


def _read_bag(bag: Path):
    out = {}
    with AnyReader([bag]) as reader:
        meta = reader.readers[0].metadata if hasattr(reader.readers[0], "metadata") else None
        for conn, stamp, raw in reader.messages():
            msg = reader.deserialize(raw, conn.msgtype)
            out.setdefault(conn.topic, []).append((stamp, msg))
    return out, meta


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_round_trip(tmp_path, storage):
    root = synthetic_root()
    bag = tmp_path / f"bag_{storage}"
    counts = convert(root, SPLIT, bag, storage=storage, with_gt=True)
    n = SEQUENCES * FRAMES
    assert counts == {
        "/camera/image_raw": n,
        "/camera/camera_info": n,
        "/gt/depth": SEQUENCES,
        "/gt/semantic": SEQUENCES,
        "/gt/motion": SEQUENCES,
    }
    meta = (bag / "metadata.yaml").read_text()
    assert "version: 9" in meta and f"storage_identifier: {storage}" in meta
    msgs, _ = _read_bag(bag)
    images = msgs["/camera/image_raw"]
    assert len(images) == n
    cam = read_camera(cityscapes_path(root, "camera", SPLIT, FrameId(CITY, 0, 19)))
    stamps = []
    for k, (stamp, msg) in enumerate(images):
        seq, frame = divmod(k, FRAMES)
        fid = FrameId(CITY, seq, frame)
        expect = cv2.imread(str(cityscapes_path(root, "image_sequence", SPLIT, fid)))[..., ::-1]
        assert (msg.encoding, msg.height, msg.width, msg.step) == ("rgb8", HEIGHT, WIDTH, WIDTH * 3)
        np.testing.assert_array_equal(msg.data.reshape(HEIGHT, WIDTH, 3), expect)
        assert msg.header.frame_id == "camera_left_optical_frame"
        assert msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec == stamp
        stamps.append(stamp)
    stamps = np.array(stamps)
    steps = np.diff(stamps)
    # 17 Hz inside a snippet (from timestamp_sequence); between snippets (unrelated scenes) a jump longer
    # than the node's default reset gap, so a replay restarts the flow instead of pairing two scenes.
    assert np.all(np.abs(steps[np.arange(len(steps)) % FRAMES != FRAMES - 1] - 1e9 / 17) < 2)
    node_defaults = PipelineConfig()
    flow_dt = FlowContract(size=(HEIGHT, WIDTH)).flow_dt  # the project's partner gap: 2 frames at 17 Hz
    assert steps[FRAMES - 1] > node_defaults.reset_gap_factor * flow_dt * 1e9
    assert stamps[0] == START_TIME_NS
    infos = msgs["/camera/camera_info"]
    assert [s for s, _ in infos] == list(stamps)
    info = infos[0][1]
    assert info.distortion_model == "plumb_bob" and np.all(info.d == 0)
    np.testing.assert_allclose(info.k.reshape(3, 3), cam.K)
    np.testing.assert_allclose(info.p.reshape(3, 4)[:, :3], cam.K)
    # ground truth on the annotated frames, with the image's stamp
    depth_stamp, depth = msgs["/gt/depth"][0]
    assert depth_stamp == stamps[19] and depth.encoding == "32FC1"
    d = depth.data.view(np.float32).reshape(HEIGHT, WIDTH)
    fid = FrameId(CITY, 0, 19)
    disp = cv2.imread(str(cityscapes_path(root, "disparity", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
    ref = disparity_to_depth(disp, cam.fx, cam.baseline)
    np.testing.assert_array_equal(np.isnan(d), ref == 0)
    np.testing.assert_array_equal(d[ref > 0], ref[ref > 0])
    labels = cv2.imread(str(cityscapes_path(root, "label_ids", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
    sem = msgs["/gt/semantic"][0][1]
    np.testing.assert_array_equal(sem.data.reshape(HEIGHT, WIDTH), label_ids_to_semantic(labels, "five"))
    mot = msgs["/gt/motion"][0][1]
    assert set(np.unique(mot.data)) <= {0, 1}
    moving = cv2.imread(str(cityscapes_path(root, "motion", SPLIT, fid)), cv2.IMREAD_UNCHANGED) == 255
    np.testing.assert_array_equal(mot.data.reshape(HEIGHT, WIDTH), moving)


def test_resize_scales_camera_info_and_refuses_overwrite(tmp_path):
    root = synthetic_root()
    bag = tmp_path / "small"
    convert(root, SPLIT, bag, sequence=1, width=WIDTH // 2, height=HEIGHT // 2)
    msgs, _ = _read_bag(bag)
    assert len(msgs["/camera/image_raw"]) == FRAMES
    img = msgs["/camera/image_raw"][0][1]
    assert (img.width, img.height) == (WIDTH // 2, HEIGHT // 2)
    cam = read_camera(cityscapes_path(root, "camera", SPLIT, FrameId(CITY, 1, 19)))
    k = msgs["/camera/camera_info"][0][1].k.reshape(3, 3)
    np.testing.assert_allclose([k[0, 0], k[1, 1]], [cam.fx / 2, cam.fy / 2])
    np.testing.assert_allclose([k[0, 2], k[1, 2]], [(cam.u0 + 0.5) / 2 - 0.5, (cam.v0 + 0.5) / 2 - 0.5])
    before = sorted(p.stat().st_mtime_ns for p in bag.iterdir())
    assert main(["--root", str(root), "--split", SPLIT, "--out", str(bag)]) == 2
    assert sorted(p.stat().st_mtime_ns for p in bag.iterdir()) == before


def test_missing_frames_reported(tmp_path, capsys):
    root = tmp_path / "root"
    src = synthetic_root()
    for sub in ("leftImg8bit_sequence", "camera", "timestamp_sequence", "gtFine", "disparity"):
        shutil.copytree(src / sub, root / sub)
    gap = cityscapes_path(root, "image_sequence", SPLIT, FrameId(CITY, 0, 5))
    gap.unlink()
    for motion in (root / "gtFine").rglob("*_motion.png"):  # like real Cityscapes: no motion GT
        motion.unlink()
    counts = convert(root, SPLIT, tmp_path / "bag", sequence=0, with_gt=True)
    assert counts["/camera/image_raw"] == FRAMES - 1
    assert counts["/gt/depth"] == counts["/gt/semantic"] == 1 and "/gt/motion" not in counts
    err = capsys.readouterr().err
    assert "misses frames [5]" in err and "no motion ground truth" in err
    with pytest.raises(FileNotFoundError, match="no camera file"):
        shutil.rmtree(root / "camera")
        convert(root, SPLIT, tmp_path / "bag2", sequence=0)


def test_unreadable_ground_truth_is_named_and_leaves_no_bag(tmp_path, capsys):
    root = tmp_path / "root"
    src = synthetic_root()
    for sub in ("leftImg8bit_sequence", "camera", "timestamp_sequence", "gtFine", "disparity"):
        shutil.copytree(src / sub, root / sub)
    labels = cityscapes_path(root, "label_ids", SPLIT, FrameId(CITY, 0, 19))
    labels.write_bytes(labels.read_bytes()[:-12])  # truncated: the closing IEND chunk is lost
    out = tmp_path / "out" / "bag"
    with pytest.raises(ValueError, match=f"truncated image: .*{labels.name}"):
        convert(root, SPLIT, out, sequence=0, with_gt=True)
    assert not out.exists() and list((tmp_path / "out").iterdir()) == []
    assert main(["--root", str(root), "--split", SPLIT, "--out", str(out), "--with-gt"]) == 2
    assert labels.name in capsys.readouterr().err and not out.exists()
    disparity = cityscapes_path(root, "disparity", SPLIT, FrameId(CITY, 0, 19))
    cv2.imwrite(
        str(disparity), np.ones((HEIGHT // 2, WIDTH), np.uint16)
    )  # readable, but not the image's size
    labels.write_bytes(cityscapes_path(src, "label_ids", SPLIT, FrameId(CITY, 0, 19)).read_bytes())
    with pytest.raises(ValueError, match=f"depth of .* expected \\({HEIGHT}, {WIDTH}\\): .*{disparity.name}"):
        convert(root, SPLIT, out, sequence=0, with_gt=True)
    assert not out.exists()


def _play_bag_command() -> list[str]:
    exe = Path(sys.executable).with_name("play_bag")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "mtl_perception.ros.play_bag"]


@pytest.mark.ros
def test_replay_through_rclpy(tmp_path):
    """generate -> convert -> play_bag (subprocess) -> a real rclpy subscriber receives every frame."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, Image

    root = synthetic_root()
    bag = tmp_path / "replay"
    convert(root, SPLIT, bag, sequence=0)
    recorded, _ = _read_bag(bag)
    want_stamps = [s for s, _ in recorded["/camera/image_raw"]]
    with AnyReader([bag]) as reader:
        raw_first = next(raw for c, _, raw in reader.messages() if c.topic == "/camera/image_raw")

    rclpy.init()
    node = rclpy.create_node("replay_test_subscriber")
    got: list[Image] = []
    infos: list[CameraInfo] = []
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "/camera/image_raw", got.append, qos)
    node.create_subscription(CameraInfo, "/camera/camera_info", infos.append, qos)
    proc = subprocess.Popen(
        [
            *_play_bag_command(),
            str(bag),
            "--rate",
            "4",
            "--wait-for-subscribers",
            "2",
            "--wait-timeout",
            "15",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
        text=True,
    )
    try:
        deadline = time.monotonic() + 35
        while time.monotonic() < deadline and (len(got) < FRAMES or len(infos) < FRAMES):
            rclpy.spin_once(node, timeout_sec=0.1)
        out, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    assert proc.returncode == 0, err
    assert "published 60 messages" in err
    assert len(got) == FRAMES and len(infos) == FRAMES
    assert [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in got] == want_stamps
    first = cv2.imread(str(cityscapes_path(root, "image_sequence", SPLIT, FrameId(CITY, 0, 0))))[..., ::-1]
    np.testing.assert_array_equal(np.asarray(got[0].data, np.uint8).reshape(HEIGHT, WIDTH, 3), first)
    # the bag's raw CDR is exactly what rclpy itself serializes: publishing raw bytes is lossless
    assert serialize_message(got[0]) == bytes(raw_first)


@pytest.mark.ros
def test_play_bag_topics_filter_and_loop(tmp_path):
    """--topics plays only the chosen topic; --loop repeats the bag until SIGINT ends play_bag cleanly."""
    import signal

    rclpy = pytest.importorskip("rclpy")
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    bag = tmp_path / "loop"
    convert(synthetic_root(), SPLIT, bag, sequence=1)
    rclpy.init()
    node = rclpy.create_node("loop_test_subscriber")
    images: list[Image] = []
    infos: list[CameraInfo] = []
    qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
    node.create_subscription(Image, "/camera/image_raw", images.append, qos)
    node.create_subscription(CameraInfo, "/camera/camera_info", infos.append, qos)
    proc = subprocess.Popen(
        [
            *_play_bag_command(),
            str(bag),
            "--topics",
            "/camera/camera_info",
            "--loop",
            "--rate",
            "10",
            "--wait-for-subscribers",
            "1",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=os.environ.copy(),
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(infos) < FRAMES + 5:
            rclpy.spin_once(node, timeout_sec=0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        node.destroy_node()
        rclpy.try_shutdown()
    assert len(infos) >= FRAMES + 5 and not images
    stamps = [m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for m in infos]
    assert stamps[FRAMES] == stamps[0]  # the second pass replays the same recorded stamps
    assert proc.returncode in (0, 130), err
    assert "Traceback" not in err


def test_long_sequences_split_into_snippets(tmp_path):
    """Frames 0-29 and 100-129 of one sequence (as in some Cityscapes cities) are two snippets."""
    from mtl_perception.data.bag import find_snippets

    src = synthetic_root()
    root = tmp_path / "root"
    for sub in ("leftImg8bit_sequence", "camera"):
        (root / sub / SPLIT / CITY).mkdir(parents=True)
    for f in range(FRAMES):
        for seq, offset in ((0, 0), (1, 100)):
            a = cityscapes_path(src, "image_sequence", SPLIT, FrameId(CITY, seq, f))
            shutil.copy(a, cityscapes_path(root, "image_sequence", SPLIT, FrameId(CITY, 7, f + offset)))
    for seq, offset in ((0, 0), (1, 100)):
        shutil.copy(
            cityscapes_path(src, "camera", SPLIT, FrameId(CITY, seq, 19)),
            cityscapes_path(root, "camera", SPLIT, FrameId(CITY, 7, 19 + offset)),
        )
    snippets = find_snippets(root, SPLIT)
    assert [(s.seq, s.frames[0], s.frames[-1]) for s in snippets] == [(7, 0, 29), (7, 100, 129)]
    counts = convert(root, SPLIT, tmp_path / "bag", fps=17.0)
    assert counts["/camera/image_raw"] == 2 * FRAMES
    msgs, _ = _read_bag(tmp_path / "bag")
    stamps = np.array([s for s, _ in msgs["/camera/image_raw"]])
    assert np.diff(stamps)[FRAMES - 1] >= 1e9 and np.all(np.diff(stamps)[: FRAMES - 1] < 1e8)
