"""Synthetic generator and Cityscapes layout/labels/depth: layout, determinism, official label ids, and the
self-consistency of the ground truth with the images (cv2 Farnebäck and cv2.remap are the oracles)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label
from data_fixtures import CITY, FRAMES, HEIGHT, SEQUENCES, SPLIT, WIDTH, synthetic_root

from mtl_perception.data import (
    FrameId,
    cityscapes_path,
    disparity_to_depth,
    five_class_table,
    label_ids_to_semantic,
    read_camera,
    semantic_palette,
)
from mtl_perception.data.cityscapes import FLOW_FOLDER
from mtl_perception.data.synthetic import (
    cityscapes_like_camera,
    generate,
    main,
    make_scene,
    render_frame,
    rigid_flow_from_depth,
)
from mtl_perception.model import FlowContract


def test_layout_and_names():
    root = synthetic_root()
    for seq in range(SEQUENCES):
        seq_imgs = sorted(
            (root / "leftImg8bit_sequence" / SPLIT / CITY).glob(f"{CITY}_{seq:06d}_*_leftImg8bit.png")
        )
        assert [FrameId.parse(p).frame for p in seq_imgs] == list(range(FRAMES))
        ann = FrameId(CITY, seq, 19)
        for kind in ("image", "label_ids", "motion", "disparity", "camera"):
            assert cityscapes_path(root, kind, SPLIT, ann).is_file(), kind
        for f in range(FRAMES):
            fid = FrameId(CITY, seq, f)
            veh = json.loads(cityscapes_path(root, "vehicle", SPLIT, fid).read_text())
            assert {"speed", "yawRate", "gpsHeading", "gpsLatitude", "gpsLongitude"} <= set(veh)
            ts = int(cityscapes_path(root, "timestamp", SPLIT, fid).read_text())
            assert abs(ts - round(f * 1e9 / 17.0)) <= 1
        img = cv2.imread(str(cityscapes_path(root, "image", SPLIT, ann)))
        assert img.shape == (HEIGHT, WIDTH, 3)
        seq_img = cv2.imread(str(cityscapes_path(root, "image_sequence", SPLIT, ann)))
        np.testing.assert_array_equal(img, seq_img)
    # only annotated frames carry gtFine (as in Cityscapes)
    assert len(list((root / "gtFine" / SPLIT / CITY).glob("*_gtFine_labelIds.png"))) == SEQUENCES


def test_ground_truth_values_are_official_cityscapes_ids():
    root = synthetic_root()
    ann = FrameId(CITY, 0, 19)
    lab = cv2.imread(str(cityscapes_path(root, "label_ids", SPLIT, ann)), cv2.IMREAD_UNCHANGED)
    assert lab.dtype == np.uint8
    names = {id2label[int(i)].name for i in np.unique(lab)}
    assert {"road", "sidewalk", "building", "sky", "car"} <= names
    assert names <= {
        "road",
        "sidewalk",
        "building",
        "pole",
        "traffic sign",
        "vegetation",
        "terrain",
        "sky",
        "person",
        "car",
    }
    motion = cv2.imread(str(cityscapes_path(root, "motion", SPLIT, ann)), cv2.IMREAD_UNCHANGED)
    assert set(np.unique(motion)) <= {0, 255} and (motion == 255).any()
    # moving pixels belong to objects that can move (cars, people), never to the static world
    moving_ids = {id2label[int(i)].name for i in np.unique(lab[motion == 255])}
    assert moving_ids <= {"car", "person"}
    disp = cv2.imread(str(cityscapes_path(root, "disparity", SPLIT, ann)), cv2.IMREAD_UNCHANGED)
    assert disp.dtype == np.uint16
    sky = lab == 23
    assert (disp[sky] == 0).all() and (disp[~sky] > 0).all()


def test_generation_is_deterministic_and_refuses_overwrite(tmp_path):
    args = [
        "--split",
        "train",
        "--sequences",
        "1",
        "--frames",
        "3",
        "--height",
        "48",
        "--width",
        "96",
        "--seed",
        "7",
    ]
    assert main(["--out", str(tmp_path / "a"), *args]) == 0
    assert main(["--out", str(tmp_path / "b"), *args]) == 0
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 3 * 3 + 6
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    before = {rel: (tmp_path / "a" / rel).read_bytes() for rel in files_a}
    assert main(["--out", str(tmp_path / "a"), *args[:-1], "8"]) == 2  # refuses, touches nothing
    assert {rel: (tmp_path / "a" / rel).read_bytes() for rel in files_a} == before
    assert main(["--out", str(tmp_path / "a"), *args[:-1], "8", "--overwrite"]) == 0
    changed = [r for r in files_a if (tmp_path / "a" / r).read_bytes() != before[r]]
    assert any(r.suffix == ".png" for r in changed)  # another seed, another world: --overwrite replaced it


def test_overwrite_removes_the_flow_of_the_replaced_frames(tmp_path):
    """make_flow_dataset counts an existing flow PNG as done; after --overwrite renders another world, the
    old world's flow must not survive to be paired with the new images."""
    make_flow_dataset = pytest.importorskip("mtl_perception_training.make_flow_dataset").make_flow_dataset
    options = {"sequences": 1, "frames": 3, "height": 48, "width": 96, "show_progress": False}
    flow = {"flow": FlowContract(size=(48, 96)), "device": "cpu", "show_progress": False}
    generate(tmp_path, "train", seed=7, **options)
    assert make_flow_dataset(tmp_path, "train", **flow)["computed"] == 1
    old_flow = sorted((tmp_path / FLOW_FOLDER / "train").rglob("*.png"))
    assert len(old_flow) == 1
    old_bytes = old_flow[0].read_bytes()
    generate(tmp_path, "train", seed=8, overwrite=True, **options)
    assert not old_flow[0].exists()
    assert make_flow_dataset(tmp_path, "train", **flow)["computed"] == 1
    assert old_flow[0].read_bytes() != old_bytes  # the new world's flow


