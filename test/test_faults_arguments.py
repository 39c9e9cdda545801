"""Issue 11, bad arguments: one line naming the argument or the file, a non-zero exit, nothing written.

Each case runs the console script's ``main`` in this process (the exit code and stderr are what the script
gives: ``main`` is the entry point); one case runs the installed script itself."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from data_fixtures import SPLIT, synthetic_root

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _run(main, argv: list[str], capsys) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as stop:  # argparse
        code = stop.code
    return code, capsys.readouterr().err


def _assert_one_line(code: int, err: str, prog: str, expected: str) -> None:
    lines = [line for line in err.strip().splitlines() if not line.startswith("usage:") and "%|" not in line]
    lines = [line for line in lines if not line.startswith(" ")]  # argparse's usage continuation lines
    assert code == 2, err
    assert "Traceback" not in err and len(lines) == 1, err
    assert lines[0].startswith(f"{prog}: error: ") and expected in lines[0], err


def _files(where: Path) -> list[Path]:
    return sorted(p for p in where.rglob("*") if p.is_file()) if where.exists() else []


# ---- make_synthetic_cityscapes --------------------------------------------------------------------------

SYNTH_MODULE = "mtl_perception.data.synthetic.cli"
SYNTH = ["--sequences", "1", "--frames", "2", "--height", "16", "--width", "32"]


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--fps", "nan"], "argument --fps: expected a positive finite number, got 'nan'"),
        (["--fps", "0"], "argument --fps: expected a positive finite number, got '0'"),
        (["--fps", "-5"], "argument --fps"),
        (["--fps", "inf"], "argument --fps"),
        (["--city", ""], "argument --city: expected a non-empty name"),
        (["--city", "a_b"], "argument --city"),
        (["--seed", "-1"], "argument --seed: expected a non-negative integer, got '-1'"),
        (["--workers", "0"], "argument --workers: expected a positive integer"),
        (["--frames", "x"], "argument --frames: expected a positive integer, got 'x'"),
    ],
)
def test_make_synthetic_cityscapes_arguments(tmp_path, capsys, extra, expected):
    from mtl_perception.data.synthetic import main

    code, err = _run(main, ["--out", tmp_path / "out", *SYNTH, *extra], capsys)
    _assert_one_line(code, err, "make_synthetic_cityscapes", expected)
    assert not (tmp_path / "out").exists()


def test_generate_refuses_bad_values_too(tmp_path):
    from mtl_perception.data.synthetic import generate

    for kwargs, message in (
        ({"fps": float("nan")}, "fps must be a positive finite"),
        ({"fps": 0.0}, "fps must be a positive finite"),
        ({"seed": -1}, "seed must be a non-negative"),
        ({"city": ""}, "city names must be non-empty"),
    ):
        with pytest.raises(ValueError, match=message):
            generate(tmp_path, frames=2, height=16, width=32, sequences=1, show_progress=False, **kwargs)
    assert not any(tmp_path.iterdir())


def test_the_installed_script_gives_the_same_line(tmp_path):
    script = Path(sys.executable).with_name("make_synthetic_cityscapes")
    command = (
        [str(script)] if script.exists() else [sys.executable, "-m", "mtl_perception.data.synthetic.cli"]
    )
    done = subprocess.run([*command, "--out", str(tmp_path), "--seed", "-1"], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert (
        done.stderr.strip().splitlines()[-1].startswith("make_synthetic_cityscapes: error: argument --seed")
    )


# ---- flow_tool ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    cv2.imwrite(str(where / "a.png"), rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    cv2.imwrite(str(where / "b.png"), rng.integers(0, 255, (32, 48, 3), dtype=np.uint8))
    cv2.imwrite(str(where / "tall.png"), rng.integers(0, 255, (40, 48, 3), dtype=np.uint8))
    (where / "text.png").write_text("not an image\n")
    (where / "empty.png").write_bytes(b"")
    (where / "cut.png").write_bytes((where / "a.png").read_bytes()[:200])
    (where / "folder.png").mkdir()
    return where


def _flow_cases():
    return [
        (["{i}/a.png", "{i}/tall.png", "--out", "{o}/f.png"], "images differ in size"),
        (["{i}/a.png", "{i}/text.png", "--out", "{o}/f.png"], "text.png"),
        (["{i}/empty.png", "{i}/b.png", "--out", "{o}/f.png"], "empty.png"),
        (["{i}/a.png", "{i}/cut.png", "--out", "{o}/f.png"], "cut.png"),
        (["{i}/a.png", "{i}/missing.png", "--out", "{o}/f.png"], "missing file: "),
        (["{i}/a.png", "{i}/folder.png", "--out", "{o}/f.png"], "folder.png is a directory"),
        (["{i}/a.png", "{i}/b.png", "--out", "{i}/b.png"], "b.png exists; pass --overwrite"),
        (["{i}/a.png", "{i}/b.png", "--out", "{o}"], "is a directory"),
        (["{i}/a.png", "{i}/b.png", "--out", "{o}/f.flo"], "use a .png name"),
        (["{i}/a.png", "{i}/b.png", "--out", "{o}/f.png", "--device", "foo"], "argument --device"),
        (
            ["{i}/a.png", "{i}/b.png", "--out", "{o}/f.png", "--color", "{o}/nodir/c.png"],
            "nodir does not exist",
        ),
        (["{i}/a.png", "{i}/b.png", "--out", "{o}/f.png", "--color", "{i}/a.png"], "a.png exists"),
        (["{i}/a.png", "{i}/b.png", "--out", "{o}/f.png", "--color", "{o}/f.png"], "name the same file"),
        (["{i}/a.png", "{i}/b.png", "--out", "{o}/no/f.png"], "output folder"),
        (["--demo", "--out", "{o}/d", "--size", "abc"], "argument --size: expected HxW"),
        (["--demo", "--out", "{o}/d", "--size", "0x0"], "argument --size: expected a positive HxW"),
        (["--demo", "--out", "{i}/a.png"], "is a file"),
        (["{i}/a.png", "--out", "{o}/f.png"], "PREV and NEXT images are required"),
    ]


@pytest.mark.parametrize("argv, expected", _flow_cases())
def test_flow_tool_errors(images, tmp_path, capsys, argv, expected):
    """Before: 14 of these ended in a traceback; `--color nodir/c.png` exited 0 without writing it, and an
    existing --color failed only after the flow PNG was written."""
    from mtl_perception.flow.cli import main

    out = tmp_path / "out"
    out.mkdir()
    before = {p: p.read_bytes() for p in _files(images)}
    code, err = _run(main, [a.format(i=images, o=out) for a in argv], capsys)
    _assert_one_line(code, err, "flow_tool", expected)
    assert _files(out) == []  # nothing written (the flow PNG included)
    assert {p: p.read_bytes() for p in _files(images)} == before


def test_flow_tool_refuses_a_pair_too_large_for_memory_before_computing(
    images, tmp_path, capsys, monkeypatch
):
    """Before: a 12000x12000 pair failed after 93 s. The available memory is lowered here instead of
    writing such a pair; the refusal must come before any flow is computed."""
    import psutil

    from mtl_perception.flow import cli

    class Memory:
        available = 32 * 48 * cli.BYTES_PER_PIXEL - 1

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory)
    monkeypatch.setattr(cli, "compute_flow", lambda **kwargs: pytest.fail("flow computed"))
    code, err = _run(cli.main, [images / "a.png", images / "b.png", "--out", tmp_path / "f.png"], capsys)
    _assert_one_line(code, err, "flow_tool", "48x32 pair needs about")
    assert _files(tmp_path) == []


# ---- export_model ---------------------------------------------------------------------------------------


class Executes:
    """A pickled object whose loading would run code: torch's weights-only loader refuses it."""

    def __reduce__(self):
        return (os.system, ("true",))


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--preset", "lite", "--out", "{t}"], "is a directory"),
        (["--preset", "lite", "--out", "{t}/m.onnx", "--opset", "99"], "argument --opset: expected an opset"),
        (["--preset", "lite", "--out", "{t}/m.onnx", "--height", "0"], "argument --height"),
        (["--preset", "lite", "--out", "{t}/m.onnx", "--height", "40"], "multiples of 16, got 40x768"),
        (["--checkpoint", "{t}/folder", "--out", "{t}/m.onnx"], "folder is a directory"),
        (["--checkpoint", "{t}/none.pt", "--out", "{t}/m.onnx"], "checkpoint not found"),
        (
            ["--checkpoint", "{t}/evil.pt", "--out", "{t}/m.onnx"],
            "evil.pt: not a weights-only checkpoint (Trying to load unsupported GLOBAL posix.system",
        ),
        (
            ["--checkpoint", "{t}/garbage.pt", "--out", "{t}/m.onnx"],
            "garbage.pt: not a weights-only checkpoint (Unsupported operand",
        ),
        (["--preset", "lite", "--out", "{t}/file/m.onnx"], "file is a file, so"),
    ],
)
def test_export_model_errors(tmp_path, capsys, argv, expected):
    """Before: --opset 99 was a 918-line traceback, a directory checkpoint "not found", and a bad
    checkpoint repeated torch's advice to load it with weights_only=False."""
    from mtl_perception.inference.export_cli import main

    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 50)
    torch.save({"payload": Executes()}, tmp_path / "evil.pt")
    before = _files(tmp_path)
    code, err = _run(main, [a.format(t=tmp_path) for a in argv], capsys)
    _assert_one_line(code, err, "export_model", expected)
    assert "will likely succeed" not in err
    assert _files(tmp_path) == before


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_one_line(tmp_path, capsys):
    from mtl_perception.model.complexity import main

    tmp_path.chmod(0o500)
    try:
        code, err = _run(main, ["--height", "64", "--width", "128", "--json", tmp_path / "c.json"], capsys)
    finally:
        tmp_path.chmod(0o700)
    _assert_one_line(code, err, "model_complexity", "permission denied")
    assert _files(tmp_path) == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--height", "0"], "argument --height: expected a positive integer"),
        (["--height", "50", "--width", "64"], "multiples of 16"),
        (["--height", "64", "--width", "128", "--json", "{t}"], "is a directory"),
    ],
)
def test_model_complexity_errors(tmp_path, capsys, argv, expected):
    from mtl_perception.model.complexity import main

    code, err = _run(main, [a.format(t=tmp_path) for a in argv], capsys)
    _assert_one_line(code, err, "model_complexity", expected)


