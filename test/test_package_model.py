"""training/package_model.py: a finished train.py run becomes the shipped files, with the provenance in
the checkpoint (weights_only-loadable), an ONNX export at the training size, and shipped.json whose SHA-256
match the files; a run folder that is not finished is named."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import onnxruntime
import pytest
import torch
from train_fixtures import tiny_args, train_root

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