# sha256 (first 128 bits) of every file written by the pre-split generator (mtl_perception/data/synthetic.py
# at commit 41dcca8) for the arguments below: the module split must not change a single byte. An upgrade of
# NumPy or OpenCV (PNG encoder) may legitimately change them; then regenerate at 41dcca8 in the new
# environment first, to tell such a change from a refactoring error.
REFERENCE_ARGS = ["--split", "val", "--sequences", "2", "--frames", "3", "--height", "64", "--width", "128"]
REFERENCE_ARGS += ["--seed", "5", "--city", "ref"]
REFERENCE_SHA256 = """
fe2911ef0aa71e2960fc229ffd0ee2b6 camera/val/ref/ref_000000_000002_camera.json
fe2911ef0aa71e2960fc229ffd0ee2b6 camera/val/ref/ref_000001_000002_camera.json
315d9152c24864e31f196fe11105d30d disparity/val/ref/ref_000000_000002_disparity.png
e5ed2be42fc1c4bc865b3dec62c2d5de disparity/val/ref/ref_000001_000002_disparity.png
57b915f1805d4b7b9336ccbafa3e4603 gtFine/val/ref/ref_000000_000002_gtFine_instanceIds.png
f014221667124b8214940af49b6eda55 gtFine/val/ref/ref_000000_000002_gtFine_labelIds.png
376fa29ec500d26e9917a28bd528c926 gtFine/val/ref/ref_000000_000002_gtFine_labelTrainIds_motion.png
eb74a3c5feada62c18839f329752bda3 gtFine/val/ref/ref_000001_000002_gtFine_instanceIds.png
34204afd28ed1375dd9a46314385f8f6 gtFine/val/ref/ref_000001_000002_gtFine_labelIds.png
1104da79053680e3c2889b988a184d67 gtFine/val/ref/ref_000001_000002_gtFine_labelTrainIds_motion.png
fc8c8caf665a649fdb4d25633c3160be leftImg8bit/val/ref/ref_000000_000002_leftImg8bit.png
589f4a54f6febdfc3f38368dc079b35f leftImg8bit/val/ref/ref_000001_000002_leftImg8bit.png
f39d4a695b8826eabbe10e5c908f295e leftImg8bit_sequence/val/ref/ref_000000_000000_leftImg8bit.png
8be4152e74a4843fbd6b0b39ebf958a7 leftImg8bit_sequence/val/ref/ref_000000_000001_leftImg8bit.png
fc8c8caf665a649fdb4d25633c3160be leftImg8bit_sequence/val/ref/ref_000000_000002_leftImg8bit.png
4ab4b5504915a9eb7b7e1b9e26353fa8 leftImg8bit_sequence/val/ref/ref_000001_000000_leftImg8bit.png
b95ade25380a0e225ef6c9b9a53ff515 leftImg8bit_sequence/val/ref/ref_000001_000001_leftImg8bit.png
589f4a54f6febdfc3f38368dc079b35f leftImg8bit_sequence/val/ref/ref_000001_000002_leftImg8bit.png
9a271f2a916b0b6ee6cecb2426f0b320 timestamp_sequence/val/ref/ref_000000_000000_timestamp.txt
8659bd2a6ef6af429dda74bc3ec10f85 timestamp_sequence/val/ref/ref_000000_000001_timestamp.txt
7f7f524ee6a718ceec4d5b90e225197f timestamp_sequence/val/ref/ref_000000_000002_timestamp.txt
9a271f2a916b0b6ee6cecb2426f0b320 timestamp_sequence/val/ref/ref_000001_000000_timestamp.txt
8659bd2a6ef6af429dda74bc3ec10f85 timestamp_sequence/val/ref/ref_000001_000001_timestamp.txt
7f7f524ee6a718ceec4d5b90e225197f timestamp_sequence/val/ref/ref_000001_000002_timestamp.txt
9546933c03f9694538f44b83d584593c vehicle_sequence/val/ref/ref_000000_000000_vehicle.json
76527a8acf480b1c5b20f6e5bcba1578 vehicle_sequence/val/ref/ref_000000_000001_vehicle.json
d28d55f3a253fa04cdd9d1d0390c0157 vehicle_sequence/val/ref/ref_000000_000002_vehicle.json
1a848964f88e219e5354cd33271bf62b vehicle_sequence/val/ref/ref_000001_000000_vehicle.json
3934738e2fea4d8c2835f1a06987820e vehicle_sequence/val/ref/ref_000001_000001_vehicle.json
d887fc80290cafa332164203ddbd98e8 vehicle_sequence/val/ref/ref_000001_000002_vehicle.json
"""  # first 128 bits of each sha256, then the path
# the shared fixture (data_fixtures.synthetic_root: 2 x 30 frames, 128x256, seed 3; 192 generated files):
# sha256 of the sorted "relative/path file-sha256" lines. Its 190 files other than the two instanceIds maps
# hash to ad6d1820..., the value pinned before the instance maps were added (produced by the pre-split code)
FIXTURE_TREE_SHA256 = "d2424ff246d90a7a5906f80a46ec6f03b9d5a3f06fa454eda71d6efecc100681"
GENERATED_FOLDERS = (
    "leftImg8bit_sequence",
    "vehicle_sequence",
    "timestamp_sequence",
    "leftImg8bit",
    "gtFine",
    "disparity",
    "camera",
)


