"""training/evaluate.py: the checkpoint and its ONNX export give the same numbers (PyTorch vs ONNX Runtime),
the backend path equals the in-training module path, JSON output, and the no-model error."""

import json
import shutil

import numpy as np
import pytest
import torch
from contracts import contract_of
from data_fixtures import FLOW_SIZE, HEIGHT, SPLIT, WIDTH, synthetic_root_with_flow
from folder_fixtures import read_only_folder

from mtl_perception.inference.export import export_onnx
from mtl_perception.learning.dataset import CityscapesMultiTask
from mtl_perception.learning.evaluation import EvalResize, evaluate
from mtl_perception.model import build_model, save_checkpoint, shipped
from mtl_perception_training.evaluate import main

OUTPUT = ["--output_size", str(HEIGHT), str(WIDTH)]
SIZE = [str(FLOW_SIZE[0]), str(FLOW_SIZE[1])]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, torch_one_thread):
    torch.manual_seed(3)
    net = build_model("lite").eval()
    folder = tmp_path_factory.mktemp("eval_cli")
    contract = contract_of(net, size=FLOW_SIZE)  # the flow of synthetic_root_with_flow()
    ckpt = save_checkpoint(folder / "best.pt", net, contract=contract)
    onnx = export_onnx(net, folder / "best.onnx", contract=contract)
    return net, ckpt, onnx


