"""``PipelineConfig``: every setting of a pipeline, with its one default and its one validation.

The node declares its ROS parameters from these fields (``mtl_perception.ros.parameters``; a field
``flow_X`` is the parameter ``flow.X``, every other field keeps its name), the demo, ``mtl_infer``, replay
and the benchmarks build their pipeline from it, and :meth:`PipelineConfig.validate` raises
:class:`ConfigError` naming the parameter.

The flow settings default to None: the model's input contract (``mtl_perception.model.contract``) decides
them, because a network only works on flow made the way its training flow was made. A value set here
overrides the contract: :meth:`PipelineConfig.resolve` lists every such contradiction (the node warns once
per value and reports "contract overridden" in /diagnostics) and the pipeline runs on the user's choice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from mtl_perception.flow import CONFIDENCE_MODES, OPTFLOW_FARNEBACK_GAUSSIAN, FarnebackParams
from mtl_perception.flow.cv2_flow import IMPLEMENTATIONS as FLOW_IMPLEMENTATIONS
from mtl_perception.flow.cv2_flow import cv2_unsuitable
from mtl_perception.flow.params import InvalidFlowParameter
from mtl_perception.inference.backends import BACKENDS, PRECISIONS
from mtl_perception.model.contract import InputContract

OUTPUT_SIZES = ("network", "input")
#: the FarnebackParams fields a ``flow_<name>`` setting overrides (``flow_gaussian`` sets the window flag)
FARNEBACK_FIELDS = ("pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma", "resize_mode")


class ConfigError(ValueError):
    """An impossible configuration value or an unusable model file; ``name`` is the parameter."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name


def parameter_name(field_name: str) -> str:
    """The node's parameter name of a field: ``flow_levels`` -> ``flow.levels``; ``flow_dt`` stays."""
    if field_name.startswith("flow_") and field_name != "flow_dt":
        return "flow." + field_name[len("flow_") :]
    return field_name


@dataclass(frozen=True)
class Override:
    """A setting that contradicts the model's input contract: the pipeline runs on ``value``."""

    name: str  # the parameter name (flow.levels, flow_dt, network_height, ...)
    model: object  # what the model was trained with
    value: object  # what the setting asks for

    def __str__(self) -> str:
        return f"{self.name}={self.value} (model: {self.model})"


@dataclass(frozen=True)
class FlowSettings:
    """What the pipeline computes its flow input with: the contract's values, or the overrides."""

    farneback: FarnebackParams
    confidence: str
    flow_dt: float
    clamp_px: float
    network_size: tuple[int, int]
    overrides: tuple[Override, ...] = ()


