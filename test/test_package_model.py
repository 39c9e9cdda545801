"""training/package_model.py: a finished train.py run becomes the shipped files, with the provenance in
the checkpoint (weights_only-loadable), an ONNX export at the training size, and shipped.json whose SHA-256
match the files; a run folder that is not finished is named. The three files appear together or not at all
(signals at every step, a full disk, a folder in the way), one packaging per folder at a time."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
import torch
from folder_fixtures import digests, held_by_another_process, small_disk
from train_fixtures import tiny_args, train_root

from mtl_perception import atomic
from mtl_perception.atomic import temporary_name_of
from mtl_perception.inference import inspect_model_file
from mtl_perception.model import load_checkpoint, open_checkpoint
from mtl_perception.model.checkpoint import read_checkpoint
from mtl_perception_training import package_model, train


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, torch_one_thread):
    run = tmp_path_factory.mktemp("package") / "run"
    train.main(train.parse_args(tiny_args(train_root(), run, "--epochs", "2", "--no-export_onnx")))
    return run


def test_a_run_becomes_the_shipped_files_with_their_provenance(finished_run, tmp_path):
    recipe = tmp_path / "recipe.txt"
    recipe.write_text("make_synthetic_cityscapes --seed 1000\npython training/train.py --epochs 2\n")
    held_out = tmp_path / "held_out.json"
    held_out.write_text(json.dumps({"depth_ard": 0.5, "semantic_miou": 0.25, "motion_miou": 0.5}))
    out = tmp_path / "weights"
    argv = ["--run", str(finished_run), "--training-seconds", "12.5", "--recipe", str(recipe)]
    argv += ["--held-out", str(held_out), "--data-seeds", "train=1000", "val=2000", "--out-dir", str(out)]
    assert package_model.main(argv) == 0

    payload = read_checkpoint(out / "shipped.pt")  # torch.load(weights_only=True) inside
    provenance = payload["extra"]["provenance"]
    assert provenance["recipe"] == recipe.read_text().strip().splitlines()
    assert provenance["data_seeds"] == {"train": 1000, "val": 2000}
    assert provenance["training_seconds"] == 12.5 and provenance["held_out_metrics"]["depth_ard"] == 0.5
    assert provenance["train_flags"]["epochs"] == 2 and provenance["train_flags"]["img_resize"] == [64, 128]
    assert len(provenance["git_commit"].split("-")[0]) == 40
    records = json.loads((finished_run / "metrics.json").read_text())
    best = next(r for r in records if r["epoch"] == payload["extra"]["epoch"])
    assert provenance["validation_metrics"]["motion_miou"] == best["val/motion_miou"]
    _, _, trained_on = open_checkpoint(finished_run / "best.pt")
    assert payload["contract"] == trained_on.to_dict() and trained_on.network_size == (64, 128)

    summary = json.loads((out / "shipped.json").read_text())
    for name, digest in summary["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    assert summary["data_seeds"] == provenance["data_seeds"]
    assert summary["input_contract"] == trained_on.to_dict()
    # no path of this machine in the shipped files: the run and its data are under $WORK
    flags = summary["train_flags"]
    assert flags["data_path"].startswith("$WORK/") and flags["output_dir"].startswith("$WORK/")
    texts = json.dumps(summary) + json.dumps(provenance)
    assert str(finished_run) not in texts and str(tmp_path) not in texts

    shipped, _ = load_checkpoint(out / "shipped.pt")
    original, _ = load_checkpoint(finished_run / "best.pt")
    for key, value in original.state_dict().items():
        assert torch.equal(value, shipped.state_dict()[key]), key
    exported = inspect_model_file(out / "shipped.onnx")
    assert exported.fixed_size == (64, 128) and exported.contract == trained_on
    session = onnxruntime.InferenceSession(str(out / "shipped.onnx"), providers=["CPUExecutionProvider"])
    image, flow = torch.rand(1, 3, 64, 128) * 255, torch.randn(1, 3, 64, 128)
    depth = session.run(["depth"], {"image": image.numpy(), "flow": flow.numpy()})[0]
    with torch.no_grad():
        np.testing.assert_allclose(depth, shipped(image, flow)["depth"].numpy(), rtol=1e-3, atol=1e-3)


def test_an_unfinished_run_or_bad_seed_is_named(finished_run, tmp_path, capsys):
    (tmp_path / "half").mkdir()
    argv = ["--run", str(tmp_path / "half"), "--training-seconds", "1", "--out-dir", str(tmp_path / "w")]
    assert package_model.main(argv) == 2
    assert "best.pt not found" in capsys.readouterr().err and not (tmp_path / "w").exists()
    argv = ["--run", str(finished_run), "--training-seconds", "1", "--data-seeds", "train:1000"]
    assert package_model.main([*argv, "--out-dir", str(tmp_path / "w")]) == 2
    assert "--data-seeds 'train:1000'" in capsys.readouterr().err


# ---- the three files appear together or not at all ------------------------------------------------------


def _package(run, out: Path, seconds: str, *extra: str) -> int:
    return package_model.main(
        ["--run", str(run), "--training-seconds", seconds, "--out-dir", str(out), *extra]
    )


def _consistent(out: Path, seconds: float) -> None:
    """shipped.json describes the two model files beside it, all three from the packaging of ``seconds``."""
    summary = json.loads((out / "shipped.json").read_text())
    assert summary["training_seconds"] == seconds
    assert read_checkpoint(out / "shipped.pt")["extra"]["provenance"]["training_seconds"] == seconds
    for name, digest in summary["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest, name


def _no_leftovers(folder: Path) -> None:
    assert not [p for p in folder.rglob(".*") if temporary_name_of(p.name)]


@pytest.fixture
def packaged(finished_run, tmp_path):
    """A weights folder holding a packaging (training-seconds 1) and a file of its own (README.md)."""
    out = tmp_path / "weights"
    out.mkdir()
    (out / "README.md").write_text("kept")
    assert _package(finished_run, out, "1") == 0
    _consistent(out, 1.0)
    return out


@pytest.mark.parametrize(
    "where, name",
    [
        (package_model, "save_checkpoint"),  # shipped.pt staged
        (package_model, "export_onnx"),  # shipped.onnx staged
        (package_model, "atomic_write_bytes"),  # shipped.json staged
        (atomic, "_exchange"),  # while the new folder takes the old one's place
    ],
)
def test_a_signal_at_any_point_leaves_the_old_package_or_the_whole_new_one(
    finished_run, packaged, monkeypatch, capsys, where, name
):
    """Regression: a SIGINT right after shipped.pt left a new .pt beside the old .onnx and a .json
    describing the old model. A real SIGINT after each step: the old three files, untouched, until the
    swap; a signal during the swap waits until the new three are in place."""
    before = digests(packaged)
    original = getattr(where, name)

    def then_interrupted(*args, **kwargs):
        if name == "_exchange":
            os.kill(os.getpid(), signal.SIGINT)  # held back by the swap's signals_deferred
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGINT)
        return result

    monkeypatch.setattr(where, name, then_interrupted)
    assert _package(finished_run, packaged, "2") == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == "package_model: interrupted"
    if name == "_exchange":
        _consistent(packaged, 2.0)
        assert (packaged / "README.md").read_text() == "kept"
    else:
        assert digests(packaged) == before
    _no_leftovers(packaged.parent)


def test_without_an_atomic_swap_the_new_folder_still_replaces_the_old_whole(
    finished_run, packaged, monkeypatch
):
    """File systems without renameat2(RENAME_EXCHANGE): the old folder is moved aside, the new one in."""
    monkeypatch.setattr(atomic, "_exchange", lambda a, b: False)
    assert _package(finished_run, packaged, "3") == 0
    _consistent(packaged, 3.0)
    assert sorted(p.name for p in packaged.iterdir()) == [
        ".lock",
        "README.md",
        "shipped.json",
        "shipped.onnx",
        "shipped.pt",
    ]
    _no_leftovers(packaged.parent)


def test_sigterm_during_the_export_leaves_the_old_package(finished_run, packaged):
    """The real tool in a subprocess, stopped by SIGTERM while it exports (onnx.load slowed down)."""
    from test_faults_signals import _assert_one_line, _slowed, _stop, _wait_for

    before = digests(packaged)
    argv = ["--run", finished_run, "--training-seconds", "4", "--out-dir", packaged]
    process = _slowed("onnx", "load", 30, "mtl_perception_training.package_model", argv)
    _wait_for(lambda: list(packaged.parent.glob(".weights.*/weights/shipped.pt")), process)
    code, err = _stop(process, signal.SIGTERM)
    assert code == 143
    _assert_one_line(err, "package_model", "terminated")
    assert digests(packaged) == before
    _no_leftovers(packaged.parent)


def test_an_onnx_path_that_is_a_folder_is_refused_before_anything_is_written(finished_run, packaged, capsys):
    """Regression: export failed on a folder at shipped.onnx after shipped.pt had been replaced."""
    (packaged / "shipped.onnx").unlink()
    (packaged / "shipped.onnx").mkdir()
    before = digests(packaged)
    assert _package(finished_run, packaged, "5") == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"package_model: error: {packaged / 'shipped.onnx'} is a directory; the shipped file goes there"
    )
    assert digests(packaged) == before


def test_a_full_disk_is_one_line_and_leaves_the_old_package(finished_run, tmp_path, capsys):
    """Regression: "unexpected RuntimeError: [enforce fail at inline_container.cc:672]", and a new shipped.pt
    beside the old shipped.onnx. A second packaging on a 12 MB file system that holds the first (8 MB)."""
    with small_disk(tmp_path / "disk", size_mb=12, rlimit_mb=1) as small:
        out = small.folder / "weights"
        assert _package(finished_run, out, "1") == 0
        before = digests(out)
        with small.full():
            assert _package(finished_run, out, "2") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith(f"package_model: error: {out / 'shipped.'}")
        assert err.endswith(f": {small.words} (writing it)"), err
        assert digests(out) == before
        _consistent(out, 1.0)
        _no_leftovers(small.folder)


def test_a_folder_in_use_a_nan_model_and_nan_seconds_are_refused(finished_run, tmp_path, capsys):
    """Regression: --training-seconds nan wrote shipped.json with NaN in it (not JSON); a best.pt with NaN
    weights was packaged."""
    out = tmp_path / "weights"
    with pytest.raises(SystemExit) as stop:
        _package(finished_run, out, "nan")
    assert stop.value.code == 2
    assert (
        "argument --training-seconds: expected a positive finite number, got 'nan'" in capsys.readouterr().err
    )
    assert not out.exists()

    with held_by_another_process(out) as holder:
        assert _package(finished_run, out, "1") == 2
    err = capsys.readouterr().err
    assert f"--out-dir {out} is in use by another run (PID {holder.pid} " in err
    assert sorted(p.name for p in out.iterdir()) == [".lock"]

    run = tmp_path / "nan_run"
    shutil.copytree(finished_run, run)
    payload = torch.load(run / "best.pt", weights_only=True)
    payload["state_dict"]["stems.flow.0.0.weight"][0, 0, 0, 0] = float("inf")
    torch.save(payload, run / "best.pt")
    assert _package(run, out, "1") == 2
    assert capsys.readouterr().err.strip() == (
        f"package_model: error: {run / 'best.pt'}: non-finite stems.flow.0.0.weight (1 of 432 values NaN or "
        "Inf); not packaged"
    )
    assert sorted(p.name for p in out.iterdir()) == [".lock"]
