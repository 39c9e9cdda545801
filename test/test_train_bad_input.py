"""train.py on bad input: each problem is one line on stderr naming it, exit status 2, and nothing that was
already written is lost (subprocesses for what a user meets first; in-process where a fault is injected)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from train_fixtures import SPLIT, copy_of_root, tiny_args, train_root

from mtl_perception.atomic import temporary_name_of
from mtl_perception_training import train


def _cli(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, train.__file__, *argv], capture_output=True, text=True, env=env, timeout=300
    )


def _one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("train.py: error: ")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-2000:]
    return lines[0]


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One finished 1-epoch run, shared by the tests that must leave it untouched."""
    out = tmp_path_factory.mktemp("run") / "out"
    torch.set_num_threads(1)
    train.main(
        train.parse_args(tiny_args(train_root(), out, "--no-export_onnx", "--tensorboard_images", "0"))
    )
    return out


def test_missing_and_empty_data_folders(tmp_path, capsys):
    done = _cli(*tiny_args(tmp_path / "nowhere", tmp_path / "out"))
    assert done.returncode == 2
    assert f"--data_path {tmp_path / 'nowhere'}: no such folder" in _one_error_line(done.stderr)
    empty = tmp_path / "empty"
    (empty / "leftImg8bit" / SPLIT).mkdir(parents=True)
    assert train.cli(tiny_args(empty, tmp_path / "out")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"no images for split '{SPLIT}' ({empty / 'leftImg8bit' / SPLIT} is empty)" in line
    assert not (tmp_path / "out").exists()  # nothing created before the data was found


def test_a_missing_flow_file_is_named_with_the_command_that_makes_it(tmp_path):
    root = copy_of_root(tmp_path)
    flow = sorted((root / "leftImg8bit_flow_farneback_confidence" / SPLIT).rglob("*_flow.png"))[1]
    flow.unlink()
    done = _cli(*tiny_args(root, tmp_path / "out"))
    line = _one_error_line(done.stderr)
    assert done.returncode == 2 and str(flow) in line and f"make_flow_dataset --root {root}" in line


def test_mismatched_sizes_name_the_file_even_from_a_worker(tmp_path, capsys, torch_one_thread):
    root = copy_of_root(tmp_path)
    motion = sorted((root / "gtFine" / SPLIT).rglob("*_motion.png"))
    for path in motion:  # every sample, so the first batch meets one whatever the order
        cv2.imwrite(str(path), np.zeros((64, 100), np.uint8))
    assert train.cli(tiny_args(root, tmp_path / "out", "--workers", "1")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "motion of" in line and "is (64, 100), expected (128, 256)" in line and "_motion.png" in line


def test_nan_loss_stops_naming_step_and_task_and_keeps_the_last_checkpoint(
    tmp_path, monkeypatch, capsys, torch_one_thread
):
    """Also --overwrite: the stale outputs of an earlier run in the folder are gone, not mixed in."""
    out = tmp_path / "out"
    (out / "tensorboard").mkdir(parents=True)
    (out / "tensorboard" / "events.out.tfevents.old").write_bytes(b"stale")
    (out / "metrics.json").write_text('[{"epoch": 99}]')
    real = train.build_criterion
    calls = {"n": 0}

    def criterion_with_nan_at_step_3(**kwargs):
        criterion = real(**kwargs)

        def call(outputs, batch):
            losses = criterion(outputs, batch)
            calls["n"] += 1
            if calls["n"] == 3:  # epoch 2, step 1
                losses["semantic"] = losses["semantic"] * float("nan")
            return losses

        return call

    monkeypatch.setattr(train, "build_criterion", criterion_with_nan_at_step_3)
    assert (
        train.cli(tiny_args(train_root(), out, "--epochs", "2", "--overwrite", "--tensorboard_images", "0"))
        == 2
    )
    line = _one_error_line(capsys.readouterr().err)
    assert "non-finite loss at epoch 2 step 1 (global step 3): semantic = nan" in line
    assert f"the last finite checkpoint is kept: {out / 'checkpoint.pt'}" in line
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert [r["epoch"] for r in json.loads((out / "metrics.json").read_text())] == [1]
    assert not (out / "tensorboard" / "events.out.tfevents.old").exists()
    assert not [p for p in out.iterdir() if temporary_name_of(p.name)]  # no temporary of an atomic write


def test_an_existing_output_dir_is_never_overwritten_without_the_flag(tmp_path, finished_run):
    before = _digest(finished_run)
    done = _cli(*tiny_args(train_root(), finished_run))
    line = _one_error_line(done.stderr)
    assert done.returncode == 2 and f"--output_dir {finished_run} already holds" in line
    assert "pass --overwrite" in line and f"--resume {finished_run / 'checkpoint.pt'}" in line
    assert _digest(finished_run) == before


def test_resume_from_another_configuration_is_refused(tmp_path, finished_run, capsys):
    before = _digest(finished_run)
    checkpoint = str(finished_run / "checkpoint.pt")
    done = _cli(
        *tiny_args(train_root(), finished_run),
        "--epochs",
        "2",
        "--resume",
        checkpoint,
        "--preset",
        "ti",
        "--lr",
        "0.01",
    )
    line = _one_error_line(done.stderr)
    assert done.returncode == 2 and "comes from another configuration" in line
    assert "--lr 0.0001 (this run: 0.01)" in line and "--preset lite (this run: ti)" in line
    for wrong, expected in (
        ("best.pt", "best.pt is a model checkpoint: resume from checkpoint.pt"),
        ("metrics.json", "not a loadable training checkpoint"),
    ):
        argv = tiny_args(train_root(), tmp_path / "new", "--resume", str(finished_run / wrong))
        assert train.cli(argv) == 2
        assert expected in _one_error_line(capsys.readouterr().err)
    assert _digest(finished_run) == before
