"""Issue 13: the GPU code paths, checked where a check can fail on the CPU.

Host syncs and finiteness scans are counted with a TorchFunctionMode (torch's own hook on every tensor
operation), precision settings are read from torch at each convolution, ONNX Runtime's real provider
fallback is provoked by asking the CPU build for CUDA, and the TensorRT build recipe is checked on small
namespaces shaped like the TensorRT 8/10/11 modules (TensorRT's wheels need a CUDA driver to import).
"""

import copy
import types
import warnings

import numpy as np
import onnx
import pytest
import torch
from contracts import contract_of, flow_overrides
from torch import nn
from torch.overrides import TorchFunctionMode

from mtl_perception.flow import COMMON, StreamingFarneback
from mtl_perception.flow.precision import current_precision
from mtl_perception.inference import TorchBackend, create_backend, read_onnx_metadata
from mtl_perception.inference import backends as backends_module
from mtl_perception.inference.backends import BackendError
from mtl_perception.inference.export import export_onnx
from mtl_perception.inference.half import fold_batchnorm, fp16_onnx, inference_model
from mtl_perception.inference.onnxruntime_backend import open_session
from mtl_perception.inference.tensorrt_backend import build_settings
from mtl_perception.model import build_model
from mtl_perception.pipeline import FlowInput, PerceptionPipeline
from mtl_perception.pipeline_config import ConfigError, PipelineConfig
from mtl_perception.pipeline_factory import build_pipeline

H, W = 48, 64
# Tensor -> Python reads: each one is a host<->device sync when the tensor is on a GPU.
SCALAR_READS = {"item", "__bool__", "tolist", "__int__", "__float__", "__index__"}


class Recorder(TorchFunctionMode):
    """Counts torch operations by name; optionally records something at each call of chosen ones."""

    def __init__(self, probe=None, probed=()):
        super().__init__()
        self.counts: dict[str, int] = {}
        self.isfinite_shapes: list[tuple] = []
        self.probe, self.probed, self.seen = probe, set(probed), []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        self.counts[name] = self.counts.get(name, 0) + 1
        if name == "isfinite":
            self.isfinite_shapes.append(tuple(args[0].shape))
        if name in self.probed:
            self.seen.append((name, self.probe()))
        return func(*args, **(kwargs or {}))

    def scalar_reads(self) -> int:
        return sum(self.counts.get(name, 0) for name in SCALAR_READS)


def _frames(count, size=(H, W)):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[0] + 8 * count, size[1] + 8 * count, 3), dtype=np.uint8)
    return [
        np.ascontiguousarray(base[2 * i : 2 * i + size[0], 3 * i : 3 * i + size[1]]) for i in range(count)
    ]


@pytest.fixture(scope="module")
def lite_model():
    torch.manual_seed(0)
    model = build_model(preset="lite", num_semantic_classes=5)
    model.train()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding has something to fold
        model(torch.rand(2, 3, H, W) * 255, torch.randn(2, 3, H, W))
    return model.eval()


@pytest.fixture(scope="module")
def lite_onnx(lite_model, tmp_path_factory):
    contract = contract_of(lite_model, size=(64, 128))
    return export_onnx(lite_model, tmp_path_factory.mktemp("onnx") / "lite.onnx", contract=contract)


@pytest.mark.parametrize(
    ("want_flow", "output_size", "checked"),
    [(False, "network", [(H, W)]), (True, "network", [(H, W), (H, W, 2)]), (True, "input", None)],
)
def test_a_steady_state_frame_scans_only_its_outputs_and_reads_no_scalar(
    lite_model, want_flow, output_size, checked
):
    """One finiteness scan per float output, on the device, read with the download; no other host read."""
    backend = TorchBackend(lite_model, torch.device("cpu"), input_size=(H, W))
    config = PipelineConfig(
        flow_dt=0.1, output_size=output_size, flow_implementation="torch", **flow_overrides(COMMON)
    )
    pipe = PerceptionPipeline(backend, config)
    frames = _frames(3, size=(H, W) if output_size == "network" else (H + 16, W + 16))
    pipe.process(frames[0], 0.0)
    pipe.process(frames[1], 0.1)
    with Recorder() as recorder:
        result = pipe.process(frames[2], 0.2, want_flow=want_flow)
    assert result.partner_dt == pytest.approx(0.1)  # a steady-state frame: a real flow pair
    out_h, out_w = result.size
    expected = checked or [(out_h, out_w), (out_h, out_w, 2)]
    assert recorder.isfinite_shapes == expected  # never the inputs, never twice
    assert recorder.scalar_reads() == 0, {k: v for k, v in recorder.counts.items() if k in SCALAR_READS}
    assert recorder.counts.get("tensor", 0) == 0  # no per-frame tensor built from Python lists


