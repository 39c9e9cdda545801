"""TensorRT engine cache bookkeeping (pure Python) and the TensorRT backend where TensorRT + CUDA exist."""

import json

import pytest
import torch
from contracts import contract_of

from mtl_perception.inference import engine_cache as ec

RUNTIME = {"tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100", "compute_capability": [9, 0]}


def _key(**changes):
    base = dict(
        onnx_sha256="a" * 64,
        tensorrt_version="10.3.0",
        gpu_name="NVIDIA H100",
        compute_capability=(9, 0),
        precision="fp16",
        input_shapes={"image": (1, 3, 64, 128)},
        input_contract={"flow": {"size": [64, 128]}},
    )
    base.update(changes)
    return ec.engine_key(**base)


def test_sha256_matches_hashlib(tmp_path):
    import hashlib

    data = bytes(range(256)) * 5000
    (tmp_path / "f").write_bytes(data)
    assert ec.sha256_file(tmp_path / "f", chunk=4096) == hashlib.sha256(data).hexdigest()


def test_key_is_plain_json_and_validates_precision():
    key = _key()
    assert json.loads(json.dumps(key)) == key
    assert set(key) == set(ec.KEY_FIELDS)
    with pytest.raises(ValueError, match="precision"):
        _key(precision="int8")


def test_cache_paths(tmp_path):
    engine, key = ec.cache_paths(tmp_path, "/models/net.onnx", "fp16", (384, 768))
    assert engine == tmp_path / "net.fp16.384x768.engine" and key == tmp_path / "net.fp16.384x768.engine.json"


def test_decide_build_reuse_and_every_mismatch(tmp_path):
    engine = tmp_path / "m.engine"
    key = _key()
    assert ec.decide(engine, key).rebuild and "no cached engine" in ec.decide(engine, key).reason
    engine.write_bytes(b"plan")
    assert "no key file" in ec.decide(engine, key).reason
    ec.key_path_for(engine).write_text("{not json")
    assert ec.decide(engine, key).rebuild and "unreadable" in ec.decide(engine, key).reason
    ec.store_engine(engine, b"plan2", key, {"config": {}, "input_size": [64, 128]})
    decision = ec.decide(engine, key)
    assert not decision.rebuild and engine.read_bytes() == b"plan2"
    changes = {
        "onnx_sha256": "b" * 64,
        "tensorrt_version": "10.4.0",
        "gpu_name": "NVIDIA L4",
        "compute_capability": (8, 9),
        "precision": "fp32",
        "input_shapes": {"image": (1, 3, 128, 256)},
        # same graph file, other inputs learnt: an engine built for one contract is not reused for another
        "input_contract": {"flow": {"size": [64, 128], "confidence": "forward_backward"}},
    }
    for field, value in changes.items():
        decision = ec.decide(engine, _key(**{field: value}))
        assert decision.rebuild and field in decision.reason, field


def test_engine_given_directly_must_match_runtime(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(FileNotFoundError, match="m.engine"):
        ec.check_engine_for_runtime(engine, RUNTIME)
    engine.write_bytes(b"plan")
    with pytest.raises(ValueError, match="no key file"):
        ec.check_engine_for_runtime(engine, RUNTIME)
    ec.store_engine(engine, b"plan", _key(tensorrt_version="8.6.1"))
    with pytest.raises(ValueError, match=r"m.engine.*tensorrt_version: engine '8.6.1', running '10.3.0'"):
        ec.check_engine_for_runtime(engine, RUNTIME)
    ec.store_engine(engine, b"plan", _key())
    assert ec.check_engine_for_runtime(engine, RUNTIME)["precision"] == "fp16"


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    ec.atomic_write_bytes(target, b"one")
    ec.atomic_write_bytes(target, b"two")
    assert target.read_bytes() == b"two" and [p.name for p in target.parent.iterdir()] == ["f.bin"]


def test_store_engine_writes_key_last(tmp_path, monkeypatch):
    """A crash between engine and key leaves no key, so the next start rebuilds instead of trusting it."""
    engine = tmp_path / "m.engine"
    ec.store_engine(engine, b"old", _key())
    calls = []
    real = ec.atomic_write_bytes

    def failing(path, data):
        calls.append(path.name)
        if path.name.endswith(".json"):
            raise OSError("disk full")
        return real(path, data)

    monkeypatch.setattr(ec, "atomic_write_bytes", failing)
    with pytest.raises(OSError):
        ec.store_engine(engine, b"new", _key(precision="fp32"))
    assert calls == ["m.engine", "m.engine.json"]
    assert ec.decide(engine, _key(precision="fp32")).rebuild


def test_tensorrt_backend_builds_caches_and_matches_torch(tmp_path, inference_caplog):
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed on this machine")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT backend needs a CUDA device; none on this machine")
    from mtl_perception.inference import TensorRTBackend, create_backend
    from mtl_perception.inference.export import export_onnx
    from mtl_perception.model import build_model

    torch.manual_seed(0)
    model = build_model(preset="lite").eval()
    onnx_path = export_onnx(model, tmp_path / "m.onnx", contract=contract_of(model, size=(64, 128)))
    with inference_caplog.at_level("WARNING", logger="mtl_perception.inference"):
        backend = TensorRTBackend(onnx_path, torch.device("cuda"), "fp32", cache_dir=tmp_path / "engines")
    assert any("building" in r.message for r in inference_caplog.records)
    engine = tmp_path / "engines" / "m.fp32.64x128.engine"
    assert (
        engine.is_file()
        and json.loads(ec.key_path_for(engine).read_text())["tensorrt_version"] == trt.__version__
    )
    image = torch.rand(1, 3, 64, 128, device="cuda") * 255
    flow = torch.randn(1, 3, 64, 128, device="cuda")
    out = backend.run(image, flow)
    with torch.no_grad():
        ref = model.cuda()(image, flow)
    torch.testing.assert_close(
        out["depth"], ref["depth"], rtol=1e-3, atol=1e-3 * ref["depth"].abs().max().item()
    )
    assert (out["semantic"] == ref["semantic"].argmax(1).to(torch.uint8)).float().mean() >= 0.999
    inference_caplog.clear()
    with inference_caplog.at_level("WARNING", logger="mtl_perception.inference"):
        TensorRTBackend(onnx_path, torch.device("cuda"), "fp32", cache_dir=tmp_path / "engines")
    assert not any("building" in r.message for r in inference_caplog.records)  # reused
    direct = create_backend(engine, backend="tensorrt", device="cuda", input_size=(64, 128))
    assert direct.run(image, flow)["depth"].shape == (1, 1, 64, 128)
