"""ONNX export: contract (names, dtypes, shapes, metadata), checker, safe writes, ORT-vs-PyTorch parity."""

import json
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from contracts import contract_of

from mtl_perception.inference.export import export_onnx, read_onnx_metadata
from mtl_perception.inference.export_cli import main
from mtl_perception.model import ModelConfig, build_model, save_checkpoint

H, W = 128, 256


def _inputs(h=H, w=W, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, h, w, generator=g) * 255
    flow = torch.cat([torch.randn(1, 2, h, w, generator=g) * 8, torch.rand(1, 1, h, w, generator=g)], 1)
    return image, flow


def _trained_like(preset="ti", **kwargs):
    """Seeded model with non-trivial BN statistics (closer to a trained net than identity BN)."""
    torch.manual_seed(0)
    model = build_model(preset=preset, **kwargs)
    model.train()
    with torch.no_grad():
        for seed in range(2):
            image, flow = _inputs(seed=seed + 10)
            model(image, flow if "flow" in model.streams else None)
    return model.eval()


def _parity(model, path, h, w):
    image, flow = _inputs(h, w)
    with torch.no_grad():
        ref = model(image, flow if "flow" in model.streams else None)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: {"image": image, "flow": flow}[i.name].numpy() for i in session.get_inputs()}
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, feeds), strict=True))
    agreement = {}
    for task, raw in ref.items():
        if task == "depth":
            diff = np.abs(got["depth"] - raw.numpy())
            assert diff.max() <= 1e-3 * np.abs(raw.numpy()).max() + 1e-6
        else:
            ids = raw.argmax(1).numpy()
            assert got[task].dtype == np.int32 and got[task].shape == ids.shape
            agreement[task] = float((got[task] == ids).mean())
            assert agreement[task] >= 0.999, agreement
    return got, agreement


def test_export_contract_and_parity(tmp_path):
    model = _trained_like("lite")
    contract = contract_of(model, size=(H, W), partner_gap=3)
    path = export_onnx(model, tmp_path / "m.onnx", contract=contract, with_probabilities=True, source="test")
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version >= 17
    assert [i.name for i in proto.graph.input] == ["image", "flow"]
    assert [o.name for o in proto.graph.output] == [
        "depth",
        "semantic",
        "motion",
        "semantic_prob",
        "motion_prob",
    ]
    config, spec = read_onnx_metadata(path)
    assert config == model.config
    assert spec["input_size"] == [H, W] and spec["outputs"]["semantic"]["dtype"] == "int32"
    assert spec["inputs"]["flow"]["shape"] == [1, 3, H, W]
    meta = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(meta["mtl_perception.config"])["num_semantic_classes"] == 5
    assert json.loads(meta["mtl_perception.input_contract"]) == contract.to_dict()
    assert json.loads(meta["mtl_perception.input_contract"])["flow"]["farneback"]["levels"] == 5
    got, _ = _parity(model, path, H, W)
    assert got["semantic_prob"].shape == (1, 5, H, W)
    np.testing.assert_allclose(got["semantic_prob"].sum(1), 1.0, rtol=1e-5)
    assert np.array_equal(got["semantic_prob"].argmax(1), got["semantic"])


@pytest.mark.parametrize(
    "kwargs,inputs",
    [
        (dict(tasks=("depth",), streams=("image",)), ["image"]),
        (dict(preset="lite", tasks=("motion",), streams=("flow",)), ["flow"]),
    ],
)
def test_single_stream_exports_only_its_input(tmp_path, kwargs, inputs):
    model = _trained_like(**kwargs)
    path = export_onnx(model, tmp_path / "m.onnx", contract=contract_of(model, size=(64, 128)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == inputs
    assert [o.name for o in session.get_outputs()] == list(model.tasks)
    _parity(model, path, 64, 128)


@pytest.mark.slow
def test_parity_at_ti_resolution(tmp_path):
    model = _trained_like()
    path = export_onnx(model, tmp_path / "m.onnx", contract=contract_of(model, size=(384, 768)))
    _, agreement = _parity(model, path, 384, 768)
    print("class-id agreement at 384x768:", agreement)


def test_refuses_overwrite_and_bad_sizes(tmp_path):
    model = build_model(preset="lite", tasks=("depth",), streams=("image",)).eval()
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    contract = contract_of(model, size=(64, 128))
    with pytest.raises(FileExistsError, match="m.onnx"):
        export_onnx(model, out, contract=contract)
    assert out.read_bytes() == b"keep"
    with pytest.raises(ValueError, match="multiples of 16"):
        export_onnx(model, tmp_path / "x.onnx", contract=contract, height=60, width=128)
    with pytest.raises(ValueError, match="opset"):
        export_onnx(model, tmp_path / "x.onnx", contract=contract, opset=11)
    export_onnx(model, out, contract=contract, force=True)
    assert read_onnx_metadata(out)[0] == model.config
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]  # no temp files left behind


def test_read_metadata_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.onnx"):
        read_onnx_metadata(tmp_path / "missing.onnx")
    foreign = tmp_path / "foreign.onnx"
    node = onnx.helper.make_node("Identity", ["x"], ["y"])
    vi = [onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, [1]) for n in "xy"]
    onnx.save(onnx.helper.make_model(onnx.helper.make_graph([node], "g", vi[:1], vi[1:])), str(foreign))
    with pytest.raises(ValueError, match="foreign.onnx: no mtl_perception metadata"):
        read_onnx_metadata(foreign)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ValueError, match="bad.onnx"):
        read_onnx_metadata(bad)


def test_cli_exports_checkpoint(tmp_path):
    torch.manual_seed(0)
    model = build_model(preset="lite", num_semantic_classes=3)
    contract = contract_of(model, size=(64, 128), confidence="forward_backward")
    ckpt = save_checkpoint(tmp_path / "c.pt", model, contract=contract)
    out = tmp_path / "c.onnx"
    assert main(["--checkpoint", str(ckpt), "--out", str(out)]) == 0  # at the size it was trained at
    config, spec = read_onnx_metadata(out)
    assert config == ModelConfig.from_dict(model.config.to_dict()) and spec["input_size"] == [64, 128]
    assert spec["input_contract"] == contract.to_dict()
    source = {p.key: p.value for p in onnx.load(str(out)).metadata_props}["mtl_perception.source"]
    assert source.startswith("checkpoint c.pt sha256 ") and str(tmp_path) not in source  # no machine path
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "mtl_perception.inference.export_cli",
            "--preset",
            "lite",
            "--height",
            "64",
            "--width",
            "128",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 2 and "already exists" in again.stderr


def test_without_a_source_export_model_exports_the_shipped_model_at_its_training_size(
    tmp_path, monkeypatch, capsys
):
    from mtl_perception.model import shipped

    weights = tmp_path / "weights"
    weights.mkdir()
    monkeypatch.setattr(shipped, "shipped_folder", lambda: weights)
    out = tmp_path / "m.onnx"
    assert main(["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "make shipped-model" in err and not out.exists()
    torch.manual_seed(0)
    lite = build_model(preset="lite")
    save_checkpoint(weights / shipped.SHIPPED_CHECKPOINT, lite, contract=contract_of(lite, size=(64, 96)))
    assert main(["--out", str(out)]) == 0
    config, spec = read_onnx_metadata(out)
    assert spec["input_size"] == [64, 96] and config.preset == "lite"
