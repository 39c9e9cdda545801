"""The one ground-truth reader against independent reads of the files (imageio, json, the cityscapesscripts
label table, the disparity -> depth formula of TI's loader), and its errors naming the file."""

from __future__ import annotations

import json
import shutil

import imageio.v3 as iio
import numpy as np
import pytest
from cityscapesscripts.helpers.labels import id2label
from data_fixtures import CITY, HEIGHT, SEQUENCES, SPLIT, WIDTH, synthetic_root

from mtl_perception.data.cityscapes import CameraCalibration, FrameId, cityscapes_path, read_camera
from mtl_perception.data.ground_truth import GroundTruthReader, read_depth, read_motion, read_semantic

ANNOTATED = FrameId(CITY, 0, 19)
VEHICLES = {"car", "truck", "bus", "train", "motorcycle", "bicycle"}


def _ti_depth(disparity: np.ndarray, fx: float, baseline: float) -> np.ndarray:
    """TI's depth_loader as ti_multitask.md §3.1 states it, in float64: valid = p > 0, d = (p - 1)/256,
    Z = fx * baseline / d (0 where d == 0), clipped to [1, 255] m, times valid."""
    p = disparity.astype(np.float64)
    d = (p - 1.0) / 256.0
    z = np.divide(fx * baseline, d, out=np.zeros_like(d), where=d != 0)
    return np.clip(z, 1.0, 255.0) * (p > 0)


def _five_class(label_ids: np.ndarray) -> np.ndarray:
    """The five-class rule of cityscapes.py's docstring, per pixel from the official label table."""

    def one(i: int) -> int:
        lab = id2label[int(i)]
        if lab.ignoreInEval:
            return 255
        if lab.name in VEHICLES:
            return 3
        return {"road": 0, "sky": 1, "person": 2, "rider": 2}.get(lab.name, 4)

    return np.vectorize(one, otypes=[np.uint8])(label_ids)


def _train_ids(label_ids: np.ndarray) -> np.ndarray:
    def one(i: int) -> int:
        train_id = id2label[int(i)].trainId
        return train_id if 0 <= train_id < 255 else 255

    return np.vectorize(one, otypes=[np.uint8])(label_ids)


def _copy_tree(tmp_path):
    src, dst = synthetic_root(), tmp_path / "root"
    for sub in ("gtFine", "disparity", "camera"):
        shutil.copytree(src / sub, dst / sub)
    return dst


def test_reader_matches_independent_reads():
    root = synthetic_root()
    reader = GroundTruthReader(root, SPLIT)
    for seq in range(SEQUENCES):
        fid = FrameId(CITY, seq, 19)
        truth = reader.read(fid, expected_size=(HEIGHT, WIDTH))
        assert truth.missing == {} and set(truth.present()) == {"depth", "semantic", "motion"}

        camera = json.loads(cityscapes_path(root, "camera", SPLIT, fid).read_text())
        fx, baseline = camera["intrinsic"]["fx"], camera["extrinsic"]["baseline"]
        disparity = iio.imread(cityscapes_path(root, "disparity", SPLIT, fid))
        assert disparity.dtype == np.uint16
        expect = _ti_depth(disparity, fx, baseline)
        assert truth.depth.dtype == np.float32 and truth.depth.shape == (HEIGHT, WIDTH)
        # p == 1 (zero disparity, infinitely far) is invalid here; TI's literal formula would give 1 m there
        ti_valid = disparity != 1
        np.testing.assert_allclose(truth.depth[ti_valid], expect[ti_valid], rtol=1e-6)
        np.testing.assert_array_equal(truth.depth[~ti_valid], 0)
        assert (disparity == 0).any() and (truth.depth > 0).mean() > 0.3  # the sky is invalid, the rest not

        label_ids = iio.imread(cityscapes_path(root, "label_ids", SPLIT, fid))
        np.testing.assert_array_equal(truth.semantic, _five_class(label_ids))
        assert len(np.unique(truth.semantic)) >= 4
        trainid = GroundTruthReader(root, SPLIT, semantic_mode="trainid").read(fid).semantic
        np.testing.assert_array_equal(trainid, _train_ids(label_ids))

        motion = iio.imread(cityscapes_path(root, "motion", SPLIT, fid))
        assert set(np.unique(motion)) <= {0, 255}
        np.testing.assert_array_equal(truth.motion, (motion == 255).astype(np.uint8))
        assert truth.motion.dtype == np.uint8


