"""One way to build a :class:`~mtl_perception.pipeline.PerceptionPipeline` from a plain configuration.

The node (from its ROS parameters), the demo, and through the node the replay tools and the benchmarks
build their pipeline here, so each value is checked once and every impossible one raises
:class:`ConfigError` naming the parameter and the value.

``model_file`` is resolved by :func:`mtl_perception.model.shipped.resolve_model`: empty = the shipped trained
checkpoint (a clear ConfigError naming ``make shipped-model`` when the package carries none), ``untrained``
= the seeded random ``model_preset`` (labelled UNTRAINED), else the file.

The loaded model is the single source of its input size, tasks, classes and architecture: an exported
model (.onnx metadata, .engine key file) runs at the size it was made for, a checkpoint carries its
architecture and, when it records one (``img_resize``: the shipped model, ``train.py``'s ``best.pt``), the
size it was trained at. ``network_height`` / ``network_width`` only shape a model without a fixed size (a
checkpoint, which runs at any multiple of 16, or the untrained ``model_preset``); 0 = unset (the
checkpoint's training size, else ``DEFAULT_INPUT_SIZE``). A fixed-size model that disagrees with a set
size gets one warning and runs at its own size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np

from mtl_perception.flow import DEFAULT_CONFIDENCE_MODE, OPTFLOW_FARNEBACK_GAUSSIAN, FarnebackParams
from mtl_perception.flow.cv2_flow import IMPLEMENTATIONS as FLOW_IMPLEMENTATIONS
from mtl_perception.flow.cv2_flow import cv2_unsuitable
from mtl_perception.inference import (
    BACKENDS,
    DEFAULT_INPUT_SIZE,
    PRECISIONS,
    create_backend,
    fixed_input_size,
    resolve_device,
)
from mtl_perception.inference.backends import CHECKPOINT_SUFFIXES
from mtl_perception.model.checkpoint import read_checkpoint, trained_input_size
from mtl_perception.model.shipped import ResolvedModel, ShippedModelMissing, resolve_model
from mtl_perception.pipeline import DEFAULT_FLOW_DT, PerceptionPipeline, check_options

LOG = logging.getLogger("mtl_perception.pipeline_factory")
PALETTES = ("five", "trainid")
# ROS parameter name -> FarnebackParams field (flow.gaussian is the flag, handled on its own)
FLOW_PARAMETERS = {
    f"flow.{name}": name
    for name in ("pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma", "resize_mode")
}


class ConfigError(ValueError):
    """An impossible configuration value or an unusable model file; the message names it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes a pipeline; field names are the node's parameter names."""

    model_file: str = ""  # checkpoint / .onnx / .engine; "" = the shipped model; "untrained" = seeded preset
    model_preset: str = "ti"
    seed: int = 0
    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    network_height: int = 0  # 0 = the model's own size (DEFAULT_INPUT_SIZE for a size-less model)
    network_width: int = 0
    output_size: str = "network"
    flow: FarnebackParams = field(default_factory=FarnebackParams)
    flow_confidence: str = DEFAULT_CONFIDENCE_MODE
    flow_implementation: str = "auto"  # torch | cv2 | auto (measured once, at the first frame)
    flow_dt: float = DEFAULT_FLOW_DT
    max_history: int = 8
    reset_gap_factor: float = 10.0

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, object]) -> PipelineConfig:
        """From the node's flat parameter dict (``flow.levels``, ...); other keys are ignored."""
        flow_values = {key: parameters[name] for name, key in FLOW_PARAMETERS.items() if name in parameters}
        if parameters.get("flow.gaussian"):
            flow_values["flags"] = OPTFLOW_FARNEBACK_GAUSSIAN
        try:
            flow = FarnebackParams(**flow_values)
        except ValueError as error:
            raise ConfigError("flow", f"flow parameters: {error}") from error
        plain = {f.name for f in fields(cls)} - {"flow", "flow_confidence", "flow_implementation"}
        values = {name: parameters[name] for name in plain if name in parameters}
        if "flow.confidence" in parameters:
            values["flow_confidence"] = parameters["flow.confidence"]
        if "flow.implementation" in parameters:
            values["flow_implementation"] = parameters["flow.implementation"]
        return cls(flow=flow, **values)


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(name, f"parameter {name}={value!r} must be one of {choices}")


def _requested_size(config: PipelineConfig) -> tuple[int, int] | None:
    height, width = int(config.network_height), int(config.network_width)
    for name, value in (("network_height", height), ("network_width", width)):
        if value < 0 or value % 16:
            raise ConfigError(
                name, f"parameter {name}={value} must be 0 (the model's size) or a multiple of 16"
            )
    if (height == 0) != (width == 0):
        raise ConfigError(
            "network_height" if height == 0 else "network_width",
            f"network_height={height} and network_width={width}: set both, or both 0 (the model's size)",
        )
    return (height, width) if height else None


def resolve_config_model(config: PipelineConfig) -> ResolvedModel:
    """The model ``config.model_file`` names (module doc); ConfigError when the shipped one is absent."""
    try:
        return resolve_model(config.model_file, preset=config.model_preset, seed=config.seed)
    except ShippedModelMissing as error:
        raise ConfigError("model_file", f"parameter model_file is empty: {error}") from error


