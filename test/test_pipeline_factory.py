"""pipeline_factory: the model file defines the network; one ConfigError naming each impossible value.

Real models (a lite checkpoint and its ONNX export at 64x128), real backends (PyTorch, ONNX Runtime).
"""

import json

import numpy as np
import pytest
import torch

from mtl_perception.flow import COMMON, OPTFLOW_FARNEBACK_GAUSSIAN
from mtl_perception.inference import DEFAULT_INPUT_SIZE, fixed_input_size, resolve_device
from mtl_perception.inference.export import export_onnx
from mtl_perception.model import build_model, save_checkpoint, shipped
from mtl_perception.pipeline_factory import (
    ConfigError,
    PipelineConfig,
    build_pipeline,
    network_size_for,
    resolve_config_model,
    semantic_colors,
)

EXPORTED = (64, 128)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("factory")
    torch.manual_seed(0)
    model = build_model(preset="lite", num_semantic_classes=5)
    return {
        "ckpt": save_checkpoint(root / "m.pt", model),
        "onnx": export_onnx(model, root / "m.onnx", *EXPORTED),
        "root": root,
    }


def frame(size=(80, 160)):
    return np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_exported_model_runs_at_its_own_size_with_sizes_unset(models):
    warnings = []
    pipe = build_pipeline(
        PipelineConfig(model_file=str(models["onnx"]), backend="onnxruntime", device="cpu", flow=COMMON),
        warn=warnings.append,
    )
    assert pipe.network_size == EXPORTED and warnings == []
    assert pipe.process(frame(), 1.0).depth.shape == EXPORTED


def test_exported_model_overrides_a_set_size_with_one_warning(models):
    warnings = []
    config = PipelineConfig(
        model_file=str(models["onnx"]),
        backend="onnxruntime",
        device="cpu",
        network_height=192,
        network_width=384,
        flow=COMMON,
    )
    pipe = build_pipeline(config, warn=warnings.append)
    assert pipe.network_size == EXPORTED
    assert len(warnings) == 1 and "64x128" in warnings[0] and "192x384" in warnings[0]
    result = pipe.process(frame(), 1.0)
    assert result.semantic.shape == result.motion.shape == EXPORTED


def test_checkpoint_and_untrained_model_take_the_set_size_or_the_default(models):
    warnings = []
    chosen = PipelineConfig(
        model_file=str(models["ckpt"]), backend="torch", device="cpu", network_height=96, network_width=160
    )
    pipe = build_pipeline(chosen, warn=warnings.append)
    assert pipe.network_size == (96, 160) and warnings == []
    assert pipe.process(frame(), 1.0).depth.shape == (96, 160)
    default = PipelineConfig(model_file="untrained", model_preset="lite", backend="torch", device="cpu")
    assert build_pipeline(default).network_size == DEFAULT_INPUT_SIZE == (384, 768)


def test_a_checkpoint_that_records_its_training_size_runs_at_it(tmp_path):
    torch.manual_seed(0)
    trained_at = save_checkpoint(tmp_path / "best.pt", build_model(preset="lite"), img_resize=[64, 128])
    config = PipelineConfig(model_file=str(trained_at), backend="torch", device="cpu")
    assert build_pipeline(config).network_size == (64, 128)
    chosen = PipelineConfig(
        model_file=str(trained_at), backend="torch", device="cpu", network_height=96, network_width=160
    )
    assert build_pipeline(chosen).network_size == (96, 160)  # a set size still wins for a checkpoint


def test_empty_model_file_means_the_shipped_model_never_the_untrained_one(monkeypatch, tmp_path):
    """Without the shipped file: one error naming `make shipped-model`, no silent untrained fallback."""
    monkeypatch.setattr(shipped, "shipped_folder", lambda: tmp_path)
    with pytest.raises(ConfigError, match="make shipped-model") as caught:
        build_pipeline(PipelineConfig(backend="torch", device="cpu"))
    assert caught.value.name == "model_file" and "untrained" in str(caught.value)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / shipped.SHIPPED_CHECKPOINT, build_model(preset="lite"), img_resize=[64, 128])
    assert resolve_config_model(PipelineConfig()).shipped
    pipe = build_pipeline(PipelineConfig(backend="torch", device="cpu"))
    assert pipe.network_size == (64, 128)
    untrained = resolve_config_model(PipelineConfig(model_file="untrained", model_preset="lite", seed=3))
    assert untrained.path is None and not untrained.trained and "UNTRAINED" in untrained.label


