"""pipeline_factory: the model file defines the network and its inputs (its input contract); one
ConfigError naming each impossible value; one warning per setting that overrides the contract.

Real models (a lite checkpoint trained, says its contract, at 64x128 on COMMON Farnebäck flow with
forward-backward confidence, and its ONNX export), real backends (PyTorch, ONNX Runtime).
"""

import json

import numpy as np
import pytest
import torch
from contracts import contract_of

from mtl_perception.device import resolve_device
from mtl_perception.flow import COMMON, OPTFLOW_FARNEBACK_GAUSSIAN
from mtl_perception.inference import DEFAULT_INPUT_SIZE, inspect_model_file
from mtl_perception.inference.export import export_onnx
from mtl_perception.model import build_model, save_checkpoint, shipped
from mtl_perception.pipeline_config import ConfigError, PipelineConfig
from mtl_perception.pipeline_factory import build_pipeline, choose_model, network_size_for, semantic_colors

EXPORTED = (64, 128)


def trained_contract(model):
    """A contract unlike the project's defaults in every flow setting, so nothing can pass by accident."""
    return contract_of(
        model,
        size=EXPORTED,
        farneback=COMMON,
        confidence="forward_backward",
        partner_gap=1,
        frame_rate_hz=10.0,
    )


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("factory")
    torch.manual_seed(0)
    model = build_model(preset="lite", num_semantic_classes=5)
    contract = trained_contract(model)
    return {
        "ckpt": save_checkpoint(root / "m.pt", model, contract=contract),
        "onnx": export_onnx(model, root / "m.onnx", contract=contract),
        "root": root,
        "contract": contract,
    }


def frame(size=(80, 160)):
    return np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)


def test_exported_model_runs_at_its_own_size_with_sizes_unset(models):
    warnings = []
    pipe = build_pipeline(
        PipelineConfig(model_file=str(models["onnx"]), backend="onnxruntime", device="cpu"),
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
    )
    pipe = build_pipeline(config, warn=warnings.append)
    assert pipe.network_size == EXPORTED
    assert len(warnings) == 1 and "64x128" in warnings[0] and "192x384" in warnings[0]
    result = pipe.process(frame(), 1.0)
    assert result.semantic.shape == result.motion.shape == EXPORTED


def test_a_checkpoint_runs_at_its_training_size_and_another_set_size_is_an_override(models):
    warnings = []
    config = PipelineConfig(model_file=str(models["ckpt"]), backend="torch", device="cpu")
    pipe = build_pipeline(config, warn=warnings.append)
    assert pipe.network_size == EXPORTED and pipe.overrides == () and warnings == []
    chosen = PipelineConfig(
        model_file=str(models["ckpt"]), backend="torch", device="cpu", network_height=96, network_width=160
    )
    pipe = build_pipeline(chosen, warn=warnings.append)
    assert pipe.network_size == (96, 160)  # the user's choice runs...
    assert pipe.process(frame(), 1.0).depth.shape == (96, 160)
    assert len(warnings) == 1 and "64x128" in warnings[0] and "96x160" in warnings[0]  # ...named once
    assert [o.name for o in pipe.overrides] == ["network_height/width"]


def test_the_untrained_network_takes_the_set_size_or_the_default_and_overrides_nothing():
    warnings = []
    default = PipelineConfig(model_file="untrained", model_preset="lite", backend="torch", device="cpu")
    assert build_pipeline(default, warn=warnings.append).network_size == DEFAULT_INPUT_SIZE == (384, 768)
    levels = PipelineConfig(
        model_file="untrained", model_preset="lite", backend="torch", device="cpu", flow_levels=2,
        network_height=64, network_width=96,
    )  # fmt: skip
    pipe = build_pipeline(levels, warn=warnings.append)
    assert pipe.network_size == (64, 96) and pipe.flow_params.levels == 2 and warnings == []


@pytest.mark.parametrize("kind", ["ckpt", "onnx"])
def test_the_flow_settings_come_from_the_model_file(models, kind):
    """Nothing set: the pipeline makes its flow exactly as the model's contract says, on every backend."""
    backend = "torch" if kind == "ckpt" else "onnxruntime"
    pipe = build_pipeline(PipelineConfig(model_file=str(models[kind]), backend=backend, device="cpu"))
    flow = models["contract"].flow
    assert pipe.backend.contract == models["contract"]
    assert pipe.flow_params == COMMON and pipe.flow_input.confidence_mode == "forward_backward"
    assert pipe.flow_dt == pytest.approx(0.1) and pipe.flow_input.clamp_px == flow.clamp_px
    assert pipe.overrides == ()


