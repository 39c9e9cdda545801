"""Issue 11, interrupts: real SIGINT/SIGTERM/SIGKILL sent to the real tools (subprocesses). A tool stopped by
a signal exits 130/143 with one line and no traceback, stops its worker processes, and leaves neither a
half-written output nor hidden temporaries; what a SIGKILL leaves, the next run removes.

To interrupt a run at a known point, ``_slowed`` starts the tool with one of its internal steps delayed (a
sleep before the step); everything else, the signal included, is the real thing."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from data_fixtures import CITY, SPLIT, synthetic_root

from mtl_perception.atomic import temporary_name_of

SLOWED = """
import importlib, sys, time
module, name, delay, entry = sys.argv[1:5]
target = importlib.import_module(module)
original = getattr(target, name)
def slowed(*args, **kwargs):
    time.sleep(float(delay))
    return original(*args, **kwargs)
setattr(target, name, slowed)
sys.exit(importlib.import_module(entry).main(sys.argv[5:]))
"""
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# one torch thread here too: the CPU Farnebäck's last bit depends on the thread count, and the flow files
# written by the subprocesses (one thread) are compared byte for byte with ones computed here
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _slowed(module: str, name: str, delay: float, entry: str, argv: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", SLOWED, module, name, str(delay), entry, *map(str, argv)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


def _wait_for(condition, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"the tool ended before the signal: {process.communicate()}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"timed out waiting; stderr: {process.communicate()[1]}")
        time.sleep(0.02)


def _stop(process: subprocess.Popen, signum: int, timeout: float = 20.0) -> tuple[int, str]:
    process.send_signal(signum)
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"the tool did not end within {timeout} s of signal {signum}") from None
    return process.returncode, err


def _assert_one_line(err: str, prog: str, word: str) -> None:
    assert "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == f"{prog}: {word}", err


def _leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".*") if temporary_name_of(p.name)]


def _digests(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


SYNTH = "mtl_perception.data.synthetic.cli"
SYNTH_ARGS = ["--split", "train", "--sequences", "2", "--frames", "6", "--height", "32", "--width", "64"]


def _synthetic_run(root: Path, *extra: str) -> subprocess.Popen:
    return _slowed(
        "mtl_perception.data.synthetic.writer",
        "render_frame",
        0.4,
        SYNTH,
        ["--out", root, *SYNTH_ARGS, "--workers", "2", *extra],
    )


def _workers_writing(process: subprocess.Popen, root: Path):
    def ready() -> bool:
        children = psutil.Process(process.pid).children()
        staged = [p for p in root.glob(".*staging") if any(p.rglob("*.png"))]
        return len(children) >= 2 and bool(staged)

    return ready


def test_sigterm_stops_synthetic_workers_and_keeps_the_old_dataset(tmp_path):
    """Before: workers re-parented to PID 1 kept writing into the dataset, then hung; exit -15."""
    from mtl_perception.data.synthetic import main

    root = tmp_path / "data"
    assert main(["--out", str(root), *SYNTH_ARGS, "--seed", "1"]) == 0
    before = _digests(root)
    process = _synthetic_run(root, "--seed", "2", "--overwrite")
    _wait_for(_workers_writing(process, root), process)
    workers = psutil.Process(process.pid).children()
    code, err = _stop(process, signal.SIGTERM)
    assert code == 143
    _assert_one_line(err, "make_synthetic_cityscapes", "terminated")
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"workers still running: {alive}"
    assert _digests(root) == before  # the interrupted --overwrite changed nothing
    assert _leftovers(root) == []


def test_sigkill_of_the_tool_ends_its_workers_and_the_rerun_removes_the_leftovers(tmp_path):
    from mtl_perception.data.synthetic import main

    root = tmp_path / "data"
    process = _synthetic_run(root, "--seed", "2")
    _wait_for(_workers_writing(process, root), process)
    workers = psutil.Process(process.pid).children()
    process.kill()
    process.communicate(timeout=10)
    gone, alive = psutil.wait_procs(workers, timeout=5)
    assert not alive, f"workers outlived a SIGKILLed tool: {alive}"
    assert _leftovers(root) and not (root / "leftImg8bit_sequence").exists()  # nothing published
    assert main(["--out", str(root), *SYNTH_ARGS, "--seed", "2"]) == 0  # not refused: nothing was published
    assert _leftovers(root) == []
    assert main(["--out", str(tmp_path / "clean"), *SYNTH_ARGS, "--seed", "2"]) == 0
    assert _digests(root) == _digests(tmp_path / "clean")


def test_sigterm_during_cityscapes_to_bag_leaves_nothing_and_the_rerun_works(tmp_path):
    """Before: exit -15 and a hidden half-written bag folder beside the output."""
    from mtl_perception.data.bag import main

    out = tmp_path / "bags" / "run"
    argv = ["--root", synthetic_root(), "--split", SPLIT, "--out", out]
    process = _slowed("mtl_perception.data.bag", "read_image", 0.2, "mtl_perception.data.bag", argv)
    _wait_for(lambda: any((tmp_path / "bags").glob(".run*")), process)
    time.sleep(0.5)  # a few frames into the bag
    code, err = _stop(process, signal.SIGTERM)
    assert code == 143
    _assert_one_line(err, "cityscapes_to_bag", "terminated")
    assert list((tmp_path / "bags").iterdir()) == []
    assert main([str(a) for a in argv]) == 0 and (out / "metadata.yaml").is_file()


def test_interrupted_overwrite_of_the_flow_dataset_is_finished_by_the_rerun(tmp_path):
    """Before: the interrupted --overwrite had written the new sidecar; the rerun reported "computed 0,
    already done N" over PNGs of the old parameters. Now the rerun equals a clean run, byte for byte."""
    from mtl_perception.data.synthetic import main as synthetic
    from mtl_perception_training.make_flow_dataset import main

    data = tmp_path / "data"
    common = ["--split", "train", "--sequences", "1", "--frames", "8", "--height", "32", "--width", "64"]
    assert synthetic(["--out", str(data), *common, "--annotate", "all", "--flow-gap", "2"]) == 0
    clean = tmp_path / "clean"
    shutil.copytree(data, clean)
    flow_args = ["--split", "train", "--height", "32", "--width", "64", "--device", "cpu"]
    assert main(["--root", str(data), *flow_args]) == 0  # the cuda preset
    flow_dir = data / "leftImg8bit_flow_farneback_confidence" / "train"
    old = {p: p.stat().st_mtime_ns for p in flow_dir.rglob("*_flow.png")}
    assert len(old) == 6
    process = _slowed(
        "mtl_perception_training.make_flow_dataset",
        "frame_flow",
        0.5,
        "mtl_perception_training.make_flow_dataset",
        ["--root", data, *flow_args, "--params", "common", "--overwrite"],
    )

    def recomputed() -> int:
        return sum(p.is_file() and p.stat().st_mtime_ns != stamp for p, stamp in old.items())

    _wait_for(lambda: recomputed() >= 2, process)  # two frames into the new parameters
    code, err = _stop(process, signal.SIGINT)
    assert code == 130
    _assert_one_line(err, "make_flow_dataset", "interrupted")
    assert _leftovers(data) == []
    assert main(["--root", str(data), *flow_args, "--params", "common"]) == 0
    assert main(["--root", str(clean), *flow_args, "--params", "common"]) == 0
    assert _digests(data / "leftImg8bit_flow_farneback_confidence") == _digests(
        clean / "leftImg8bit_flow_farneback_confidence"
    )