def _run(tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    argv = ["--data_path", str(synthetic_root_with_flow()), "--split", SPLIT, *OUTPUT, "--json", str(out)]
    assert main([*argv, "--device", "cpu", "--workers", "0", *args]) == 0
    return json.loads(out.read_text())


def test_checkpoint_and_onnx_export_agree(model_files, tmp_path, capsys):
    net, ckpt, onnx = model_files
    from_torch = _run(tmp_path, "torch", "--checkpoint", str(ckpt))
    from_onnx = _run(tmp_path, "onnx", "--checkpoint", str(onnx))
    assert from_torch["setup"]["backend"].startswith("torch-cpu")
    assert from_onnx["setup"]["backend"].startswith("onnxruntime-cpu")
    assert from_torch["setup"]["img_resize"] == list(FLOW_SIZE)  # taken from the checkpoint's contract
    assert from_torch["setup"]["input_contract"] == from_onnx["setup"]["input_contract"]
    for key in ("depth_ard", "semantic_miou", "motion_miou", "depth_abs_rel", "depth_rmse"):
        assert isinstance(from_torch[key], float) and 0 <= from_torch[key] < 1e3, key
    for key, value in from_torch.items():
        if key == "setup":
            continue
        if value is None:  # NaN (an IoU of a class absent from both) is written as null
            assert from_onnx[key] is None, key
            continue
        # argmax can flip on the rare near-tie pixel between the two runtimes; depth agrees to float noise
        tolerance = 1e-4 if key.startswith("depth") else 2e-3
        assert from_onnx[key] == pytest.approx(value, rel=tolerance, abs=tolerance), key
    assert "Depth ARD %" in capsys.readouterr().out


def test_backend_path_equals_module_path(model_files, tmp_path):
    """The CLI (TorchBackend, channels_last) scores like evaluate() on the bare module during training."""
    net, ckpt, _ = model_files
    cli = _run(tmp_path, "cli", "--checkpoint", str(ckpt))
    dataset = CityscapesMultiTask(synthetic_root_with_flow(), SPLIT, transform=EvalResize(FLOW_SIZE))
    loader = torch.utils.data.DataLoader(dataset, batch_size=2)
    direct = evaluate(
        net, loader, tasks=net.tasks, device="cpu", output_size=(HEIGHT, WIDTH), num_semantic_classes=5
    )
    for key, value in direct.items():
        expected = None if np.isnan(value) else pytest.approx(value, rel=1e-4, abs=1e-4)
        assert cli[key] == expected, key


def test_no_checkpoint_scores_the_shipped_model_or_names_how_to_make_it(
    model_files, tmp_path, monkeypatch, capsys
):
    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(shipped, "shipped_folder", lambda: weights)
    assert main(["--data_path", str(synthetic_root_with_flow()), "--split", SPLIT]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "make shipped-model" in err and "untrained" in err
    _, ckpt, _ = model_files
    (weights / shipped.SHIPPED_CHECKPOINT).write_bytes(ckpt.read_bytes())
    result = _run(tmp_path, "shipped")
    assert result["setup"]["model"] == str(weights / shipped.SHIPPED_CHECKPOINT)
    assert result == {**_run(tmp_path, "same", "--checkpoint", str(ckpt)), "setup": result["setup"]}


def test_untrained_model_on_request(tmp_path):
    result = _run(tmp_path, "untrained", "--model", "untrained", "--preset", "lite", "--img_resize", *SIZE)
    assert result["setup"]["model"] == "untrained lite seed 0"
    assert {"depth_ard", "semantic_miou", "motion_miou"} <= set(result)


def test_a_size_other_than_the_trained_one_is_refused(model_files, capsys):
    _, _, onnx = model_files
    argv = [
        "--checkpoint",
        str(onnx),
        "--img_resize",
        "32",
        "64",
        "--data_path",
        str(synthetic_root_with_flow()),
    ]
    assert main([*argv, "--split", SPLIT, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert (
        len(err.splitlines()) == 1 and "--img_resize 32 64 contradicts" in err and "trained at 64x128" in err
    )


# ---- errors name what is wrong, before the work; progress on long sets -------------------------------------


def test_a_missing_root_is_named_not_its_disparity_folder(model_files, tmp_path, capsys):
    """Regression: --data_path nonexist said "no disparity (or depth) folder: nonexist/disparity/val"."""
    _, ckpt, _ = model_files
    missing = tmp_path / "nonexist"
    assert main(["--checkpoint", str(ckpt), "--data_path", str(missing), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"mtl_evaluate: error: --data_path {missing}: no such folder"), err


def test_a_json_path_that_cannot_be_written_is_refused_before_evaluating(tmp_path, monkeypatch, capsys):
    """Regression: the evaluation ran to the end, then failed writing --json."""
    from mtl_perception_training import evaluate as evaluate_cli

    def never(args):
        raise AssertionError("evaluated before --json was checked")

    monkeypatch.setattr(evaluate_cli, "run", never)
    below_a_file = tmp_path / "file" / "m.json"
    below_a_file.parent.write_text("")
    cases = {
        tmp_path: f"{tmp_path} is a directory",
        below_a_file: f"{below_a_file.parent} is a file, so {below_a_file} cannot be written below it",
    }
    with read_only_folder(tmp_path / "ro") as mounted:
        if mounted:
            cases[tmp_path / "ro" / "m.json"] = f"{tmp_path / 'ro'}: read-only file system"
        for json_path, expected in cases.items():
            assert main(["--json", str(json_path), "--data_path", str(tmp_path)]) == 2
            err = capsys.readouterr().err.strip()
            assert len(err.splitlines()) == 1 and expected in err, err


def test_an_error_in_a_dataloader_worker_is_one_short_line(model_files, tmp_path, capsys):
    """Regression: a damaged file read by a worker came out as a 1,825-character flattened traceback."""
    _, ckpt, _ = model_files
    root = tmp_path / "data"
    shutil.copytree(synthetic_root_with_flow(), root)
    motion = sorted((root / "gtFine" / SPLIT).rglob("*_motion.png"))[-1]
    motion.write_bytes(motion.read_bytes()[:60])
    argv = ["--checkpoint", str(ckpt), "--data_path", str(root), "--split", SPLIT, "--workers", "1"]
    assert main([*argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err and len(err) < 300, err
    assert err.startswith("mtl_evaluate: error: ") and str(motion) in err


def test_progress_is_shown_on_a_long_set(model_files, tmp_path, monkeypatch, capsys):
    """The bar appears once an evaluation takes PROGRESS_DELAY_S (2 s); 0 here stands for a long set."""
    from mtl_perception.learning import evaluation

    monkeypatch.setattr(evaluation, "PROGRESS_DELAY_S", 0.0, raising=False)
    _, ckpt, _ = model_files
    _run(tmp_path, "bar", "--checkpoint", str(ckpt), "--batch_size", "1")
    err = capsys.readouterr().err
    assert f"evaluate {SPLIT}:" in err and "/2 [" in err, err  # a bar of the two batches