def test_the_backend_input_scan_reads_both_inputs_at_once(lite_model):
    backend = TorchBackend(lite_model, torch.device("cpu"), input_size=(H, W))
    image, flow = torch.rand(1, 3, H, W) * 255, torch.randn(1, 3, H, W)
    with Recorder() as scanned:
        backend.run(image, flow)
    with Recorder() as unscanned:
        backend.run(image, flow, check_finite=False)
    assert scanned.counts["isfinite"] == 2 and scanned.scalar_reads() == 1
    assert unscanned.counts.get("isfinite", 0) == 0 and unscanned.scalar_reads() == 0
    with pytest.raises(ValueError, match="flow: contains NaN"):
        backend.run(image, torch.full_like(flow, float("nan")))


def test_the_flow_runs_in_ieee_fp32_even_when_the_process_allows_tf32():
    """cuDNN convolutions default to TF32; the flow's convolutions and matmuls must not use it."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = (conv.fp32_precision, matmul.fp32_precision, torch.backends.cudnn.benchmark)
    conv.fp32_precision, matmul.fp32_precision = "tf32", "tf32"
    torch.backends.cudnn.benchmark = True  # what the network's CUDA backend sets
    try:
        stream = StreamingFarneback(COMMON, "cpu")
        frames = [torch.from_numpy(f[..., 0].copy()) for f in _frames(2)]
        with Recorder(probe=current_precision, probed={"conv2d", "matmul", "__matmul__"}) as recorder:
            a, b = (stream.prepare(f) for f in frames)
            stream.flow(a, b)
        assert {name for name, _ in recorder.seen} >= {"conv2d"}
        flow_setting = {"conv": "ieee", "matmul": "ieee", "benchmark": False}
        assert all(p == flow_setting for _, p in recorder.seen), recorder.seen
        assert current_precision() == {"conv": "tf32", "matmul": "tf32", "benchmark": True}  # restored
    finally:
        conv.fp32_precision, matmul.fp32_precision, torch.backends.cudnn.benchmark = saved


def test_the_pipeline_flow_asks_for_a_cuda_graph_on_cuda():
    """Constructing needs no GPU: the stream records whether it will capture."""
    assert FlowInput(COMMON, torch.device("cuda", 0), "forward_backward").flow.cuda_graph
    assert not FlowInput(COMMON, torch.device("cpu"), "forward_backward").flow.cuda_graph
    assert not FlowInput(
        COMMON, torch.device("cuda", 0), "forward_backward", cuda_graph=False
    ).flow.cuda_graph


def test_export_leaves_the_callers_model_on_its_device_in_its_mode_and_dtype(lite_model, tmp_path):
    model = copy.deepcopy(lite_model).double().train()
    before = {
        name: (p.data_ptr(), p.dtype, p.device, p.detach().clone()) for name, p in model.named_parameters()
    }
    export_onnx(model, tmp_path / "m.onnx", contract=contract_of(lite_model, size=(64, 128)))
    assert model.training and all(m.training for m in model.modules())
    for name, p in model.named_parameters():
        ptr, dtype, device, value = before[name]
        assert (p.data_ptr(), p.dtype, p.device) == (ptr, dtype, device), name
        assert torch.equal(p.detach(), value), name


def test_batchnorm_is_folded_before_any_cast_and_the_callers_model_is_untouched(lite_model):
    reference = copy.deepcopy(lite_model)
    folded = fold_batchnorm(lite_model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in lite_model.modules()) > 10
    image, flow = torch.rand(1, 3, H, W) * 255, torch.randn(1, 3, H, W)
    with torch.no_grad():
        want, got = lite_model(image, flow), folded(image, flow)
        half = inference_model(lite_model, torch.device("cpu"), torch.float16, torch.channels_last)
        got_half = half(image.half(), flow.half())
    for task in want:
        scale = want[task].abs().max()
        assert (got[task] - want[task]).abs().max() <= 1e-5 * scale, task
        assert torch.isfinite(got_half[task]).all() and got_half[task].dtype == torch.float16
        assert (got_half[task].float() - want[task]).abs().max() <= 2e-2 * scale, task
    assert all(p.dtype == torch.float16 for p in half.parameters())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in half.modules())
    for (name, p), q in zip(lite_model.state_dict().items(), reference.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    backend = TorchBackend(lite_model, torch.device("cpu"), input_size=(H, W))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backend.model.modules())  # the path it runs


def test_fp16_onnx_is_a_half_graph_with_the_float32_contract(lite_onnx, tmp_path):
    import onnxruntime as ort

    half_path = fp16_onnx(lite_onnx, tmp_path / "lite.fp16.onnx")
    proto = onnx.load(str(half_path))
    onnx.checker.check_model(proto, full_check=True)  # topologically sorted, typed
    floats = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.INT32: "int32"}
    io = {v.name: floats.get(v.type.tensor_type.elem_type) for v in [*proto.graph.input, *proto.graph.output]}
    assert io == {
        "image": "float32",
        "flow": "float32",
        "depth": "float32",
        "semantic": "int32",
        "motion": "int32",
    }
    conv_weights = {n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    types_of = {t.name: t.data_type for t in proto.graph.initializer}
    assert conv_weights and all(types_of[w] == onnx.TensorProto.FLOAT16 for w in conv_weights)
    assert read_onnx_metadata(half_path)[1]["input_size"] == [64, 128]
    image = (torch.rand(1, 3, 64, 128) * 255).numpy()
    flow = torch.randn(1, 3, 64, 128).numpy()
    feeds = {"image": image, "flow": flow}
    full = ort.InferenceSession(str(lite_onnx), providers=["CPUExecutionProvider"]).run(None, feeds)
    half = ort.InferenceSession(str(half_path), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert np.abs(half[0] - full[0]).max() <= 5e-3 * np.abs(full[0]).max()
    assert (half[1] == full[1]).mean() >= 0.99 and (half[2] == full[2]).mean() >= 0.99


def _fake_trt(version, *, fp16_flag, strongly_typed=True):
    """The attributes build_settings may read, shaped like TensorRT <version>'s Python module."""
    builder_flags = {"TF32": 7} | ({"FP16": 0} if fp16_flag else {})
    creation = {"EXPLICIT_BATCH": 0} | ({"STRONGLY_TYPED": 1} if strongly_typed else {})
    return types.SimpleNamespace(
        __version__=version,
        BuilderFlag=types.SimpleNamespace(**builder_flags),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(**creation),
    )


