"""make_motion_labels on generated roots holding only what real Cityscapes publishes (the generator's exact
motion ground truth moved aside first): labels against that exact answer, the report, resume, overwrite,
parallel workers, and bad inputs (skipped frames by kind, missing folders named with their package)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from data_fixtures import CITY, SEQUENCES, SPLIT, synthetic_root

from mtl_perception.data.cityscapes import LAYOUT, FrameId, cityscapes_path
from mtl_perception.data.ground_truth import read_motion
from mtl_perception.data.motion_labels.cli import EXIT_SKIPPED, main
from mtl_perception.data.motion_labels.frame import MOVABLE_LABEL_IDS
from mtl_perception.data.motion_labels.inputs import PACKAGES

#: the file kinds real Cityscapes publishes (the generator writes these and the motion ground truth)
PUBLISHED = (
    "image",
    "image_sequence",
    "label_ids",
    "instance_ids",
    "disparity",
    "camera",
    "vehicle",
    "timestamp",
)
ANNOTATED = [FrameId(CITY, seq, 19) for seq in range(SEQUENCES)]
CLI = "mtl_perception.data.motion_labels.cli"


def published_copy(source: Path, root: Path, exact: Path) -> Path:
    """Copy the Cityscapes folders of ``source`` (not, e.g., a flow dataset other tests made in the shared
    root) to ``root`` with the exact motion maps moved to ``exact``; check that nothing but Cityscapes' own
    kinds of file is left."""
    for folder in {LAYOUT[kind][0] for kind in PUBLISHED}:
        shutil.copytree(source / folder, root / folder)
    for path in sorted(root.rglob("*_gtFine_labelTrainIds_motion.png")):
        target = exact / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.rename(target)
    suffixes = tuple(LAYOUT[kind][1] for kind in PUBLISHED)
    assert all(p.name.endswith(suffixes) for p in root.rglob("*") if p.is_file())
    return root


def _scores(out: Path, exact: Path, frames) -> tuple[float, float]:
    tp = fp = fn = ignored = moving = 0
    for frame in frames:
        truth = cv2.imread(str(cityscapes_path(exact, "motion", SPLIT, frame)), cv2.IMREAD_UNCHANGED) == 255
        label = cv2.imread(str(cityscapes_path(out, "motion", SPLIT, frame)), cv2.IMREAD_UNCHANGED)
        decided = label != 128
        tp += (decided & (label == 255) & truth).sum()
        fp += (decided & (label == 255) & ~truth).sum()
        fn += (decided & (label == 0) & truth).sum()
        ignored += (~decided & truth).sum()
        moving += truth.sum()
    return tp / (tp + fp + fn), ignored / moving


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """The shared fixture (2 snippets, 128x256) stripped to what Cityscapes publishes, labelled once."""
    base = tmp_path_factory.mktemp("motion_labels")
    root = published_copy(synthetic_root(), base / "root", base / "exact")
    code = main(["--root", str(root), "--split", SPLIT])
    return root, base / "exact", code


def test_labels_a_published_root_and_agree_with_the_exact_answer(labelled, capsys):
    root, exact, code = labelled
    assert code == 0
    for frame in ANNOTATED:
        label = cv2.imread(str(cityscapes_path(root, "motion", SPLIT, frame)), cv2.IMREAD_UNCHANGED)
        assert label.dtype == np.uint8 and set(np.unique(label)) <= {0, 128, 255}
        label_ids = cv2.imread(str(cityscapes_path(root, "label_ids", SPLIT, frame)), cv2.IMREAD_UNCHANGED)
        assert (label[~np.isin(label_ids, list(MOVABLE_LABEL_IDS))] == 0).all()  # only objects can move
        read = read_motion(
            cityscapes_path(root, "motion", SPLIT, frame)
        )  # the training reader: 128 -> ignore
        np.testing.assert_array_equal(read, np.select([label == 255, label == 128], [1, 255], 0))
    iou, ignored = _scores(root, exact, ANNOTATED)
    assert iou >= 0.8 and ignored <= 0.3, (iou, ignored)  # 128x256; the full-size numbers: docs/data.md

    report = json.loads((root / f"motion_labels_{SPLIT}.json").read_text())
    assert report["frames"] == {**report["frames"], "annotated": 2, "labelled": 2, "skipped": 0}
    instances = report["instances"]
    assert instances["total"] == instances["moving"] + instances["static"] + instances["undecided"] > 10
    assert instances["moving"] >= 2 and sum(instances["by_reason"].values()) == instances["total"]
    assert report["background"]["mismatch_frames"] == []
    assert report["settings"]["gap"] == 2 and report["flow"]["farneback"]["winsize"] == 13
    decisions = root / "motion_label_decisions" / SPLIT / CITY / f"{ANNOTATED[0].stem}_decisions.json"
    assert json.loads(decisions.read_text())["frame"] == ANNOTATED[0].stem


def test_rerun_resumes_and_other_settings_or_foreign_labels_need_overwrite(labelled, tmp_path, capsys):
    root, exact, _ = labelled
    work = tmp_path / "root"
    shutil.copytree(root, work)
    labels = {f: cityscapes_path(work, "motion", SPLIT, f).read_bytes() for f in ANNOTATED}
    capsys.readouterr()
    assert main(["--root", str(work), "--split", SPLIT]) == 0
    assert "2 of 2 frames labelled (0 this run, 2 before)" in capsys.readouterr().out
    cityscapes_path(work, "motion", SPLIT, ANNOTATED[1]).unlink()  # as a run stopped before this label
    assert main(["--root", str(work), "--split", SPLIT]) == 0
    assert "(1 this run, 1 before)" in capsys.readouterr().out
    assert {f: cityscapes_path(work, "motion", SPLIT, f).read_bytes() for f in ANNOTATED} == labels

    assert main(["--root", str(work), "--split", SPLIT, "--moving-speed", "0.3"]) == 2
    err = capsys.readouterr().err.strip()
    assert "made with other settings: moving_speed 0.175 (now 0.3)" in err and "--overwrite" in err
    assert len(err.splitlines()) == 1

    # the generator's exact ground truth at the same paths: not the tool's, never replaced without --overwrite
    for frame in ANNOTATED:
        shutil.copy(
            cityscapes_path(exact, "motion", SPLIT, frame), cityscapes_path(work, "motion", SPLIT, frame)
        )
    shutil.rmtree(work / "motion_label_decisions")
    assert main(["--root", str(work), "--split", SPLIT]) == 2
    err = capsys.readouterr().err
    assert "2 motion labels exist that make_motion_labels did not make" in err and "--overwrite" in err
    assert not (work / "motion_label_decisions").exists()  # refused before anything was written
    assert main(["--root", str(work), "--split", SPLIT, "--overwrite", "--moving-speed", "0.3"]) == 0
    assert "(2 this run, 0 before)" in capsys.readouterr().out


def test_parallel_workers_write_the_same_labels(labelled, tmp_path):
    root, _, _ = labelled
    out = tmp_path / "out"
    assert main(["--root", str(root), "--split", SPLIT, "--out", str(out), "--workers", "2"]) == 0
    for frame in ANNOTATED:
        assert (
            cityscapes_path(out, "motion", SPLIT, frame).read_bytes()
            == cityscapes_path(root, "motion", SPLIT, frame).read_bytes()
        )
    assert not (out / "leftImg8bit").exists()  # --out holds the labels, the report and the decisions only


@pytest.fixture(scope="module")
def small_root(tmp_path_factory):
    """3 snippets of 20 frames at 64x128, for breaking inputs."""
    from mtl_perception.data.synthetic import generate

    base = tmp_path_factory.mktemp("motion_bad")
    generate(base / "full", SPLIT, 3, 20, 64, 128, seed=8, city="bad", show_progress=False)
    return published_copy(base / "full", base / "root", base / "exact")


def test_bad_frames_are_skipped_one_warning_per_kind(small_root, tmp_path, capsys):
    root = tmp_path / "root"
    shutil.copytree(small_root, root)
    frames = [FrameId("bad", seq, 19) for seq in range(3)]
    cityscapes_path(root, "vehicle", SPLIT, FrameId("bad", 0, 18)).unlink()
    cityscapes_path(root, "vehicle", SPLIT, FrameId("bad", 1, 17)).write_text("{not json")
    disparity = cityscapes_path(root, "disparity", SPLIT, frames[2])
    good_disparity = disparity.read_bytes()
    disparity.write_bytes(good_disparity[: len(good_disparity) // 2])
    assert main(["--root", str(root), "--split", SPLIT]) == EXIT_SKIPPED
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("make_motion_labels:")]
    assert len(warnings) == 2, captured.err  # besides them, stderr holds only the progress bar
    disparity_line, vehicle_line = warnings  # in the order the inputs are read
    assert "1 frame(s) skipped, their disparity" in disparity_line and disparity.name in disparity_line
    assert vehicle_line.startswith("make_motion_labels: warning: 2 frame(s) skipped, their vehicle odometry")
    assert "bad_000000_000018_vehicle.json (missing file)" in vehicle_line
    report = json.loads((root / f"motion_labels_{SPLIT}.json").read_text())
    assert sorted(report["skipped"]) == ["disparity", "vehicle"] and len(report["skipped"]["vehicle"]) == 2
    assert not any(cityscapes_path(root, "motion", SPLIT, f).exists() for f in frames)

    disparity.write_bytes(good_disparity)  # fixed: a rerun labels it, the others stay skipped
    assert main(["--root", str(root), "--split", SPLIT]) == EXIT_SKIPPED
    assert "1 of 3 frames labelled (1 this run, 0 before), 2 skipped" in capsys.readouterr().out
    assert cityscapes_path(root, "motion", SPLIT, frames[2]).exists()


@pytest.mark.parametrize("folder", ["vehicle_sequence", "leftImg8bit_sequence", "disparity"])
def test_a_missing_folder_names_its_cityscapes_package(small_root, tmp_path, capsys, folder):
    root = tmp_path / "root"
    shutil.copytree(small_root, root, ignore=shutil.ignore_patterns(folder))
    assert main(["--root", str(root), "--split", SPLIT]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(root / folder / SPLIT) in err and PACKAGES[folder] in err
    assert not (root / "motion_label_decisions").exists()


def test_bad_arguments_are_one_line(small_root, capsys):
    assert main(["--root", str(small_root), "--split", "nosuch"]) == 2
    assert "missing folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as stop:
        main(["--root", str(small_root), "--split", SPLIT, "--moving-speed", "-1"])
    assert stop.value.code == 2
    assert "argument --moving-speed: expected a positive finite number, got '-1'" in capsys.readouterr().err


def test_sigint_mid_split_then_the_rerun_finishes_the_rest(labelled, tmp_path):
    """A real SIGINT while the second frame is being labelled: exit 130 with one line, the first frame's
    label and record complete, no temporary left; the rerun labels only the rest, byte-identical."""
    from test_faults_signals import _assert_one_line, _leftovers, _slowed, _stop, _wait_for

    source, _, _ = labelled
    root = tmp_path / "root"
    shutil.copytree(source, root, ignore=shutil.ignore_patterns("*_motion.png", "motion_label*"))
    first = cityscapes_path(root, "motion", SPLIT, ANNOTATED[0])
    argv = ["--root", root, "--split", SPLIT]
    run = _slowed("mtl_perception.data.motion_labels.tool", "read_frame_inputs", 1.5, CLI, argv)
    _wait_for(first.exists, run)
    code, err = _stop(run, signal.SIGINT)
    assert code == 130
    _assert_one_line(err, "make_motion_labels", "interrupted")
    assert not cityscapes_path(root, "motion", SPLIT, ANNOTATED[1]).exists() and not _leftovers(root)
    rerun = subprocess.run([sys.executable, "-m", CLI, *map(str, argv)], capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr
    assert "(1 this run, 1 before)" in rerun.stdout
    for frame in ANNOTATED:
        assert (
            cityscapes_path(root, "motion", SPLIT, frame).read_bytes()
            == cityscapes_path(source, "motion", SPLIT, frame).read_bytes()
        )


def test_a_frame_the_odometry_does_not_explain_leaves_its_objects_undecided(small_root, tmp_path, capsys):
    """A yaw rate 1 rad/s off (a 0.06 rad turn nobody made, 8 px at 128 wide): the static world moves against
    the ego-motion, so the frame's objects are undecided rather than labelled from the wrong motion."""
    root = tmp_path / "root"
    shutil.copytree(small_root, root)
    vehicle = cityscapes_path(root, "vehicle", SPLIT, FrameId("bad", 1, 18))
    record = json.loads(vehicle.read_text())
    vehicle.write_text(json.dumps({**record, "yawRate": record["yawRate"] + 1.0}))
    assert main(["--root", str(root), "--split", SPLIT]) == 0
    err = capsys.readouterr().err
    assert (
        "warning: in 1 frame(s) the static world moves against the odometry" in err
        and "bad_000001_000019" in err
    )
    report = json.loads((root / f"motion_labels_{SPLIT}.json").read_text())
    assert report["background"]["mismatch_frames"] == ["bad_000001_000019"]
    decisions = json.loads(
        (root / "motion_label_decisions" / SPLIT / "bad" / "bad_000001_000019_decisions.json").read_text()
    )
    assert decisions["background_residual_px"] > 3 and not decisions["background_ok"]
    assert {i["reason"] for i in decisions["instances"]} <= {"background_mismatch", "few_pixels"}
    assert any(i["reason"] == "background_mismatch" for i in decisions["instances"])
    label = cv2.imread(
        str(cityscapes_path(root, "motion", SPLIT, FrameId("bad", 1, 19))), cv2.IMREAD_UNCHANGED
    )
    assert 255 not in label
    others = [
        json.loads(p.read_text())
        for p in (root / "motion_label_decisions" / SPLIT / "bad").glob("*_000019_*")
    ]
    assert (
        sum(d["background_ok"] for d in others) == 2
        and max(d["background_residual_px"] for d in others if d["background_ok"]) < 1
    )