def _checkpoint_size(model_file: str | None) -> tuple[int, int] | None:
    """The training size a checkpoint records (None for other files, or a checkpoint without one)."""
    if model_file is None or Path(model_file).suffix.lower() not in CHECKPOINT_SUFFIXES:
        return None
    return trained_input_size(read_checkpoint(model_file)["extra"])


def network_size_for(
    config: PipelineConfig, warn: Callable[[str], None] = LOG.warning
) -> tuple[int, int] | None:
    """The size to ask the backend for: None for a fixed-size model (it brings its own), else the set size
    (unset: a checkpoint's recorded training size, else DEFAULT_INPUT_SIZE)."""
    requested = _requested_size(config)
    resolved = resolve_config_model(config)
    model_file = str(resolved.path) if resolved.path is not None else None
    try:
        fixed = fixed_input_size(model_file)
        trained = _checkpoint_size(model_file) if fixed is None and requested is None else None
    except FileNotFoundError as error:
        raise ConfigError("model_file", f"model_file {model_file!r} not found: {error}") from error
    except (ValueError, OSError) as error:
        raise ConfigError("model_file", f"cannot load model {model_file!r}: {error}") from error
    if fixed is None:
        return requested or trained or DEFAULT_INPUT_SIZE
    if requested is not None and requested != fixed:
        warn(
            f"model_file {model_file} was made for {fixed[0]}x{fixed[1]}; it runs at that size and "
            f"network_height/width {requested[0]}x{requested[1]} is ignored (it only shapes checkpoints "
            "and the untrained model)"
        )
    return None


def build_pipeline(config: PipelineConfig, warn: Callable[[str], None] = LOG.warning) -> PerceptionPipeline:
    """Check ``config``, load the model on its backend and return the pipeline; ConfigError names a bad value.

    Cheap checks come first, so a typo fails before seconds of model loading. ``warn`` receives the one
    warning about a set network size that a fixed-size model overrides (the node passes its ROS logger).
    """
    _choice("backend", config.backend, BACKENDS)
    _choice("precision", config.precision, PRECISIONS)
    try:
        check_options(
            config.output_size, config.flow_dt, config.max_history, config.reset_gap_factor,
            config.flow_confidence,
        )  # fmt: skip
    except ValueError as error:  # the message starts with the option's name
        name = str(error).split()[0].replace("confidence_mode", "flow.confidence")
        raise ConfigError(name, f"parameter {name}: {error}") from error
    _choice("flow.implementation", config.flow_implementation, FLOW_IMPLEMENTATIONS)
    if config.flow_implementation == "cv2" and cv2_unsuitable(config.flow):
        raise ConfigError("flow.implementation", f"flow.implementation 'cv2': {cv2_unsuitable(config.flow)}")
    try:
        device = resolve_device(config.device)
    except ValueError as error:
        raise ConfigError("device", f"parameter device={config.device!r}: {error}") from error
    size = network_size_for(config, warn)
    resolved = resolve_config_model(config)
    model_file = str(resolved.path) if resolved.path is not None else None
    try:
        backend = create_backend(
            model_file,
            backend=config.backend,
            device=device,
            precision=config.precision,
            input_size=size,
            preset=config.model_preset,
            seed=config.seed,
        )
    except FileNotFoundError as error:
        raise ConfigError("model_file", f"model_file {model_file!r} not found: {error}") from error
    except (ValueError, RuntimeError, OSError, KeyError) as error:
        raise ConfigError(
            "model_file" if model_file else "model_preset",
            f"cannot load model {model_file or config.model_preset!r} "
            f"with backend {config.backend!r}: {error}",
        ) from error
    return PerceptionPipeline(
        backend,
        config.flow,
        device=device,
        flow_dt=config.flow_dt,
        max_history=config.max_history,
        output_size=config.output_size,
        reset_gap_factor=config.reset_gap_factor,
        confidence_mode=config.flow_confidence,
        flow_implementation=config.flow_implementation,
    )


def semantic_colors(palette: str, palette_rgb, backend) -> np.ndarray:
    """(C, 3) uint8 colours of ``semantic/color``: ``palette_rgb`` (0xRRGGBB; [] or [0] = off) or ``palette``.

    ConfigError when a colour is out of range or the palette has fewer colours than the model has classes.
    """
    from mtl_perception.data import semantic_palette

    _choice("palette", palette, PALETTES)
    custom = [int(v) for v in palette_rgb]
    if custom not in ([], [0]):
        if any(v < 0 or v > 0xFFFFFF for v in custom):
            raise ConfigError("palette_rgb", "palette_rgb entries must be 0xRRGGBB integers in [0, 16777215]")
        colors = np.array([[(v >> 16) & 255, (v >> 8) & 255, v & 255] for v in custom], np.uint8)
    else:
        colors = np.asarray(semantic_palette(palette), np.uint8)
    classes = int(backend.num_semantic_classes)
    if "semantic" in tuple(backend.tasks) and len(colors) < classes:
        raise ConfigError(
            "palette_rgb" if custom not in ([], [0]) else "palette",
            f"palette has {len(colors)} colours but the model predicts {classes} classes",
        )
    return colors
