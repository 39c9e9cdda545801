"""Issue 11, damaged inputs and reruns: nothing mixed, nothing half-written, one line naming the bad file.

Oracles: a clean run of the same tool (byte-for-byte equal trees), rosbags' own reader, the file system."""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import CITY, SPLIT, synthetic_root

from mtl_perception.atomic import atomic_path, atomic_write_bytes, temporary_name_of
from mtl_perception.data.cityscapes import FrameId, cityscapes_path

FLOW = "leftImg8bit_flow_farneback_confidence"
FLOW_ARGS = ["--split", "train", "--height", "32", "--width", "64", "--device", "cpu"]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _one_error_line(err: str, prog: str) -> str:
    lines = [line for line in err.strip().splitlines() if "warning" not in line and "%|" not in line]
    assert "Traceback" not in err and len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def flow_source(tmp_path_factory) -> Path:
    """A tiny tree where every frame f >= 2 is annotated (6 flow files)."""
    from mtl_perception.data.synthetic import main

    root = tmp_path_factory.mktemp("flow_source")
    common = ["--split", "train", "--sequences", "1", "--frames", "8", "--height", "32", "--width", "64"]
    assert main(["--out", str(root), *common, "--annotate", "all", "--flow-gap", "2"]) == 0
    return root


def _flow_tree(flow_source: Path, where: Path, *params: str) -> Path:
    from mtl_perception_training.make_flow_dataset import main

    shutil.copytree(flow_source, where)
    assert main(["--root", str(where), *FLOW_ARGS, *params]) == 0
    return where