# ---- make_flow_dataset, cityscapes_to_bag, play_bag -----------------------------------------------------


@pytest.fixture
def flow_root(tmp_path) -> Path:
    root = tmp_path / "root"
    for sub in ("leftImg8bit", "leftImg8bit_sequence"):
        shutil.copytree(synthetic_root() / sub, root / sub)
    sidecar = root / "leftImg8bit_flow_farneback_confidence" / SPLIT / "flow_params.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text('{"an": "earlier run"}')
    return root


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--height", "0"], "argument --height: expected a positive integer"),
        (["--width", "-3"], "argument --width"),
        (["--gap", "0"], "argument --gap"),
        (["--device", "foo"], "argument --device"),
        (["--device", "tpu"], "argument --device: device 'tpu' is not a torch device"),
    ],
)
def test_make_flow_dataset_arguments(flow_root, capsys, extra, expected):
    """Before: --height 0 rewrote the sidecar before failing."""
    from mtl_perception_training.make_flow_dataset import main

    sidecar = flow_root / "leftImg8bit_flow_farneback_confidence" / SPLIT / "flow_params.json"
    code, err = _run(main, ["--root", flow_root, "--split", SPLIT, *extra], capsys)
    _assert_one_line(code, err, "make_flow_dataset", expected)
    assert sidecar.read_text() == '{"an": "earlier run"}'
    assert len(_files(flow_root / "leftImg8bit_flow_farneback_confidence")) == 1