def test_tensorrt_11_fp16_builds_a_strongly_typed_half_graph_without_builder_flag_fp16():
    trt11 = _fake_trt("11.4.0.106", fp16_flag=False)  # BuilderFlag.FP16 is gone: touching it raises
    fp16 = build_settings(trt11, "fp16")
    assert fp16.graph_precision == "fp16" and fp16.builder_flags == () and fp16.network_flags == 1 << 1
    fp32 = build_settings(trt11, "fp32")
    assert fp32.graph_precision == "fp32" and fp32.builder_flags == ()
    # A 10.x build that already lacks the flag (feature, not version number, decides) takes the same path.
    assert build_settings(_fake_trt("10.99.0", fp16_flag=False), "fp16").graph_precision == "fp16"


def test_tensorrt_10_and_8_keep_the_fp16_builder_flag_on_the_float32_graph():
    trt10 = build_settings(_fake_trt("10.13.3.9", fp16_flag=True), "fp16")
    assert (trt10.graph_precision, trt10.builder_flags, trt10.network_flags) == ("fp32", ("FP16",), 0)
    assert build_settings(_fake_trt("10.13.3.9", fp16_flag=True), "fp32").builder_flags == ()
    trt8 = build_settings(_fake_trt("8.6.1", fp16_flag=True, strongly_typed=False), "fp16")
    assert (trt8.graph_precision, trt8.builder_flags, trt8.network_flags) == ("fp32", ("FP16",), 1 << 0)
    with pytest.raises(ValueError, match="int8"):
        build_settings(_fake_trt("11.0.0", fp16_flag=False), "int8")


def test_onnxruntime_refuses_to_run_on_the_cpu_when_cuda_was_asked_for(lite_onnx):
    """The CPU build really falls back (with a Python warning only); open_session must refuse it."""
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has CUDA: the fallback cannot be provoked this way")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # ORT's "Specified provider ... is not available"
        with pytest.raises(
            ValueError, match=r"asked for CUDAExecutionProvider but loaded only \['CPUExecutionProvider'\]"
        ):
            open_session(lite_onnx, ["CUDAExecutionProvider", "CPUExecutionProvider"])
        session = open_session(lite_onnx, ["CPUExecutionProvider"])
    assert session.get_providers() == ["CPUExecutionProvider"]


class _BrokenBackend:
    def __init__(self, *args, **kwargs):
        raise AttributeError("type object 'tensorrt.BuilderFlag' has no attribute 'FP16'")


def test_a_backend_failure_of_any_type_becomes_a_clear_startup_error(lite_onnx, monkeypatch):
    monkeypatch.setattr(backends_module, "OnnxRuntimeBackend", _BrokenBackend)
    with pytest.raises(BackendError, match=r"backend 'onnxruntime' cannot run .*AttributeError: .*FP16"):
        create_backend(lite_onnx, backend="onnxruntime", device="cpu")
    with pytest.raises(ConfigError, match="AttributeError") as caught:
        build_pipeline(PipelineConfig(model_file=str(lite_onnx), backend="onnxruntime", device="cpu"))
    assert caught.value.name == "model_file"
    # auto steps over the failing backend and names it when nothing else can run an .onnx on the CPU.
    with pytest.raises(ValueError, match=r"onnxruntime: failed \(type object .*FP16"):
        create_backend(lite_onnx, backend="auto", device="cpu")