def _file_digests(root: Path, folders=GENERATED_FOLDERS) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for folder in folders
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


def test_output_is_bit_identical_to_the_reference(tmp_path):
    assert main(["--out", str(tmp_path), *REFERENCE_ARGS]) == 0
    expected = dict(line.split()[::-1] for line in REFERENCE_SHA256.strip().splitlines())
    assert {k: v[:32] for k, v in _file_digests(tmp_path).items()} == expected
    # one process per snippet writes the same bytes
    assert main(["--out", str(tmp_path / "parallel"), *REFERENCE_ARGS, "--workers", "2"]) == 0
    assert {k: v[:32] for k, v in _file_digests(tmp_path / "parallel").items()} == expected
    tree = _file_digests(synthetic_root())
    assert len(tree) == 192
    lines = "".join(f"{k} {v}\n" for k, v in sorted(tree.items()))
    assert hashlib.sha256(lines.encode()).hexdigest() == FIXTURE_TREE_SHA256


def test_disparity_to_depth_formula_and_errors():
    p = np.array([[0, 1, 257, 2 * 256 + 1, 65535]], np.uint16)
    depth = disparity_to_depth(p, fx=2000.0, baseline=0.2)
    # p=0 invalid, p=1 -> d=0 invalid, p=257 -> d=1 -> 400 m clipped to 255, d=2 -> 200 m
    np.testing.assert_allclose(depth, [[0, 0, 255, 200, 400 / (65534 / 256)]], rtol=1e-6)
    assert disparity_to_depth(np.array([[65535]], np.uint16), fx=100.0, baseline=0.2)[0, 0] == 1.0  # clipped
    with pytest.raises(ValueError, match="uint16"):
        disparity_to_depth(p.astype(np.float32), 2000.0, 0.2)
    with pytest.raises(FileNotFoundError, match="nope_camera.json"):
        read_camera("/nonexistent/nope_camera.json")