@dataclass(frozen=True)
class PipelineConfig:
    """Everything that shapes a pipeline; field ``x`` is the node's parameter :func:`parameter_name`\\ (x)."""

    model_file: str = ""  # checkpoint / .onnx / .engine; "" = the shipped model; "untrained" = seeded preset
    model_preset: str = "ti"  # the untrained network's architecture (a model file brings its own)
    seed: int = 0  # the untrained network's weights
    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    # 0 = the model's own size (its contract's); set both to run a checkpoint at another size (an override)
    network_height: int = 0
    network_width: int = 0
    output_size: str = "network"
    # None = the model's contract (the right value for a trained model); a value overrides it
    flow_pyr_scale: float | None = None
    flow_levels: int | None = None
    flow_winsize: int | None = None
    flow_iterations: int | None = None
    flow_poly_n: int | None = None
    flow_poly_sigma: float | None = None
    flow_gaussian: bool | None = None
    flow_resize_mode: str | None = None
    flow_confidence: str | None = None
    flow_dt: float | None = None
    flow_implementation: str = "auto"  # torch | cv2 | auto (measured once, at the first frame)
    max_history: int = 8
    reset_gap_factor: float = 10.0

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, object]) -> PipelineConfig:
        """From the node's flat parameter dict (``flow.levels``, ...; None = unset); other keys ignored."""
        values = {}
        for f in fields(cls):
            value = parameters.get(parameter_name(f.name))
            if value is not None:
                values[f.name] = value
        return cls(**values)

    # ------------------------------------------------------------------------------------ validation
    def validate(self) -> None:
        """ConfigError naming the first impossible value; cheap, so it runs before any model is loaded."""
        _choice("backend", self.backend, BACKENDS)
        _choice("precision", self.precision, PRECISIONS)
        _choice("output_size", self.output_size, OUTPUT_SIZES)
        _choice("flow.implementation", self.flow_implementation, FLOW_IMPLEMENTATIONS)
        if self.flow_confidence is not None:
            _choice("flow.confidence", self.flow_confidence, CONFIDENCE_MODES)
        if self.flow_dt is not None and not (math.isfinite(self.flow_dt) and self.flow_dt > 0):
            raise ConfigError("flow_dt", f"parameter flow_dt={self.flow_dt} must be > 0 seconds")
        if int(self.max_history) < 1:
            raise ConfigError("max_history", f"parameter max_history={self.max_history} must be >= 1")
        if not self.reset_gap_factor >= 1:
            raise ConfigError(
                "reset_gap_factor", f"parameter reset_gap_factor={self.reset_gap_factor} must be >= 1"
            )
        self.requested_size()
        farneback = self.farneback_over(FarnebackParams())
        if self.flow_implementation == "cv2" and cv2_unsuitable(farneback):
            raise ConfigError(
                "flow.implementation", f"flow.implementation 'cv2': {cv2_unsuitable(farneback)}"
            )

    def requested_size(self) -> tuple[int, int] | None:
        """(H, W) set by network_height/width, or None (the model's own); ConfigError when impossible."""
        height, width = int(self.network_height), int(self.network_width)
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

    def farneback_over(self, base: FarnebackParams) -> FarnebackParams:
        """``base`` with the flow_* values that are set; ConfigError naming the parameter when invalid."""
        changes = {name: getattr(self, f"flow_{name}") for name in FARNEBACK_FIELDS}
        changes = {name: value for name, value in changes.items() if value is not None}
        if self.flow_gaussian is not None:
            gaussian = OPTFLOW_FARNEBACK_GAUSSIAN
            changes["flags"] = (base.flags | gaussian) if self.flow_gaussian else (base.flags & ~gaussian)
        try:
            return replace(base, **changes)
        except InvalidFlowParameter as error:
            name = "flow.gaussian" if error.field == "flags" else f"flow.{error.field}"
            raise ConfigError(name, f"parameter {name}: {error}") from error

    # ------------------------------------------------------------------------------ model contract
    def resolve(self, contract: InputContract, network_size: tuple[int, int]) -> FlowSettings:
        """The flow settings the pipeline runs with, for a model trained on ``contract`` that runs at
        ``network_size``; every value that contradicts the contract is listed in ``overrides``."""
        flow = contract.flow
        farneback = self.farneback_over(flow.farneback)
        confidence = self.flow_confidence if self.flow_confidence is not None else flow.confidence
        flow_dt = float(self.flow_dt) if self.flow_dt is not None else flow.flow_dt
        overrides = []
        size = tuple(network_size)
        if size != flow.size:
            overrides.append(
                Override("network_height/width", f"{flow.size[0]}x{flow.size[1]}", f"{size[0]}x{size[1]}")
            )
        model_params, params = flow.farneback.to_dict(), farneback.to_dict()
        for name in FARNEBACK_FIELDS:
            if params[name] != model_params[name]:
                overrides.append(Override(f"flow.{name}", model_params[name], params[name]))
        if params["flags"] != model_params["flags"]:
            gaussian = bool(model_params["flags"] & OPTFLOW_FARNEBACK_GAUSSIAN)
            overrides.append(Override("flow.gaussian", gaussian, not gaussian))
        if confidence != flow.confidence:
            overrides.append(Override("flow.confidence", flow.confidence, confidence))
        if not math.isclose(flow_dt, flow.flow_dt, rel_tol=1e-9):
            overrides.append(Override("flow_dt", round(flow.flow_dt, 6), flow_dt))
        return FlowSettings(farneback, confidence, flow_dt, flow.clamp_px, size, tuple(overrides))


def _choice(name: str, value, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(name, f"parameter {name}={value!r} must be one of {choices}")
