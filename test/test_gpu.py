"""The GPU paths on a real CUDA device (skipped without one; run by benchmarks/gpu_check.py with -m gpu).

Oracles: cv2.calcOpticalFlowFarneback for the flow, the CPU float32 network for the backends, eager
execution for the CUDA graphs, torch's sync debug mode for the host syncs of a steady-state frame.
No ROS import: the GPU machine has none.
"""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch
from contracts import contract_of, flow_overrides

from mtl_perception.device_io import count_host_syncs
from mtl_perception.flow import COMMON, CUDA_DEFAULTS, StreamingFarneback, calc_optical_flow_farneback
from mtl_perception.flow.synthetic import endpoint_error, make_pair
from mtl_perception.inference import TorchBackend, create_backend
from mtl_perception.inference.export import export_onnx
from mtl_perception.model import build_model
from mtl_perception.pipeline import PerceptionPipeline
from mtl_perception.pipeline_config import PipelineConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
H, W = 384, 768


@pytest.fixture
def process_tf32(request):
    """Set the process-wide cuDNN/cuBLAS float32 precision to ``request.param`` for one test."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = (conv.fp32_precision, matmul.fp32_precision, torch.backends.cudnn.benchmark)
    conv.fp32_precision = matmul.fp32_precision = request.param
    torch.backends.cudnn.benchmark = request.param == "tf32"  # "tf32": everything the network turns on
    yield request.param
    conv.fp32_precision, matmul.fp32_precision, torch.backends.cudnn.benchmark = saved


@pytest.mark.parametrize("process_tf32", ["ieee", "tf32"], indirect=True)
def test_cuda_flow_matches_cv2_whatever_the_process_tf32_setting(process_tf32):
    prev, nxt, _ = make_pair("astronaut", H, W, 4.0, seed=3)
    a, b = (cv2.cvtColor(x, cv2.COLOR_BGR2GRAY) for x in (prev, nxt))
    args = (0.5, 3, 15, 3, 5, 1.2, 0)
    ref = cv2.calcOpticalFlowFarneback(a, b, None, *args)
    ours = (
        calc_optical_flow_farneback(torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda(), None, *args)
        .cpu()
        .numpy()
    )
    epe = endpoint_error(ours, ref)
    print(f"[gpu parity] {process_tf32}: mean {epe.mean():.2e} px, p99.9 {np.percentile(epe, 99.9):.2e} px")
    assert epe.mean() <= 1e-3 and np.percentile(epe, 99.9) <= 0.05


@pytest.mark.parametrize("params", [CUDA_DEFAULTS, COMMON], ids=["cuda_defaults", "common"])
def test_flow_cuda_graph_replay_equals_eager(params):
    prev, nxt, _ = make_pair("coffee", H, W, 3.0, seed=5)
    frames = [torch.from_numpy(cv2.cvtColor(x, cv2.COLOR_BGR2GRAY)).cuda() for x in (prev, nxt)]
    eager, graphed = StreamingFarneback(params, "cuda"), StreamingFarneback(params, "cuda", cuda_graph=True)
    want_flow, want_conf = eager.flow(*(eager.prepare(f) for f in frames))
    for _ in range(3):  # capture, then replays
        got_flow, got_conf = graphed.flow(*(graphed.prepare(f) for f in frames))
    assert graphed.cuda_graph and graphed.graph_failure is None
    torch.testing.assert_close(got_flow, want_flow, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_conf, want_conf, rtol=0, atol=1e-5)


def _model():
    torch.manual_seed(0)
    model = build_model(preset="ti", num_semantic_classes=19)
    model.train()
    with torch.no_grad():
        model(torch.rand(2, 3, 64, 128) * 255, torch.randn(2, 3, 64, 128))
    return model.eval()


def _inputs():
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, H, W, generator=g) * 255
    flow = torch.cat([torch.randn(1, 2, H, W, generator=g) * 4, torch.rand(1, 1, H, W, generator=g)], 1)
    return image, flow


@pytest.mark.parametrize(("precision", "depth_tol", "agree"), [("fp32", 2e-3, 0.999), ("fp16", 3e-2, 0.98)])
def test_torch_backend_with_cuda_graphs_matches_the_cpu_reference(precision, depth_tol, agree):
    model = _model()
    image, flow = _inputs()
    ref = TorchBackend(model, torch.device("cpu"), input_size=(H, W)).run(image, flow)
    backend = TorchBackend(model, torch.device("cuda"), precision, input_size=(H, W))
    assert backend.use_graphs
    for _ in range(3):
        out = backend.run(image.cuda(), flow.cuda())
    depth = out["depth"].cpu()
    assert torch.isfinite(depth).all()
    assert (depth - ref["depth"]).abs().max() <= depth_tol * ref["depth"].abs().max()
    for task in ("semantic", "motion"):
        assert (out[task].cpu() == ref[task]).float().mean() >= agree, task


def test_onnxruntime_cuda_matches_torch_if_loadable(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip(f"onnxruntime {ort.__version__} has no CUDAExecutionProvider (the CPU build)")
    model = _model()
    onnx_path = export_onnx(model, tmp_path / "ti.onnx", contract=contract_of(model, size=(H, W)))
    image, flow = _inputs()
    ref = TorchBackend(model, torch.device("cpu"), input_size=(H, W)).run(image, flow)
    backend = create_backend(onnx_path, backend="onnxruntime", device="cuda")
    out = backend.run(image.cuda(), flow.cuda())
    assert (out["depth"].cpu() - ref["depth"]).abs().max() <= 2e-3 * ref["depth"].abs().max()
    assert (out["semantic"].cpu() == ref["semantic"]).float().mean() >= 0.999


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_matches_torch_if_present(tmp_path, precision):
    if importlib.util.find_spec("tensorrt") is None:
        pytest.skip("TensorRT is not installed")
    model = _model()
    onnx_path = export_onnx(model, tmp_path / "ti.onnx", contract=contract_of(model, size=(H, W)))
    image, flow = _inputs()
    ref = TorchBackend(model, torch.device("cpu"), input_size=(H, W)).run(image, flow)
    backend = create_backend(
        onnx_path, backend="tensorrt", device="cuda", precision=precision, cache_dir=tmp_path
    )
    out = backend.run(image.cuda(), flow.cuda())
    tol = 2e-3 if precision == "fp32" else 3e-2
    assert (out["depth"].cpu() - ref["depth"]).abs().max() <= tol * ref["depth"].abs().max()


def test_a_steady_state_frame_syncs_the_host_once_the_download():
    backend = TorchBackend(_model(), torch.device("cuda"), "fp16", input_size=(H, W))
    pipe = PerceptionPipeline(backend, PipelineConfig(flow_dt=0.1, **flow_overrides(CUDA_DEFAULTS)))
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (1024, 2048, 3), dtype=np.uint8) for _ in range(4)]
    for i in range(3):  # captures (flow, network), allocator growth, cuDNN autotuning
        pipe.process(frames[i], 0.1 * i)
    sites = count_host_syncs(lambda: pipe.process(frames[3], 0.3))
    assert pipe.flow_input.flow.cuda_graph and pipe.flow_input.flow.graph_failure is None
    assert len(sites) == 1 and sites[0].startswith("device_io.py"), (
        f"host syncs at {sites} (want 1: the download)"
    )