@pytest.mark.parametrize(
    "extra, expected",
    [
        (["--width", "0", "--height", "64"], "argument --width: expected a positive integer, got '0'"),
        (["--width", "-5", "--height", "64"], "argument --width"),
        (["--width", "64"], "give both --width and --height"),
        (["--fps", "nan"], "argument --fps"),
        (["--snippet-gap", "-1"], "argument --snippet-gap"),
    ],
)
def test_cityscapes_to_bag_arguments(tmp_path, capsys, extra, expected):
    """Before: --width 0 was silently ignored, -5 a cv2 traceback."""
    from mtl_perception.data.bag import main

    argv = ["--root", synthetic_root(), "--split", SPLIT, "--out", tmp_path / "bag", *extra]
    code, err = _run(main, argv, capsys)
    _assert_one_line(code, err, "cityscapes_to_bag", expected)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["{t}", "--rate", "nan"], "argument --rate: expected a positive finite number, got 'nan'"),
        (["{t}", "--rate", "0"], "argument --rate"),
        (["{t}", "--rate", "inf"], "argument --rate"),
        (["{t}", "--wait-timeout", "-1"], "argument --wait-timeout"),
        (["{t}/none"], "no metadata.yaml"),
    ],
)
def test_play_bag_arguments(tmp_path, capsys, argv, expected):
    """Before: --rate nan played flat out."""
    from mtl_perception.ros.play_bag import main

    code, err = _run(main, [a.format(t=tmp_path) for a in argv], capsys)
    _assert_one_line(code, err, "play_bag", expected)


