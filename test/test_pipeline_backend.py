"""The pipeline with the real backends (ONNX Runtime and PyTorch) and the demo end to end."""

import json

import numpy as np
import pytest
import torch
from contracts import flow_overrides

from mtl_perception.flow import COMMON
from mtl_perception.inference import create_backend
from mtl_perception.pipeline import PerceptionPipeline
from mtl_perception.pipeline_config import PipelineConfig

NET = (64, 128)


@pytest.fixture(scope="module")
def ort_backend():
    return create_backend(None, backend="onnxruntime", device="cpu", input_size=NET, preset="lite", seed=3)


def frames(count, size=(80, 160)):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (size[0], size[1] + 4 * count, 3), dtype=np.uint8)
    return [np.ascontiguousarray(base[:, 2 * i : 2 * i + size[1]]) for i in range(count)]


def test_real_backend_outputs_follow_the_contract(ort_backend):
    pipe = PerceptionPipeline(ort_backend, PipelineConfig(output_size="network", **flow_overrides(COMMON)))
    seq = frames(3)
    results = [pipe.process(f, 5.0 + i / 17) for i, f in enumerate(seq)]
    for r in results:
        assert r.depth.shape == NET and r.depth.dtype == np.float32
        assert np.all(np.isnan(r.depth) | (r.depth > 0))
        assert r.semantic.shape == NET and r.semantic.dtype == np.uint8
        assert r.semantic.max() < ort_backend.num_semantic_classes
        assert set(np.unique(r.motion)) <= {0, 1}
    assert results[0].reset and not results[2].reset
    assert results[2].partner_dt == pytest.approx(2 / 17)


def test_pipeline_outputs_equal_a_direct_backend_call(ort_backend):
    """The pipeline adds nothing to the network's answer: same image + same flow -> same outputs."""
    pipe = PerceptionPipeline(ort_backend, PipelineConfig(**flow_overrides(COMMON)))
    frame = frames(1, size=NET)[0]
    result = pipe.process(frame, 1.0)  # first frame: zero flow, zero confidence
    image = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    direct = ort_backend.run(image, torch.zeros(1, 3, *NET))
    np.testing.assert_array_equal(result.semantic, direct["semantic"][0].numpy())
    np.testing.assert_array_equal(result.motion, direct["motion"][0].numpy())
    depth = direct["depth"][0, 0].numpy()
    np.testing.assert_array_equal(np.isnan(result.depth), depth <= 0)
    np.testing.assert_allclose(result.depth[depth > 0], depth[depth > 0])


def test_demo_writes_mosaic_tables_and_metrics(tmp_path):
    from PIL import Image

    from mtl_perception import demo

    out = tmp_path / "demo"
    args = [
        "--out",
        str(out),
        "--model",
        "untrained",
        "--frames",
        "5",
        "--height",
        "64",
        "--width",
        "128",
        "--network-height",
        "64",
        "--network-width",
        "128",
        "--preset",
        "lite",
        "--backend",
        "onnxruntime",
        "--device",
        "cpu",
    ]
    assert demo.main(args) == 0
    import cv2

    # frames 2, 3, 4 carry ground truth (each has its flow partner 2 frames earlier): three blocks of
    # prediction row over ground-truth row, each 4 tiles wide, then the depth scale bar and the legend
    mosaic = cv2.imread(str(out / "mosaic.png"))
    assert mosaic.shape[:2] == (3 * (2 * 64 + 6) + 44 + 30, 4 * 128)
    with Image.open(out / "drive.gif") as gif:
        assert gif.n_frames == 5 and gif.size == (4 * 64, 32)
    report = json.loads((out / "latency.json").read_text())
    assert report["trained"] is False and "UNTRAINED" in report["model"]
    assert {"preprocess", "flow", "network", "postprocess", "total"} <= set(report["stages_ms"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["frames_scored"] == 3 and metrics["seed"] == demo.DEMO_SEED
    assert 0 <= metrics["semantic_miou"] <= 1 and 0 <= metrics["motion_miou"] <= 1
    assert set(metrics["semantic_iou_per_class"]) == {"road", "sky", "pedestrian", "vehicle", "background"}
    assert "| network |" in (out / "latency.md").read_text()
    table = (out / "metrics.md").read_text()
    assert "| semantic: road |" in table and "UNTRAINED" in table
    assert demo.main(args) == 0  # a re-run may replace the demo's own files
    foreign = tmp_path / "user_folder"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("precious")
    assert demo.main(["--out", str(foreign), *args[2:]]) == 2
    assert (foreign / "keep.txt").read_text() == "precious" and not (foreign / "mosaic.png").exists()


def test_demo_without_a_model_needs_the_shipped_one(tmp_path, monkeypatch, capsys):
    """No --model: the shipped model, never a silent untrained one; without it one error, nothing written."""
    from mtl_perception import demo
    from mtl_perception.model import shipped

    monkeypatch.setattr(shipped, "shipped_folder", lambda: tmp_path / "weights")
    out = tmp_path / "demo"
    assert demo.main(["--out", str(out), "--frames", "3"]) == 2
    assert "make shipped-model" in capsys.readouterr().err and not out.exists()