def test_single_file_readers_and_ti_five_classes(tmp_path):
    root = synthetic_root()
    truth = GroundTruthReader(root, SPLIT).read(ANNOTATED)
    paths = GroundTruthReader(root, SPLIT).paths(ANNOTATED)
    np.testing.assert_array_equal(read_depth(paths["depth"], read_camera(paths["camera"])), truth.depth)
    np.testing.assert_array_equal(read_semantic(paths["semantic"]), truth.semantic)
    np.testing.assert_array_equal(read_motion(paths["motion"]), truth.motion)

    # the formula's edges: invalid 0, zero disparity (1), clipping at 255 m (2) and at 1 m (65535)
    edges = np.array([[0, 1, 2, 257], [1000, 4097, 30000, 65535]], np.uint16)
    iio.imwrite(tmp_path / "edges_disparity.png", edges)
    depth = read_depth(
        tmp_path / "edges_disparity.png", CameraCalibration(fx=100.0, fy=100.0, u0=2, v0=1, baseline=0.5)
    )
    expect = _ti_depth(edges, 100.0, 0.5)
    expect[edges == 1] = 0  # invalid here (infinitely far); TI's literal formula gives 1 m
    np.testing.assert_allclose(depth, expect, rtol=1e-6)
    assert depth[0, 2] == 255 and depth[1, 3] == 1 and depth[0, 3] == 50

    tree = _copy_tree(tmp_path)
    ti_labels = np.array([[0, 1, 2, 3], [4, 5, 254, 255]], np.uint8)
    iio.imwrite(cityscapes_path(tree, "label_train_ids", SPLIT, ANNOTATED), ti_labels)
    reader = GroundTruthReader(tree, SPLIT, semantic_mode="ti_five")
    assert reader.paths(ANNOTATED)["semantic"].name.endswith("_gtFine_labelTrainIds.png")
    truth = reader.read(ANNOTATED, required=False)
    np.testing.assert_array_equal(truth.semantic, [[0, 1, 2, 3], [4, 255, 255, 255]])
    with pytest.raises(ValueError, match="semantic_mode"):
        GroundTruthReader(tree, SPLIT, semantic_mode="nineteen")


def test_depth_folder_alias(tmp_path):
    tree = _copy_tree(tmp_path)
    (tree / "disparity").rename(tree / "depth")
    reader = GroundTruthReader(tree, SPLIT)
    assert reader.depth_folder == "depth"
    np.testing.assert_array_equal(
        reader.read(ANNOTATED).depth, GroundTruthReader(synthetic_root(), SPLIT).read(ANNOTATED).depth
    )


@pytest.mark.parametrize("task", ["depth", "semantic", "motion", "camera"])
def test_missing_file_is_named(tmp_path, task):
    tree = _copy_tree(tmp_path)
    reader = GroundTruthReader(tree, SPLIT)
    path = reader.paths(ANNOTATED)[task]
    path.unlink()
    with pytest.raises(FileNotFoundError, match=path.name):
        reader.read(ANNOTATED)
    if task == "camera":  # with a calibration given, depth needs no camera file
        full = GroundTruthReader(synthetic_root(), SPLIT)
        given = full.read(ANNOTATED).depth
        cam = read_camera(full.paths(ANNOTATED)["camera"])
        np.testing.assert_array_equal(reader.read(ANNOTATED, camera=cam).depth, given)
        return
    truth = reader.read(ANNOTATED, required=False)  # skipped and named, the others still read
    assert truth.missing == {task: path} and getattr(truth, task) is None
    assert set(truth.present()) == {"depth", "semantic", "motion"} - {task}
    assert reader.is_annotated(ANNOTATED)
    assert not reader.is_annotated(FrameId(CITY, 0, 18))