# ---- every console script goes through the shared entry ------------------------------------------------


def _console_scripts() -> dict[str, str]:
    source = (REPO / "setup.py").read_text()
    lines = source[source.index('"console_scripts": [') :].split("]", 1)[0].splitlines()
    scripts = [line.strip().strip('",') for line in lines if "=" in line and ":" in line]
    return dict(tuple(part.strip() for part in s.split("=")) for s in scripts)


def test_every_console_script_uses_the_shared_entry():
    scripts = _console_scripts()
    assert {"flow_tool", "export_model", "play_bag", "make_flow_dataset"} <= set(scripts), scripts
    for name, target in scripts.items():
        # the nodes shut down through rclpy's own path (issue 12)
        if name in ("mtl_perception_node", "mtl_perception_lifecycle_node"):
            continue
        module, function = target.split(":")
        main = getattr(importlib.import_module(module), function)
        assert getattr(main, "tool_prog", None) == name, f"{name} ({target}) does not use tool_main"


def test_a_bug_is_one_line_with_exit_1_and_the_traceback_on_request(capsys, monkeypatch):
    from mtl_perception.cli import tool_main

    @tool_main("tool")
    def main(argv=None) -> int:
        raise RuntimeError("first line\n" + "torch internals\n" * 900)

    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tool: error: unexpected RuntimeError: first line (set ")
    monkeypatch.setenv("MTL_PERCEPTION_TRACEBACK", "1")
    assert main([]) == 1
    assert "Traceback" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, code, line",
    [
        (ValueError("label map of x.png is 3-channel"), 2, "tool: error: label map of x.png is 3-channel\n"),
        (
            FileNotFoundError("no motion ground truth: y.png"),
            2,
            "tool: error: no motion ground truth: y.png\n",
        ),
        (RuntimeError("stack expects equal sizes"), 1, "tool: error: unexpected RuntimeError: stack expects"),
    ],
)
def test_an_error_in_a_dataloader_worker_is_the_original_line(capsys, error, code, line):
    """Regression: a worker's error arrived as its flattened traceback (exit 2, ~1,800 characters) or as
    "unexpected RuntimeError: Caught RuntimeError in DataLoader worker process 0." (exit 1). The error is
    re-raised by torch's own ExceptionWrapper, as the DataLoader does (a real worker: test_evaluate_cli)."""
    from torch._utils import ExceptionWrapper

    from mtl_perception.cli import tool_main

    try:
        raise error
    except Exception:
        wrapped = ExceptionWrapper(sys.exc_info(), where="in DataLoader worker process 0")

    @tool_main("tool")
    def main(argv=None) -> int:
        wrapped.reraise()
        return 0

    assert main([]) == code
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(line) and "Traceback" not in err, err
    assert "DataLoader worker" not in err


def test_an_error_in_a_spawned_process_is_the_original_line(capsys):
    """torch.multiprocessing.spawn re-raises a rank's error as ProcessRaisedException carrying the remote
    traceback (train.py --gpus 0 1); its last line decides the message and the exit code."""
    import traceback

    from mtl_perception.cli import tool_main
    from mtl_perception.model.checkpoint import CheckpointError

    def remote(error: Exception) -> Exception:
        try:
            raise error
        except Exception:
            text = traceback.format_exc()
        return torch.multiprocessing.ProcessRaisedException(
            f"\n\n-- Process 1 terminated with the following error:\n{text}", 1, 4242
        )

    for error, code, line in (
        (CheckpointError("--resume c.pt: version 9"), 2, "tool: error: --resume c.pt: version 9\n"),
        (KeyError("depth"), 1, "tool: error: unexpected KeyError: 'depth' (set"),
    ):

        @tool_main("tool")
        def main(argv=None, error=error) -> int:
            raise remote(error)

        assert main([]) == code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(line), err