def test_label_mapping_follows_official_table():
    ids = np.arange(34, dtype=np.uint8)
    five = label_ids_to_semantic(ids, "five")
    expect = {
        7: 0,
        23: 1,
        24: 2,
        25: 2,
        26: 3,
        27: 3,
        28: 3,
        31: 3,
        32: 3,
        33: 3,
        8: 4,
        11: 4,
        17: 4,
        21: 4,
        22: 4,
        12: 4,
        13: 4,
        19: 4,
        20: 4,
    }
    for i in range(34):
        label = id2label[i]
        want = expect.get(i, 255)
        assert five[i] == want, (label.name, five[i])
        # independent re-derivation of "background": evaluated by Cityscapes and none of the four classes
        if want == 4:
            assert not label.ignoreInEval
    train = label_ids_to_semantic(ids, "trainid")
    for i in range(34):
        assert train[i] == (id2label[i].trainId if id2label[i].trainId != -1 else 255)
    np.testing.assert_array_equal(
        label_ids_to_semantic(np.array([0, 4, 5, 255], np.uint8), "ti_five"), [0, 4, 255, 255]
    )
    assert semantic_palette("trainid")[13].tolist() == list(id2label[26].color)
    assert semantic_palette("five").shape == (5, 3)
    assert dict((n, c) for n, _, c in five_class_table())["caravan"] == "ignore"
    with pytest.raises(ValueError):
        label_ids_to_semantic(ids.astype(np.int32), "five")