def test_hood_and_border_are_static_and_groups_undecided(small_root, tmp_path):
    """Cityscapes' ego-vehicle hood (label 1) and rectification border (2) are never moving, whatever the
    flow says there; a car region without an instance id (a ``cargroup``: instance map = label id 26) is
    undecided as a whole."""
    root = tmp_path / "root"
    shutil.copytree(small_root, root)
    frame = FrameId("bad", 0, 19)
    labels_path, ids_path = (cityscapes_path(root, k, SPLIT, frame) for k in ("label_ids", "instance_ids"))
    labels = cv2.imread(str(labels_path), cv2.IMREAD_UNCHANGED)
    ids = cv2.imread(str(ids_path), cv2.IMREAD_UNCHANGED)
    group = ids == np.unique(ids[ids // 1000 == 26])[0]  # one car becomes part of a group
    ids[group] = 26
    labels[-8:], ids[-8:] = 1, 1  # the hood
    labels[:, :3], ids[:, :3] = 2, 2  # the rectification border
    cv2.imwrite(str(labels_path), labels)
    cv2.imwrite(str(ids_path), ids)
    assert main(["--root", str(root), "--split", SPLIT]) == 0
    label = cv2.imread(str(cityscapes_path(root, "motion", SPLIT, frame)), cv2.IMREAD_UNCHANGED)
    assert (label[-8:] == 0).all() and (label[:, :3] == 0).all()
    assert (label[group & (labels == 26)] == 128).all()
    decisions = json.loads(
        (root / "motion_label_decisions" / SPLIT / "bad" / f"{frame.stem}_decisions.json").read_text()
    )
    assert decisions["group_pixels"] == int((group & (labels == 26)).sum()) > 0


def test_an_interrupted_overwrite_never_mixes_old_and_new_labels(labelled, tmp_path, monkeypatch):
    """--overwrite with other settings, stopped after its first frame: the other frame's old label and record
    are gone already, so the rerun (new settings, no --overwrite) labels it anew instead of keeping it."""
    from mtl_perception.data.motion_labels import tool

    root, _, _ = labelled
    work = tmp_path / "root"
    shutil.copytree(root, work)
    original, calls = tool.label_one, []

    def stop_after_one(**kwargs):
        if calls:
            raise KeyboardInterrupt
        calls.append(kwargs["frame"])
        return original(**kwargs)

    monkeypatch.setattr(tool, "label_one", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        tool.make_motion_labels(
            work, SPLIT, settings=tool.Settings(static_speed=0.1), overwrite=True, show_progress=False
        )
    (done,) = calls
    (rest,) = [f for f in ANNOTATED if f != done]
    assert cityscapes_path(work, "motion", SPLIT, done).exists()
    assert not cityscapes_path(work, "motion", SPLIT, rest).exists()
    monkeypatch.setattr(tool, "label_one", original)
    result = tool.make_motion_labels(
        work, SPLIT, settings=tool.Settings(static_speed=0.1), show_progress=False
    )
    assert (result.labelled_now, result.already_done) == (1, 1)