@pytest.mark.parametrize("task", ["depth", "semantic", "motion"])
def test_unreadable_truncated_and_wrong_files_are_named(tmp_path, task):
    tree = _copy_tree(tmp_path)
    reader = GroundTruthReader(tree, SPLIT)
    path = reader.paths(ANNOTATED)[task]
    original = path.read_bytes()

    path.write_bytes(original[: len(original) // 2])  # truncated
    with pytest.raises(ValueError, match=f"truncated.*{path.name}"):
        reader.read(ANNOTATED)
    path.write_bytes(original[:-12])  # only the closing IEND chunk lost
    with pytest.raises(ValueError, match=path.name):
        reader.read(ANNOTATED)
    path.write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=f"unreadable.*{path.name}"):
        reader.read(ANNOTATED)

    wrong_dtype = np.zeros((HEIGHT, WIDTH), np.uint8 if task == "depth" else np.uint16)
    iio.imwrite(path, wrong_dtype)
    with pytest.raises(ValueError, match=f"single-channel.*{path.name}"):
        reader.read(ANNOTATED)
    iio.imwrite(path, np.zeros((HEIGHT, WIDTH, 3), np.uint8))
    with pytest.raises(ValueError, match=f"{path.name} is uint8 with 3 channel"):
        reader.read(ANNOTATED)

    value, dtype = (255, np.uint8) if task == "motion" else (1, np.uint16 if task == "depth" else np.uint8)
    iio.imwrite(path, np.full((10, 20), value, dtype))
    reader.read(ANNOTATED)  # readable: only the size is wrong, which needs an expected size to notice
    with pytest.raises(ValueError, match=rf"{task} of .* is \(10, 20\), expected \({HEIGHT}, {WIDTH}\).*"):
        reader.read(ANNOTATED, expected_size=(HEIGHT, WIDTH))


def test_malformed_camera_is_named(tmp_path):
    tree = _copy_tree(tmp_path)
    reader = GroundTruthReader(tree, SPLIT)
    camera = reader.paths(ANNOTATED)["camera"]
    camera.write_text('{"intrinsic": {"fx": 1}}')
    with pytest.raises(ValueError, match=camera.name):
        reader.read(ANNOTATED)


@pytest.mark.parametrize(
    "where, key, value",
    [
        ("extrinsic", "baseline", "NaN"),
        ("extrinsic", "baseline", "0"),
        ("extrinsic", "baseline", "-0.2"),
        ("intrinsic", "fx", "NaN"),
        ("intrinsic", "fx", "0"),
        ("intrinsic", "fx", "-2000"),
        ("intrinsic", "fy", "Infinity"),
    ],
)
def test_a_camera_with_a_non_positive_or_nan_calibration_is_named(tmp_path, where, key, value):
    """Regression: NaN, zero or negative fx/baseline ended in "fx and baseline must be positive, got fx=nan"
    without the file (or, for fy, nothing at all)."""
    tree = _copy_tree(tmp_path)
    reader = GroundTruthReader(tree, SPLIT)
    camera = reader.paths(ANNOTATED)["camera"]
    data = json.loads(camera.read_text())
    data[where][key] = "@"
    camera.write_text(json.dumps(data).replace('"@"', value))  # JSON as Python writes NaN and Infinity
    with pytest.raises(ValueError, match=rf"camera file {camera}: {key} is .*, expected a positive number"):
        reader.read(ANNOTATED)


def test_demo_reads_and_scores_the_files_ground_truth(tmp_path):
    """The demo's ground truth is the files' (motion 0/1: moving pixels count in its motion mIoU)."""
    from mtl_perception import demo
    from mtl_perception.data.synthetic import generate
    from mtl_perception.pipeline import PipelineResult

    size, frames, seed = (64, 128), 3, 4
    sequence = demo.render_sequence(frames=frames, height=size[0], width=size[1], seed=seed)
    generate(
        tmp_path,
        "val",
        sequences=1,
        frames=frames,
        height=size[0],
        width=size[1],
        seed=seed,
        city="demo",
        annotate="all",
    )
    fid = FrameId("demo", 0, frames - 1)  # the last frame has its flow partner, so it is annotated
    assert fid.frame in sequence.truth
    for i, frame in enumerate(sequence.frames):
        expect = iio.imread(cityscapes_path(tmp_path, "image_sequence", "val", FrameId("demo", 0, i)))
        np.testing.assert_array_equal(frame, expect)
    truth = sequence.truth[fid.frame]
    camera = json.loads(cityscapes_path(tmp_path, "camera", "val", fid).read_text())
    disparity = iio.imread(cityscapes_path(tmp_path, "disparity", "val", fid))
    expect_depth = _ti_depth(disparity, camera["intrinsic"]["fx"], camera["extrinsic"]["baseline"])
    np.testing.assert_allclose(truth.depth, expect_depth * (disparity != 1), rtol=1e-6)
    label_ids = iio.imread(cityscapes_path(tmp_path, "label_ids", "val", fid))
    np.testing.assert_array_equal(truth.semantic, _five_class(label_ids))
    motion = iio.imread(cityscapes_path(tmp_path, "motion", "val", fid)) == 255
    np.testing.assert_array_equal(truth.motion, motion)
    assert motion.any() and not motion.all()

    def result(gt, motion_ids) -> PipelineResult:
        depth = np.where(gt.depth > 0, gt.depth, np.nan)
        return PipelineResult(
            depth=depth, semantic=gt.semantic.copy(), motion=motion_ids, flow=None, image=None
        )

    perfect = [None] * frames
    all_static = [None] * frames
    for index, gt in sequence.truth.items():
        perfect[index] = result(gt, gt.motion.copy())
        all_static[index] = result(gt, np.zeros(size, np.uint8))
    scores = demo.score(perfect, sequence.truth)
    assert scores["depth_ard"] == 0 and scores["semantic_miou"] == 1 and scores["motion_miou"] == 1
    static_share = 1 - np.mean([gt.motion.mean() for gt in sequence.truth.values()])
    assert demo.score(all_static, sequence.truth)["motion_miou"] == pytest.approx(static_share / 2)


def test_motion_undecided_value_reads_as_ignore(tmp_path):
    """make_motion_labels writes 128 where it cannot tell: read as the ignore index of the losses and metrics
    (255); 0 and 255 stay static and moving; any other value names the file (an interpolated or 0/1 map)."""
    from mtl_perception.data.ground_truth import MOTION_MOVING, MOTION_STATIC, MOTION_UNDECIDED

    tree = _copy_tree(tmp_path)
    path = GroundTruthReader(tree, SPLIT).paths(ANNOTATED)["motion"]
    stored = np.full((HEIGHT, WIDTH), MOTION_STATIC, np.uint8)
    stored[:, : WIDTH // 3] = MOTION_UNDECIDED
    stored[: HEIGHT // 2, WIDTH // 2 :] = MOTION_MOVING
    iio.imwrite(path, stored)
    expected = np.select([stored == 255, stored == 128], [1, 255], 0).astype(np.uint8)
    np.testing.assert_array_equal(read_motion(path), expected)
    np.testing.assert_array_equal(GroundTruthReader(tree, SPLIT).read(ANNOTATED).motion, expected)
    stored[0, 0] = 1
    iio.imwrite(path, stored)
    with pytest.raises(ValueError, match=rf"{path.name} holds values \[1\].*0 \(static\), 255 \(moving\)"):
        read_motion(path)