def _rz(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _camera_motion_from_files(root, split, prev: FrameId, cur: FrameId):
    """R, t mapping camera coordinates of ``cur`` to ``prev``, rebuilt from the written files only."""
    cam = read_camera(cityscapes_path(root, "camera", split, cur))
    veh = json.loads(cityscapes_path(root, "vehicle", split, prev).read_text())
    dt = (
        int(cityscapes_path(root, "timestamp", split, cur).read_text())
        - int(cityscapes_path(root, "timestamp", split, prev).read_text())
    ) * 1e-9
    v, w = veh["speed"], veh["yawRate"]
    dpsi = w * dt
    # pose of the vehicle at `cur` in the vehicle frame at `prev` (constant speed and yaw rate: an arc)
    p = np.array([v / w * np.sin(dpsi), v / w * (1 - np.cos(dpsi)), 0.0])
    R_prev_cur = _rz(dpsi)
    optical_to_vehicle = np.array([[0, 0, 1.0], [-1, 0, 0], [0, -1, 0]])
    R_vc = _rz(cam.yaw) @ _ry(cam.pitch) @ _rx(cam.roll) @ optical_to_vehicle
    c = np.array([cam.x, cam.y, cam.z])
    return cam, R_vc.T @ R_prev_cur @ R_vc, R_vc.T @ (R_prev_cur @ c + p - c)


def _warp(img, flow):
    h, w = img.shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    f = np.nan_to_num(flow)
    return cv2.remap(img.astype(np.float32), gx + f[..., 0], gy + f[..., 1], cv2.INTER_LINEAR)


def test_ground_truth_matches_images(tmp_path):
    """Rigid flow from GT depth + written ego-motion explains the image pair on static pixels, not on movers.

    Oracles: cv2.remap (photometric consistency) and cv2.calcOpticalFlowFarneback (measured flow).
    """
    generate(
        tmp_path,
        "val",
        sequences=1,
        frames=20,
        height=256,
        width=512,
        seed=11,
        city="check",
        show_progress=False,
    )
    cur, prev = FrameId("check", 0, 19), FrameId("check", 0, 18)
    cam, R, t = _camera_motion_from_files(tmp_path, "val", prev, cur)
    disp = cv2.imread(str(cityscapes_path(tmp_path, "disparity", "val", cur)), cv2.IMREAD_UNCHANGED)
    depth = disparity_to_depth(disp, cam.fx, cam.baseline)
    rigid = rigid_flow_from_depth(depth, cam.K, R, t)
    img_cur = cv2.imread(str(cityscapes_path(tmp_path, "image_sequence", "val", cur)), cv2.IMREAD_GRAYSCALE)
    img_prev = cv2.imread(str(cityscapes_path(tmp_path, "image_sequence", "val", prev)), cv2.IMREAD_GRAYSCALE)
    labels = cv2.imread(str(cityscapes_path(tmp_path, "label_ids", "val", cur)), cv2.IMREAD_UNCHANGED)
    moving = cv2.imread(str(cityscapes_path(tmp_path, "motion", "val", cur)), cv2.IMREAD_UNCHANGED) > 0

    h, w = depth.shape
    # exclude occlusion boundaries (depth or label edges), far/invalid depth and points leaving the frame
    log_d = np.log(np.maximum(depth, 0.5))
    edge = np.zeros((h, w), bool)
    edge[:, 1:] |= (np.abs(np.diff(log_d, axis=1)) > 0.03) | (np.diff(labels.astype(int), axis=1) != 0)
    edge[1:] |= (np.abs(np.diff(log_d, axis=0)) > 0.03) | (np.diff(labels.astype(int), axis=0) != 0)
    edge = cv2.dilate(edge.astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
    u2 = np.arange(w)[None] + rigid[..., 0]
    v2 = np.arange(h)[:, None] + rigid[..., 1]
    inside = (u2 > 8) & (u2 < w - 9) & (v2 > 8) & (v2 < h - 9)
    static = ~moving & (depth > 0) & (depth < 250) & np.isfinite(rigid[..., 0]) & ~edge & inside
    movers = moving & np.isfinite(rigid[..., 0])
    assert static.sum() > 0.3 * h * w and movers.sum() > 500

    # 1) photometric: the previous frame warped by the GT rigid flow reproduces the current frame on static
    # pixels (bilinear resampling error only), but not on independently moving objects
    err = np.abs(_warp(img_prev, rigid) - img_cur)
    err_zero = np.abs(img_prev.astype(np.float32) - img_cur)
    assert err[static].mean() < 3.0, err[static].mean()
    assert err[static].mean() < 0.25 * err_zero[static].mean()
    assert err[movers].mean() > 2.5 * err[static].mean()

    # 2) cv2 Farnebäck agrees with the GT rigid flow on well-textured static pixels within its
    # small-displacement range, and disagrees on the moving-object mask
    measured = cv2.calcOpticalFlowFarneback(img_cur, img_prev, None, 0.5, 5, 15, 10, 5, 1.1, 0)
    epe = np.linalg.norm(measured - rigid, axis=-1)
    grad = cv2.blur(
        np.hypot(
            cv2.Sobel(img_cur.astype(np.float32), cv2.CV_32F, 1, 0),
            cv2.Sobel(img_cur.astype(np.float32), cv2.CV_32F, 0, 1),
        ),
        (7, 7),
    )
    textured = static & (grad > np.median(grad[static])) & (np.linalg.norm(rigid, axis=-1) < 4.0)
    assert textured.sum() > 2000
    static_epe, moving_epe = np.median(epe[textured]), np.median(epe[movers])
    print(
        f"photometric static {err[static].mean():.2f} zero-flow {err_zero[static].mean():.2f} "
        f"moving {err[movers].mean():.2f}; Farneback EPE static {static_epe:.3f} moving {moving_epe:.3f}"
    )
    assert static_epe < 0.5, static_epe
    assert moving_epe > 2.0 * static_epe, (moving_epe, static_epe)


def _annotated(root: Path, split: str) -> dict[str, list[str]]:
    """Stems of the frames carrying each annotated file kind."""
    kinds = ("image", "label_ids", "motion", "disparity", "camera")
    folders = {"image": "leftImg8bit", "label_ids": "gtFine", "motion": "gtFine"}
    suffixes = {
        "image": "_leftImg8bit.png",
        "label_ids": "_gtFine_labelIds.png",
        "motion": "_gtFine_labelTrainIds_motion.png",
        "disparity": "_disparity.png",
        "camera": "_camera.json",
    }
    return {
        k: sorted(
            p.name[: -len(suffixes[k])] for p in (root / folders.get(k, k) / split).glob(f"*/*{suffixes[k]}")
        )
        for k in kinds
    }


def test_annotate_all_labels_every_frame_with_a_flow_partner(tmp_path):
    """--annotate all: ground truth for frames f >= flow gap (same world and bytes as the default mode);
    make_flow_dataset and the training dataset pick up every one of them."""
    from mtl_perception.learning.dataset import CityscapesMultiTask
    from mtl_perception_training.make_flow_dataset import make_flow_dataset

    common = ["--split", "train", "--sequences", "2", "--frames", "6", "--height", "64", "--width", "128"]
    common += ["--seed", "2", "--city", "all"]
    every, default = tmp_path / "every", tmp_path / "default"
    assert main(["--out", str(every), *common, "--annotate", "all", "--flow-gap", "2"]) == 0
    assert main(["--out", str(default), *common]) == 0
    want = [f"all_{s:06d}_{f:06d}" for s in range(2) for f in range(2, 6)]
    assert _annotated(every, "train") == {
        k: want for k in ("image", "label_ids", "motion", "disparity", "camera")
    }
    # the default mode annotates the last frame (fewer than 20 frames) and renders the same world: each of its
    # files is byte-identical to the --annotate all one
    default_files = [p.relative_to(default) for p in default.rglob("*") if p.is_file()]
    assert len(default_files) == 2 * (6 * 3 + 6)
    for rel in default_files:
        assert (default / rel).read_bytes() == (every / rel).read_bytes(), rel

    flow = FlowContract(size=(64, 128))
    done = make_flow_dataset(every, "train", flow=flow, device="cpu", show_progress=False)
    assert (done["computed"], done["skipped"]) == (len(want), 0)
    dataset = CityscapesMultiTask(every, "train")
    assert sorted(fid.stem for fid in dataset.frames) == want
    assert dataset.load(0)["semantic"].shape == (64, 128)

    # a flow gap beyond the generator's leaves frame 2 without its partner: refused before writing, named
    sidecar = every / "leftImg8bit_flow_farneback_confidence" / "train" / "flow_params.json"
    before = sidecar.read_bytes()
    with pytest.raises(FileNotFoundError, match=r"all_000000_000002_leftImg8bit.png needs .*all_000000_-"):
        gap3 = FlowContract(size=(64, 128), partner_gap=3)
        make_flow_dataset(every, "train", flow=gap3, device="cpu", show_progress=False)
    assert sidecar.read_bytes() == before


def test_annotate_arguments_are_checked(tmp_path, capsys):
    args = ["--out", str(tmp_path), "--sequences", "1", "--height", "32", "--width", "64"]
    assert main([*args, "--frames", "2", "--annotate", "all", "--flow-gap", "2"]) == 2
    assert "needs more frames than flow_gap" in capsys.readouterr().err
    assert main([*args, "--frames", "4", "--annotate", "all", "--flow-gap", "0"]) == 2
    assert "flow_gap must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(ValueError, match="annotate must be one of"):
        generate(tmp_path, frames=4, height=32, width=64, annotate="every", show_progress=False)
    assert not any(tmp_path.iterdir())  # nothing written
    with pytest.raises(SystemExit):
        main([*args, "--annotate", "every"])


def test_instance_ids_follow_cityscapes_encoding_one_id_per_object():
    """``*_gtFine_instanceIds.png``: uint16, person and car pixels label id * 1000 + k (k from 0 per class, as
    cityscapesscripts' json2instanceImg counts), every other pixel its label id (checked against labelIds);
    each object keeps its id in every frame, and the motion mask is the union of the moving objects."""
    from mtl_perception.data.synthetic.writer import _sequence_rng

    root = synthetic_root()
    for seq in range(SEQUENCES):
        fid = FrameId(CITY, seq, 19)
        ids = cv2.imread(str(cityscapes_path(root, "instance_ids", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
        labels = cv2.imread(str(cityscapes_path(root, "label_ids", SPLIT, fid)), cv2.IMREAD_UNCHANGED)
        assert ids.dtype == np.uint16 and ids.shape == labels.shape
        objects = ids >= 1000
        np.testing.assert_array_equal(np.where(objects, ids // 1000, ids), labels)
        assert {id2label[int(i) // 1000].name for i in np.unique(ids[objects])} <= {"person", "car"}
        assert {id2label[int(i)].hasInstances for i in np.unique(labels[~objects])} == {False}
        assert len(np.unique(ids[objects])) >= 3

    scene = make_scene(_sequence_rng(3, CITY, 0), FRAMES, 17.0)
    by_id: dict[int, list] = {}
    for box in scene.boxes:
        by_id.setdefault(box.instance, []).append(box)
    objects = {k: v for k, v in by_id.items() if k}
    for label in (24, 26):  # ids 0..n-1 per class, and each object's parts share one id and one velocity
        ks = sorted(k % 1000 for k in objects if k // 1000 == label)
        assert ks == list(range(len(ks))) and ks
    for parts in objects.values():
        assert len({(p.label, tuple(p.velocity)) for p in parts}) == 1 and len(parts) in (2, 3)
    assert all(not b.moving for b in by_id[0]) and all(b.label not in (24, 26) for b in by_id[0])
    cam = cityscapes_like_camera(HEIGHT, WIDTH)
    for index in (5, 19):
        frame = render_frame(scene, index, cam, HEIGHT, WIDTH)
        moving_ids = [k for k, parts in objects.items() if parts[0].moving]
        np.testing.assert_array_equal(frame.motion == 255, np.isin(frame.instance_ids, moving_ids))
        if index == 19:
            written = cityscapes_path(root, "instance_ids", SPLIT, FrameId(CITY, 0, 19))
            np.testing.assert_array_equal(frame.instance_ids, cv2.imread(str(written), cv2.IMREAD_UNCHANGED))