def test_failed_overwrite_never_leaves_mixed_flow_parameters(flow_source, tmp_path, capsys):
    """Before: the failed --overwrite had already written the new sidecar; the rerun reported "computed 0,
    already done 6" over PNGs of the old parameters."""
    from mtl_perception_training.make_flow_dataset import main

    root = _flow_tree(flow_source, tmp_path / "data")  # cuda preset
    clean = _flow_tree(flow_source, tmp_path / "clean", "--params", "common")
    damaged = cityscapes_path(root, "image", "train", FrameId("synthetic", 0, 5))
    original = damaged.read_bytes()
    damaged.write_bytes(original[: len(original) // 2])
    capsys.readouterr()
    assert main(["--root", str(root), *FLOW_ARGS, "--params", "common", "--overwrite"]) == 2
    assert damaged.name in _one_error_line(capsys.readouterr().err, "make_flow_dataset")
    damaged.write_bytes(original)
    assert main(["--root", str(root), *FLOW_ARGS, "--params", "common"]) == 0
    assert capsys.readouterr().out.startswith("make_flow_dataset: computed 3, already done 3 (32x64, ")
    assert _digests(root / FLOW) == _digests(clean / FLOW)
    assert main(["--root", str(root), *FLOW_ARGS]) == 2  # the old parameters are refused now


def test_truncated_or_empty_flow_files_are_recomputed(flow_source, tmp_path, capsys):
    from mtl_perception_training.make_flow_dataset import main

    root = _flow_tree(flow_source, tmp_path / "data")
    files = sorted((root / FLOW).rglob("*_flow.png"))
    expected = _digests(root / FLOW)
    files[0].write_bytes(files[0].read_bytes()[:100])
    files[1].write_bytes(b"")
    capsys.readouterr()
    assert main(["--root", str(root), *FLOW_ARGS]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("make_flow_dataset: computed 2, already done 4 (")
    assert files[0].name in captured.err and files[1].name in captured.err
    assert _digests(root / FLOW) == expected


def test_flow_sidecar_errors_name_the_file(flow_source, tmp_path, capsys):
    from mtl_perception_training.make_flow_dataset import main

    root = _flow_tree(flow_source, tmp_path / "data")
    sidecar = root / FLOW / "train" / "flow_params.json"
    sidecar.write_text('{"farneback": ')
    capsys.readouterr()
    assert main(["--root", str(root), *FLOW_ARGS]) == 2
    assert str(sidecar) in _one_error_line(capsys.readouterr().err, "make_flow_dataset")
    sidecar.unlink()  # flow files whose parameters nobody recorded are not "done" either
    assert main(["--root", str(root), *FLOW_ARGS]) == 2
    assert "no flow_params.json" in _one_error_line(capsys.readouterr().err, "make_flow_dataset")
    assert main(["--root", str(root), *FLOW_ARGS, "--overwrite"]) == 0
    assert json.loads(sidecar.read_text())["complete"] is True


def test_synthetic_overwrite_replaces_the_split(tmp_path):
    """Before: 30 frames of one seed, then 25 of another with --overwrite, left frames 25-29 of the first."""
    from mtl_perception.data.synthetic import main

    args = ["--split", "train", "--sequences", "1", "--height", "32", "--width", "64"]
    assert main(["--out", str(tmp_path / "data"), *args, "--frames", "30", "--seed", "1"]) == 0
    assert main(["--out", str(tmp_path / "data"), *args, "--frames", "25", "--seed", "2", "--overwrite"]) == 0
    assert main(["--out", str(tmp_path / "clean"), *args, "--frames", "25", "--seed", "2"]) == 0
    assert _digests(tmp_path / "data") == _digests(tmp_path / "clean")


def test_synthetic_output_of_another_city_is_kept(tmp_path):
    from mtl_perception.data.synthetic import main

    args = ["--out", str(tmp_path), "--sequences", "1", "--frames", "3", "--height", "32", "--width", "64"]
    assert main([*args, "--city", "one"]) == 0
    first = _digests(tmp_path)
    assert main([*args, "--city", "two"]) == 0
    assert main([*args, "--city", "two", "--seed", "4", "--overwrite"]) == 0
    both = _digests(tmp_path)
    assert {k: v for k, v in both.items() if "/one/" in k} == first


def test_damaged_input_image_of_a_bag_is_one_line(tmp_path, capsys):
    from mtl_perception.data.bag import main

    root = tmp_path / "root"
    for sub in ("leftImg8bit_sequence", "camera", "timestamp_sequence"):
        shutil.copytree(synthetic_root() / sub, root / sub)
    image = cityscapes_path(root, "image_sequence", SPLIT, FrameId(CITY, 0, 7))
    image.write_bytes(image.read_bytes()[:300])
    assert main(["--root", str(root), "--split", SPLIT, "--out", str(tmp_path / "out" / "bag")]) == 2
    assert image.name in _one_error_line(capsys.readouterr().err, "cityscapes_to_bag")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.fixture(scope="module")
def small_bags(tmp_path_factory) -> dict[str, Path]:
    from mtl_perception.data.bag import convert

    where = tmp_path_factory.mktemp("bags")
    bags = {}
    for storage in ("mcap", "sqlite3"):
        bags[storage] = where / storage
        convert(synthetic_root(), SPLIT, bags[storage], sequence=0, storage=storage)
    return bags


def _damaged_copy(bag: Path, where: Path, damage: str) -> Path:
    copy = where / f"{bag.name}-{damage}"
    shutil.copytree(bag, copy)
    storage = next(p for p in copy.iterdir() if p.name != "metadata.yaml")
    if damage == "truncated":
        storage.write_bytes(storage.read_bytes()[: storage.stat().st_size // 2])
    elif damage == "missing":
        storage.unlink()
    elif damage == "garbage":
        storage.write_bytes(b"\x13garbage" * 1000)
    elif damage == "metadata":
        (copy / "metadata.yaml").write_text("rosbag2_bagfile_information: {version: [unclosed\n")
    return copy


@pytest.mark.parametrize(
    "storage, damage",
    [
        ("mcap", "truncated"),
        ("sqlite3", "truncated"),
        ("mcap", "missing"),
        ("sqlite3", "missing"),
        ("sqlite3", "garbage"),
        ("mcap", "garbage"),
        ("mcap", "metadata"),
    ],
)
def test_play_bag_on_a_damaged_bag_is_one_line(small_bags, tmp_path, capsys, storage, damage):
    """Before: an AnyReaderError traceback. Refused before rclpy starts, so this needs no ROS."""
    from mtl_perception.ros.play_bag import main

    bag = _damaged_copy(small_bags[storage], tmp_path, damage)
    assert main([str(bag), "--quiet", "--rate", "50"]) == 2
    assert str(bag) in _one_error_line(capsys.readouterr().err, "play_bag")


@pytest.mark.ros
def test_play_bag_skips_and_reports_a_frame_that_does_not_decode(small_bags, tmp_path, capsys):
    """Before: the frame with flipped header bytes was published and play_bag exited 0."""
    pytest.importorskip("rclpy")
    from rosbags.highlevel import AnyReader

    from mtl_perception.data.bag import FRAME_ID
    from mtl_perception.ros.play_bag import main

    bag = tmp_path / "flipped"
    shutil.copytree(small_bags["sqlite3"], bag)
    with AnyReader([bag]) as reader:
        conn = next(c for c in reader.connections if c.topic == "/camera/image_raw")
        raw = bytes(next(iter(reader.messages(connections=[conn])))[2])
    # CDR: 4-byte encapsulation, stamp (8), frame_id (u32 length + text + NUL), then height (u32, aligned)
    height_at = 4 + 8 + 4 + len(FRAME_ID) + 1
    height_at += -(height_at - 4) % 4
    assert struct.unpack_from("<I", raw, height_at)[0] == 128
    storage = next(bag.glob("*.db3"))
    data = bytearray(storage.read_bytes())
    where = data.find(raw[:200])
    assert where > 0 and data.find(raw[:200], where + 1) < 0
    data[where + height_at : where + height_at + 4] = b"\xff\xff\xff\x7f"
    storage.write_bytes(bytes(data))
    assert main([str(bag), "--quiet", "--rate", "50"]) == 2
    err = capsys.readouterr().err
    assert "warning: skipped message" in err and "/camera/image_raw" in err
    assert "1 messages did not decode" in _one_error_line(err, "play_bag")


def test_a_live_writers_temporary_is_kept_and_a_killed_ones_removed(tmp_path):
    """The lock decides: a temporary held by a running process stays; one left by a SIGKILL goes."""
    code = (
        "import sys, time; from mtl_perception.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_bytes(b'half'); print(tmp, flush=True); time.sleep(60)\n"
    )
    writers = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path / f"{name}.pt")], stdout=subprocess.PIPE)
        for name in ("killed", "alive")
    ]
    temporaries = [Path(w.stdout.readline().decode().strip()) for w in writers]
    try:
        writers[0].send_signal(signal.SIGKILL)
        writers[0].wait(10)
        assert all(t.exists() for t in temporaries)
        atomic_write_bytes(tmp_path / "other.bin", b"x")
        assert not temporaries[0].exists() and temporaries[1].exists()
    finally:
        writers[1].kill()
        writers[1].wait(10)


def test_a_full_disk_is_one_line_and_leaves_no_temporary(flow_source, tmp_path, capsys):
    """Disk full, simulated with RLIMIT_FSIZE (EFBIG instead of ENOSPC; the same path through the code)."""
    from mtl_perception_training.make_flow_dataset import main

    root = tmp_path / "data"
    shutil.copytree(flow_source, root)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (200, limits[1]))
    try:
        code = main(["--root", str(root), *FLOW_ARGS])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
        signal.signal(signal.SIGXFSZ, handler)
    assert code == 2
    line = _one_error_line(capsys.readouterr().err, "make_flow_dataset")
    assert "flow_params.json: file too large" in line and ".~" not in line
    assert [p for p in (root / FLOW).rglob("*") if p.is_file()] == []


def test_atomic_errors_name_the_target_not_the_temporary(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path)):
        atomic_write_bytes(tmp_path, b"x")
    with pytest.raises(OSError) as error, atomic_path(tmp_path / "t.bin") as tmp:
        raise OSError(28, "No space left on device", str(tmp))
    assert error.value.filename == str(tmp_path / "t.bin") and error.value.errno == 28
    assert not any(temporary_name_of(p.name) for p in tmp_path.iterdir())