def test_export_model_signals_leave_no_temporary_file(tmp_path):
    """Regression: export used to leave its mkstemp temporary `.m.onnx.<random>.onnx` (0 bytes when killed
    early) after SIGTERM and SIGKILL. SIGTERM now leaves nothing; a SIGKILL leftover is removed by the next
    export into the folder."""
    from mtl_perception.inference.export_cli import main

    out = tmp_path / "m.onnx"
    argv = ["--preset", "lite", "--height", "32", "--width", "64", "--out", out]
    for signum in (signal.SIGTERM, signal.SIGKILL):
        process = _slowed("onnx", "load", 30, "mtl_perception.inference.export_cli", argv)
        _wait_for(lambda: _leftovers(tmp_path), process)
        code, err = _stop(process, signum)
        if signum == signal.SIGTERM:
            assert code == 143
            _assert_one_line(err, "export_model", "terminated")
            assert list(tmp_path.iterdir()) == []
    assert code == -signal.SIGKILL and _leftovers(tmp_path) and not out.exists()
    assert main([str(a) for a in argv]) == 0  # the next export into the folder removes the leftover
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


@pytest.mark.ros
def test_sigterm_ends_play_bag_with_143(tmp_path):
    """Regression (rclpy's handler turned SIGTERM into a normal end, exit 0): now 143."""
    pytest.importorskip("rclpy")
    from mtl_perception.data.bag import convert

    bag = tmp_path / "bag"
    convert(synthetic_root(), SPLIT, bag, city=CITY, sequence=0)
    command = [sys.executable, "-m", "mtl_perception.ros.play_bag", str(bag), "--loop", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    time.sleep(4)  # rclpy up, the bag looping
    assert process.poll() is None, process.communicate()
    code, err = _stop(process, signal.SIGTERM)
    assert code == 143
    _assert_one_line(err, "play_bag", "terminated")


def test_a_signal_while_publishing_waits_until_every_folder_is_in_place():
    """The synthetic generator moves its folders into place under signals_deferred: all, then the signal."""
    from mtl_perception.signals import Terminated, signals_deferred, signals_raise

    moved = []
    with pytest.raises(Terminated), signals_raise():
        with signals_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # the handler would have run by now
            moved.append("every folder")
        moved.append("after the block")
    assert moved == ["every folder"]