def test_each_setting_that_contradicts_the_model_is_warned_about_once(models):
    warnings = []
    config = PipelineConfig(
        model_file=str(models["ckpt"]),
        backend="torch",
        device="cpu",
        flow_levels=5,
        flow_winsize=15,
        flow_confidence="residual",
        flow_dt=0.1,
    )  # fmt: skip  winsize 15 and flow_dt 0.1 are the model's own: no contradiction
    pipe = build_pipeline(config, warn=warnings.append)
    assert [o.name for o in pipe.overrides] == ["flow.levels", "flow.confidence"]
    assert len(warnings) == 2
    assert "flow.levels=5" in warnings[0] and "flow.levels=3" in warnings[0]
    assert "flow.confidence=residual" in warnings[1] and "forward_backward" in warnings[1]
    assert pipe.flow_params.levels == 5 and pipe.flow_input.confidence_mode == "residual"


def test_a_model_file_made_before_contracts_gets_the_assumed_one_and_one_warning(tmp_path, models):
    """An export of the earlier format (no input contract in its metadata): the project's flow defaults
    at its size are assumed, and said once, however many times the file is read."""
    import onnx

    old = tmp_path / "old.onnx"
    proto = onnx.load(str(models["onnx"]))
    kept = [p for p in proto.metadata_props if p.key != "mtl_perception.input_contract"]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    onnx.save(proto, str(old))
    warnings = []
    config = PipelineConfig(model_file=str(old), backend="onnxruntime", device="cpu")
    pipe = build_pipeline(config, warn=warnings.append)
    build_pipeline(config, warn=warnings.append)
    assert len(warnings) == 1 and "records no input contract" in warnings[0] and "64x128" in warnings[0]
    assert pipe.flow_params != COMMON and pipe.flow_dt == pytest.approx(2 / 17)


def test_empty_model_file_means_the_shipped_model_never_the_untrained_one(monkeypatch, tmp_path):
    """Without the shipped file: one error naming `make shipped-model`, no silent untrained fallback."""
    monkeypatch.setattr(shipped, "shipped_folder", lambda: tmp_path)
    with pytest.raises(ConfigError, match="make shipped-model") as caught:
        build_pipeline(PipelineConfig(backend="torch", device="cpu"))
    assert caught.value.name == "model_file" and "untrained" in str(caught.value)
    torch.manual_seed(0)
    lite = build_model(preset="lite")
    save_checkpoint(tmp_path / shipped.SHIPPED_CHECKPOINT, lite, contract=contract_of(lite, size=(64, 128)))
    assert choose_model(PipelineConfig()).model.shipped
    pipe = build_pipeline(PipelineConfig(backend="torch", device="cpu"))
    assert pipe.network_size == (64, 128)
    untrained = choose_model(PipelineConfig(model_file="untrained", model_preset="lite", seed=3)).model
    assert untrained.path is None and not untrained.trained and "UNTRAINED" in untrained.label


def test_engine_size_and_contract_come_from_its_key_file_without_tensorrt(models, tmp_path):
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ValueError, match="no key file"):
        inspect_model_file(engine)
    key = tmp_path / "m.engine.json"
    key.write_text(json.dumps({"input_size": [96, 192], "config": {}}))
    with pytest.raises(ValueError, match="records no input contract"):  # an engine from before contracts
        inspect_model_file(engine)
    key.write_text(
        json.dumps({"input_size": [96, 192], "config": {}, "input_contract": models["contract"].to_dict()})
    )
    facts = inspect_model_file(engine)
    assert facts.fixed_size == (96, 192) and facts.contract == models["contract"]
    assert inspect_model_file(models["onnx"]).fixed_size == EXPORTED
    assert inspect_model_file(models["ckpt"]).fixed_size is None
    warnings = []
    size = network_size_for(
        PipelineConfig(model_file=str(engine), network_height=64, network_width=64),
        facts,
        warn=warnings.append,
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
            "flow.iterations": None,  # unset: the model's
            "flow_dt": 0.2,
            "publish_flow": True,  # a node-only parameter: ignored
        }
    )
    assert (config.model_preset, config.network_height, config.network_width) == ("lite", 96, 192)
    assert config.flow_levels == 3 and config.flow_winsize == 15 and config.flow_iterations is None
    flow = config.farneback_over(COMMON)
    assert (
        flow.levels == 3 and flow.flags == OPTFLOW_FARNEBACK_GAUSSIAN and flow.iterations == COMMON.iterations
    )
    assert config.flow_confidence == "forward_backward" and config.flow_dt == 0.2
    with pytest.raises(ConfigError, match="levels") as caught:
        PipelineConfig.from_parameters({"flow.levels": -1}).validate()
    assert caught.value.name == "flow.levels"


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
