"""Flow PNG codecs (KITTI 16-bit, TI 8-bit), the Middlebury colour wheel and to_gray against cv2."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from mtl_perception.flow import flow_to_color, read_flow_png, read_ti_flow_png, to_gray, write_flow_png
from mtl_perception.flow.codecs import write_ti_flow_png


def _random_flow(h=33, w=47, scale=30.0, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (h, w, 2)) * scale).astype(np.float32), rng.uniform(0, 1, (h, w)).astype(
        np.float32
    )


def test_kitti_png_round_trip_and_channel_order(tmp_path):
    flow, conf = _random_flow()
    flow[0, 0] = (-511.9, 511.9)
    path = write_flow_png(tmp_path / "f.png", flow, conf)
    back, conf_back = read_flow_png(path)
    assert back.dtype == np.float32 and back.shape == flow.shape
    assert np.abs(back - flow).max() <= 1 / 128 + 1e-6
    assert np.abs(conf_back - conf).max() <= 0.5 / 65535 + 1e-7
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)  # BGR on disk order -> R is channel 2
    assert raw.dtype == np.uint16
    np.testing.assert_array_equal(
        raw[..., 2], np.rint(flow[..., 0].astype(np.float64) * 64 + 2**15).astype(np.uint16)
    )
    np.testing.assert_array_equal(
        raw[..., 1], np.rint(flow[..., 1].astype(np.float64) * 64 + 2**15).astype(np.uint16)
    )
    _, conf_none = read_flow_png(write_flow_png(tmp_path / "g.png", flow))
    assert (conf_none == 1.0).all()


def test_writer_refuses_to_overwrite_and_rejects_bad_flow(tmp_path):
    flow, conf = _random_flow()
    path = write_flow_png(tmp_path / "f.png", flow, conf)
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        write_flow_png(path, flow * 0, conf)
    assert path.read_bytes() == before
    write_flow_png(path, flow * 0, conf, overwrite=True)
    assert np.abs(read_flow_png(path)[0]).max() == 0
    with pytest.raises(ValueError, match="range"):
        write_flow_png(tmp_path / "big.png", flow * 100)
    with pytest.raises(ValueError, match="NaN"):
        write_flow_png(tmp_path / "nan.png", np.full((4, 4, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="HxWx2"):
        write_flow_png(tmp_path / "bad.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="confidence"):
        write_flow_png(tmp_path / "c.png", flow, conf * 2)
    with pytest.raises(ValueError, match=".png"):
        write_flow_png(tmp_path / "f.jpg", flow)
    with pytest.raises(FileNotFoundError):
        write_flow_png(tmp_path / "missing_dir" / "f.png", flow)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.png"]  # no temporary files left behind


def test_readers_reject_missing_and_wrong_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_flow_png(tmp_path / "none.png")
    cv2.imwrite(str(tmp_path / "eight.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="16-bit"):
        read_flow_png(tmp_path / "eight.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="readable"):
        read_flow_png(tmp_path / "junk.png")
    cv2.imwrite(str(tmp_path / "sixteen.png"), np.zeros((4, 4, 3), np.uint16))
    with pytest.raises(ValueError, match="8-bit"):
        read_ti_flow_png(tmp_path / "sixteen.png", 4.0)


def test_ti_8bit_reader_on_hand_made_image(tmp_path):
    """TI layout in RGB order: R = 128 + s·u, G = 128 + s·v, B = confidence·255."""
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[..., 0] = [[128, 132, 120], [255, 0, 128]]
    rgb[..., 1] = [[128, 124, 136], [128, 128, 129]]
    rgb[..., 2] = [[255, 0, 51], [128, 255, 102]]
    cv2.imwrite(str(tmp_path / "ti.png"), rgb[..., ::-1])
    flow, conf = read_ti_flow_png(tmp_path / "ti.png", scale=4.0)
    np.testing.assert_allclose(flow[..., 0], [[0, 1, -2], [31.75, -32, 0]])
    np.testing.assert_allclose(flow[..., 1], [[0, -1, 2], [0, 0, 0.25]])
    np.testing.assert_allclose(conf, [[1, 0, 0.2], [128 / 255, 1, 0.4]], atol=1e-6)
    f, c = _random_flow(scale=7.0)
    write_ti_flow_png(tmp_path / "rt.png", f, c, scale=4.0)
    back, cback = read_ti_flow_png(tmp_path / "rt.png", scale=4.0)
    assert np.abs(back - f).max() <= 0.125 + 1e-6 and np.abs(cback - c).max() <= 0.5 / 255 + 1e-6
    with pytest.raises(ValueError, match="scale"):
        read_ti_flow_png(tmp_path / "rt.png", scale=0)


def test_flow_to_color_wheel():
    assert (flow_to_color(np.zeros((3, 4, 2), np.float32)) == 255).all()  # zero flow is white
    directions = np.array([[[1, 0], [0, 1], [-1, 0], [0, -1]]], np.float32)  # right, down, left, up
    colors = flow_to_color(directions, max_magnitude=1.0)[0]
    # Hand-computed from the Middlebury wheel (RY15 YG6 GC4 CB11 BM13 MR6): wheel[0] (atan2(-0., -1) = -pi),
    # mean of wheel[13] and wheel[14], wheel[27], mean of wheel[40] and wheel[41].
    np.testing.assert_array_equal(colors, [[255, 0, 0], [255, 229, 0], [0, 209, 255], [88, 0, 255]])
    half = flow_to_color(directions * 0.5, max_magnitude=1.0)[0]
    assert (half >= colors).all() and (half[:, :] > 100).all()  # half magnitude: paler, same hue
    beyond = flow_to_color(directions * 2, max_magnitude=1.0)[0]
    assert np.abs(beyond.astype(float) - colors * 0.75).max() <= 1.0  # beyond the max: darkened to 75 %
    with pytest.raises(ValueError, match="HxWx2"):
        flow_to_color(np.zeros((2, 2)))


def test_to_gray_bit_exact_with_cv2():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (67, 81, 3), dtype=np.uint8)
    np.testing.assert_array_equal(to_gray(img, "bgr"), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(to_gray(img, "rgb"), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    t = torch.from_numpy(img)
    np.testing.assert_array_equal(to_gray(t, "rgb").numpy(), cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
    nchw = t.permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    out = to_gray(nchw, "bgr")
    assert out.shape == (2, 1, 67, 81) and out.dtype == torch.uint8
    np.testing.assert_array_equal(out[1, 0].numpy(), cv2.cvtColor(img, cv2.COLOR_BGR2GRAY))
    f = img.astype(np.float32) * 0.731
    np.testing.assert_allclose(to_gray(f, "bgr"), cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), atol=1e-4)
    np.testing.assert_allclose(
        to_gray(torch.from_numpy(f), "rgb").numpy(), cv2.cvtColor(f, cv2.COLOR_RGB2GRAY), atol=1e-4
    )
    with pytest.raises(ValueError, match="order"):
        to_gray(img, "gbr")
    with pytest.raises(ValueError, match="HxWx3"):
        to_gray(img[..., :2])


def test_flow_tool_on_files_and_demo(tmp_path):
    from mtl_perception.flow.synthetic import make_pair

    prev, nxt, _ = make_pair("coffee", 96, 128, 2.0)
    cv2.imwrite(str(tmp_path / "a.png"), prev)
    cv2.imwrite(str(tmp_path / "b.png"), nxt)
    cmd = [
        sys.executable,
        "-m",
        "mtl_perception.flow.cli",
        str(tmp_path / "a.png"),
        str(tmp_path / "b.png"),
        "--out",
        str(tmp_path / "flow.png"),
        "--color",
        str(tmp_path / "color.png"),
        "--params",
        "common",
    ]
    env_threads = {"OMP_NUM_THREADS": "1"}
    import os

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **env_threads})
    assert done.returncode == 0, done.stderr
    flow, conf = read_flow_png(tmp_path / "flow.png")
    ref = cv2.calcOpticalFlowFarneback(
        cv2.cvtColor(prev, cv2.COLOR_BGR2GRAY),
        cv2.cvtColor(nxt, cv2.COLOR_BGR2GRAY),
        None,
        0.5,
        3,
        15,
        3,
        5,
        1.2,
        0,
    )
    assert np.abs(flow - ref).max() <= 1 / 128 + 1e-3
    assert cv2.imread(str(tmp_path / "color.png")).shape == (96, 128, 3)
    again = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **env_threads}
    )
    assert again.returncode != 0 and "exists" in again.stderr
    demo_cmd = [
        sys.executable,
        "-m",
        "mtl_perception.flow.cli",
        "--demo",
        "--out",
        str(tmp_path / "demo"),
        "--size",
        "96x128",
        "--params",
        "common",
    ]
    demo = subprocess.run(
        demo_cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **env_threads}
    )
    assert demo.returncode == 0, demo.stderr
    import json

    stats = json.loads(demo.stdout)
    assert stats["epe_vs_cv2_mean"] < 1e-3
    assert abs(stats["epe_vs_ground_truth"] - stats["cv2_epe_vs_ground_truth"]) < 1e-3
    assert (tmp_path / "demo" / "flow_color.png").is_file() and (tmp_path / "demo" / "flow.png").is_file()