def test_engine_size_comes_from_its_key_file_without_tensorrt(models, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ValueError, match="no key file"):
        fixed_input_size(engine)
    (tmp_path / "m.engine.json").write_text(json.dumps({"input_size": [96, 192], "config": {}}))
    assert fixed_input_size(engine) == (96, 192)
    assert fixed_input_size(models["onnx"]) == EXPORTED and fixed_input_size(models["ckpt"]) is None
    warnings = []
    size = network_size_for(
        PipelineConfig(model_file=str(engine), network_height=64, network_width=64), warn=warnings.append
    )
    assert size is None and len(warnings) == 1 and "96x192" in warnings[0]


@pytest.mark.parametrize(
    "change, name, text",
    [
        ({"backend": "openvino"}, "backend", "'openvino'"),
        ({"precision": "int8"}, "precision", "'int8'"),
        ({"output_size": "full"}, "output_size", "'full'"),
        ({"flow_dt": 0.0}, "flow_dt", "flow_dt"),
        ({"max_history": 0}, "max_history", "max_history"),
        ({"flow_confidence": "magic"}, "flow.confidence", "'magic'"),
        ({"device": "tpu"}, "device", "'tpu'"),
        ({"network_height": 100, "network_width": 128}, "network_height", "network_height=100"),
        ({"network_height": 64}, "network_width", "network_width=0"),
        ({"model_file": "/nonexistent/model.onnx"}, "model_file", "not found"),
        ({"model_file": "/nonexistent/model.bin"}, "model_file", "unknown model file type"),
        ({"model_preset": "huge"}, "model_preset", "huge"),
    ],
)
def test_impossible_values_raise_one_error_naming_them(change, name, text):
    with pytest.raises(ConfigError, match=text) as caught:
        build_pipeline(
            PipelineConfig(**{"model_file": "untrained", "backend": "torch", "device": "cpu", **change})
        )
    assert caught.value.name == name


def test_corrupt_model_file_is_named(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match="corrupt.onnx") as caught:
        build_pipeline(PipelineConfig(model_file=str(corrupt), device="cpu"))
    assert caught.value.name == "model_file"


def test_from_parameters_reads_the_node_parameter_names():
    config = PipelineConfig.from_parameters(
        {
            "model_preset": "lite",
            "network_height": 96,
            "network_width": 192,
            "flow.levels": 3,
            "flow.winsize": 15,
            "flow.gaussian": True,
            "flow.confidence": "forward_backward",
            "flow_dt": 0.2,
            "publish_flow": True,  # a node-only parameter: ignored
        }
    )
    assert (config.model_preset, config.network_height, config.network_width) == ("lite", 96, 192)
    assert config.flow.levels == 3 and config.flow.winsize == 15
    assert config.flow.flags == OPTFLOW_FARNEBACK_GAUSSIAN and config.flow.iterations == 10
    assert config.flow_confidence == "forward_backward" and config.flow_dt == 0.2
    with pytest.raises(ConfigError, match="levels") as caught:
        PipelineConfig.from_parameters({"flow.levels": -1})
    assert caught.value.name == "flow"


def test_resolve_device_is_the_one_auto_rule():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="'tpu'"):
        resolve_device("tpu")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("cuda:x")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:0")


def test_semantic_colors_named_custom_and_too_few():
    class FiveClasses:
        tasks = ("depth", "semantic", "motion")
        num_semantic_classes = 5

    five = semantic_colors("five", [0], FiveClasses())
    assert five.shape == (5, 3) and five.dtype == np.uint8
    custom = semantic_colors("five", [0x804080, 0x4682B4, 0xDC143C, 0x00008E, 0], FiveClasses())
    np.testing.assert_array_equal(custom[:2], [[0x80, 0x40, 0x80], [0x46, 0x82, 0xB4]])
    with pytest.raises(ConfigError, match="4 colours but the model predicts 5") as caught:
        semantic_colors("five", [1, 2, 3, 4], FiveClasses())
    assert caught.value.name == "palette_rgb"
    with pytest.raises(ConfigError, match="0xRRGGBB"):
        semantic_colors("five", [1, 2, 3, 4, 0x1000000], FiveClasses())
    with pytest.raises(ConfigError, match="'rainbow'"):
        semantic_colors("rainbow", [0], FiveClasses())
