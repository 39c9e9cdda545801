"""Backends: one interface, parity across every backend on this machine, auto choice, input validation."""

import copy
import logging

import pytest
import torch
from contracts import contract_of

from mtl_perception.inference import OnnxRuntimeBackend, TorchBackend, create_backend
from mtl_perception.inference.export import export_onnx
from mtl_perception.model import build_model, save_checkpoint

H, W = 64, 128


def _inputs(n=1, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(n, 3, H, W, generator=g) * 255
    flow = torch.cat([torch.randn(n, 2, H, W, generator=g) * 5, torch.rand(n, 1, H, W, generator=g)], 1)
    return image.to(device), flow.to(device)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("backends")
    torch.manual_seed(0)
    model = build_model(preset="lite", num_semantic_classes=5)
    model.train()
    with torch.no_grad():
        model(*_inputs(2, seed=5))
    model.eval()
    contract = contract_of(model, size=(H, W))
    ckpt = save_checkpoint(root / "m.pt", model, contract=contract)
    onnx_path = export_onnx(model, root / "m.onnx", contract=contract)
    return {"root": root, "model": model, "ckpt": ckpt, "onnx": onnx_path}


def _available(files):
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    backends = []
    for device in devices:
        backends.append(create_backend(files["ckpt"], "torch", device, input_size=(H, W)))
        try:
            backends.append(create_backend(files["onnx"], "onnxruntime", device, input_size=(H, W)))
        except ValueError as exc:
            assert device == "cuda" and "CUDAExecutionProvider" in str(exc)
    return backends


def test_parity_across_available_backends(files):
    backends = _available(files)
    assert {b.name for b in backends} >= {"torch-cpu-fp32", "onnxruntime-cpu-fp32"}
    image, flow = _inputs(2)
    with torch.no_grad():
        ref = files["model"](image, flow)
    for b in backends:
        out = b.run(image.to(b.device), flow.to(b.device))
        assert set(out) == {"depth", "semantic", "motion"}
        assert all(v.device.type == b.device.type for v in out.values()), b.name
        assert out["depth"].dtype == torch.float32 and out["depth"].shape == (2, 1, H, W)
        assert out["semantic"].dtype == torch.uint8 and out["semantic"].shape == (2, H, W)
        depth = out["depth"].cpu()
        assert (depth - ref["depth"]).abs().max() <= 1e-3 * ref["depth"].abs().max() + 1e-6, b.name
        for task in ("semantic", "motion"):
            agree = (out[task].cpu() == ref[task].argmax(1).to(torch.uint8)).float().mean()
            assert agree >= 0.999, (b.name, task, agree)
        assert b.tasks == ("depth", "semantic", "motion") and b.streams == ("flow", "image")
        assert b.num_semantic_classes == 5 and b.input_size == (H, W)


def test_auto_on_cpu_prefers_onnxruntime_and_logs(files, inference_caplog):
    with inference_caplog.at_level(logging.INFO, logger="mtl_perception.inference"):
        backend = create_backend(
            files["ckpt"], device="cpu", input_size=(H, W), cache_dir=files["root"] / "cache"
        )
    assert isinstance(backend, OnnxRuntimeBackend)
    assert any("chose onnxruntime-cpu-fp32" in r.message for r in inference_caplog.records)
    exported = list((files["root"] / "cache" / "onnx").glob("m-*-64x128.onnx"))
    assert len(exported) == 1
    # Same checkpoint again: the cached export is reused, not rewritten.
    mtime = exported[0].stat().st_mtime_ns
    create_backend(files["ckpt"], device="cpu", input_size=(H, W), cache_dir=files["root"] / "cache")
    assert exported[0].stat().st_mtime_ns == mtime


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_corrupt_cached_export_is_rebuilt_not_fallen_back_from(files, tmp_path, caplog, damage):
    """A damaged cached ONNX next to the checkpoint: exported again, and the backend stays ONNX Runtime."""
    cache = tmp_path / "cache"
    create_backend(files["ckpt"], device="cpu", input_size=(H, W), cache_dir=cache)
    (exported,) = (cache / "onnx").glob("m-*-64x128.onnx")
    good = exported.read_bytes()
    exported.write_bytes(b"not an onnx model" if damage == "garbage" else good[: len(good) // 2])
    with caplog.at_level(logging.WARNING, logger="mtl_perception.inference"):
        backend = create_backend(files["ckpt"], device="cpu", input_size=(H, W), cache_dir=cache)
    assert isinstance(backend, OnnxRuntimeBackend)
    assert any("is unusable" in r.message and "exporting it again" in r.message for r in caplog.records)
    assert exported.read_bytes() == good  # the export is deterministic: the same file again


def test_random_init_is_seeded(files):
    a = create_backend(None, "torch", preset="lite", seed=3, input_size=(H, W))
    b = create_backend(None, "torch", preset="lite", seed=3, input_size=(H, W))
    c = create_backend(None, "torch", preset="lite", seed=4, input_size=(H, W))
    image, flow = _inputs()
    assert torch.equal(a.run(image, flow)["depth"], b.run(image, flow)["depth"])
    assert not torch.equal(a.run(image, flow)["depth"], c.run(image, flow)["depth"])


def test_unsuitable_choices_are_explained(files):
    with pytest.raises(ValueError, match="onnx file needs onnxruntime or tensorrt"):
        create_backend(files["onnx"], "torch", input_size=(H, W))
    with pytest.raises(ValueError, match="tensorrt.*CUDA"):
        create_backend(files["onnx"], "tensorrt", "cpu", input_size=(H, W))
    with pytest.raises(ValueError, match="fp16"):
        create_backend(files["ckpt"], "torch", "cpu", precision="fp16", input_size=(H, W))
    with pytest.raises(ValueError, match="exported for 64x128"):
        create_backend(files["onnx"], "onnxruntime", input_size=(128, 256))
    with pytest.raises(ValueError, match="backend must be"):
        create_backend(files["onnx"], "openvino")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            create_backend(files["onnx"], device="cuda")


def test_bad_model_files_are_named(files, tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        create_backend(tmp_path / "nothere.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(files["ckpt"].read_bytes()[:500])
    with pytest.raises(ValueError, match="corrupt.pt"):
        create_backend(corrupt, input_size=(H, W))
    bad_onnx = tmp_path / "bad.onnx"
    bad_onnx.write_bytes(b"not an onnx file")
    with pytest.raises(ValueError, match="bad.onnx"):
        create_backend(bad_onnx, input_size=(H, W))
    with pytest.raises(ValueError, match="unknown model file type"):
        create_backend(tmp_path / "model.bin")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ValueError, match="tensorrt"):
        create_backend(engine, "onnxruntime")


@pytest.mark.parametrize("kind", ["torch", "onnxruntime"])
def test_bad_inputs_name_the_tensor(files, kind):
    backend = create_backend(files["ckpt"] if kind == "torch" else files["onnx"], kind, input_size=(H, W))
    image, flow = _inputs()
    cases = [
        ((image[:, :2], flow), r"image: expected shape \(N, 3, 64, 128\)"),
        ((torch.zeros(1, 3, 32, 128), flow), r"image: expected shape \(N, 3, 64, 128\)"),
        ((image.double(), flow), "image: expected dtype float32"),
        ((image.to(torch.uint8), flow), "image: expected dtype float32"),
        ((image, None), "flow: .*needs a flow input"),
        ((image, flow[:, :2]), r"flow: expected shape \(1, 3, 64, 128\)"),
        ((image, torch.cat([flow, flow])), r"flow: expected shape \(1, 3, 64, 128\)"),
        ((image.numpy(), flow), "image: expected a tensor"),
        ((torch.where(image > 250, float("nan"), image), flow), "image: contains NaN"),
        ((image, flow / 0.0), "flow: contains NaN or Inf"),
    ]
    for args, match in cases:
        with pytest.raises(ValueError, match=match):
            backend.run(*args)


def test_torch_backend_without_flow_stream_ignores_flow():
    torch.manual_seed(0)
    model = build_model(preset="lite", tasks=("depth",), streams=("image",))
    backend = TorchBackend(model, torch.device("cpu"), input_size=(H, W))
    image, flow = _inputs()
    assert torch.equal(backend.run(image, flow)["depth"], backend.run(image)["depth"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fp16 + CUDA graphs)")
def test_torch_cuda_fp16_graphs_match_eager(files):
    graphs = create_backend(files["ckpt"], "torch", "cuda", precision="fp16", input_size=(H, W))
    assert graphs.use_graphs and graphs.name == "torch-cuda-fp16-cudagraph"
    image, flow = _inputs(device="cuda")
    first = graphs.run(image, flow)
    second = graphs.run(image * 0.5, flow)
    again = graphs.run(image, flow)
    assert torch.equal(first["semantic"], again["semantic"]) and not torch.equal(
        first["depth"], second["depth"]
    )
    with torch.no_grad():
        ref = copy.deepcopy(files["model"]).cuda()(image, flow)
    assert (first["depth"] - ref["depth"]).abs().max() <= 2e-2 * ref["depth"].abs().max()


def test_exported_model_brings_its_size_and_checkpoint_its_training_size(files):
    from mtl_perception.inference import DEFAULT_INPUT_SIZE

    assert create_backend(files["onnx"], "onnxruntime", "auto").input_size == (H, W)  # no size asked
    ckpt = create_backend(files["ckpt"], "torch", "cpu")
    assert ckpt.input_size == (H, W) == ckpt.contract.network_size  # its contract's size
    assert create_backend(files["ckpt"], "torch", "cpu", input_size=(32, 64)).input_size == (32, 64)
    untrained = create_backend(None, "torch", "cpu", preset="lite")
    assert untrained.input_size == DEFAULT_INPUT_SIZE == (384, 768) == untrained.contract.network_size


def test_input_scan_can_be_skipped_by_a_caller_that_checks_outputs(files):
    backend = create_backend(files["onnx"], "onnxruntime", input_size=(H, W))
    image, flow = _inputs()
    nan_flow = flow / 0.0
    with pytest.raises(ValueError, match="flow: contains NaN or Inf"):
        backend.run(image, nan_flow)
    out = backend.run(image, nan_flow, check_finite=False)  # the caller's own output check sees this
    assert not torch.isfinite(out["depth"]).all()
