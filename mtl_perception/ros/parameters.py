"""The node's ROS parameters: name -> (default, descriptor with description and range), one table.

Declared by :class:`mtl_perception.ros.node_core.PerceptionCore`; docs/node.md explains them and
``config/params.yaml`` lists those a user sets (tested). The pipeline-shaping ones take their default from
:class:`mtl_perception.pipeline_config.PipelineConfig` (the one default, and its ``validate()`` the one
validation) and are read back by ``PipelineConfig.from_parameters``. Those the model's input contract
defines (the flow's Farnebäck parameters, confidence, ``flow_dt``) default to *unset*: declared with a type
and no value, they take the model's value; a value set in a params file or with ``-p`` overrides the model
(a warning, and "contract overridden" in /diagnostics).
"""

from __future__ import annotations

from dataclasses import fields

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.parameter import Parameter

from mtl_perception.colormap import DEFAULT_FAR_M, DEFAULT_NEAR_M
from mtl_perception.flow import CONFIDENCE_MODES
from mtl_perception.flow.cv2_flow import IMPLEMENTATIONS as FLOW_IMPLEMENTATIONS
from mtl_perception.inference import BACKENDS, DEFAULT_INPUT_SIZE, PRECISIONS
from mtl_perception.pipeline_config import OUTPUT_SIZES, PipelineConfig, parameter_name
from mtl_perception.pipeline_factory import PALETTES
from mtl_perception.ros.conversions import DEFAULT_MAX_PIXELS
from mtl_perception.ros.image_input import IMAGE_TRANSPORTS

#: the model's value, for a parameter left unset (what ``ros2 param describe`` shows)
FROM_MODEL = "unset = the model's own value (its input contract); a value overrides the model"


def _int(description, low, high, step=0):
    return ParameterDescriptor(
        description=description, integer_range=[IntegerRange(from_value=low, to_value=high, step=step)]
    )


def _float(description, low, high):
    return ParameterDescriptor(
        description=description,
        floating_point_range=[FloatingPointRange(from_value=low, to_value=high, step=0.0)],
    )


def _text(description, choices=None):
    constraints = f"one of: {', '.join(choices)}" if choices else ""
    return ParameterDescriptor(description=description, additional_constraints=constraints)


_PIPELINE_DEFAULTS = {parameter_name(f.name): f.default for f in fields(PipelineConfig)}


def _default(name: str, unset_type: Parameter.Type | None = None):
    """PipelineConfig's default of ``name``; a default of None (the model's value) declares the parameter
    unset, with ``unset_type``."""
    value = _PIPELINE_DEFAULTS[name]
    if value is None:
        return unset_type
    return value


PARAMETERS = {
    # name: (default, descriptor); a Parameter.Type default declares the parameter unset, of that type
    "model_file": (
        _default("model_file"),
        _text(
            "Checkpoint (.pt), ONNX (.onnx) or TensorRT engine (.engine); empty = the trained model "
            "shipped with the package; 'untrained' = seeded untrained model_preset (plumbing tests only)."
        ),
    ),
    "model_preset": (
        _default("model_preset"),
        _text("Architecture of the untrained model (model_file:=untrained); a model file brings its own."),
    ),
    "seed": (_default("seed"), _int("Seed of the untrained model (model_file:=untrained).", 0, 2**31 - 1)),
    "backend": (_default("backend"), _text("Inference backend.", BACKENDS)),
    "device": (
        _default("device"),
        _text("Torch device: auto (cuda:0 when available, else cpu), cpu, cuda, cuda:N."),
    ),
    "precision": (_default("precision"), _text("Network precision.", PRECISIONS)),
    "network_height": (
        _default("network_height"),
        _int(
            "Network input height (multiple of 16): 0 = the size the model was trained at (untrained: "
            f"{DEFAULT_INPUT_SIZE[0]}); another size runs a checkpoint with its contract overridden. An "
            ".onnx/.engine file runs at its own size.",
            0,
            4096,
            16,
        ),
    ),
    "network_width": (
        _default("network_width"),
        _int(
            "Network input width (multiple of 16): 0 = the size the model was trained at (untrained: "
            f"{DEFAULT_INPUT_SIZE[1]}); another size runs a checkpoint with its contract overridden. An "
            ".onnx/.engine file runs at its own size.",
            0,
            8192,
            16,
        ),
    ),
    "output_size": (_default("output_size"), _text("Resolution of the published images.", OUTPUT_SIZES)),
    "image_transport": (
        "raw",
        _text(
            "Camera input: raw = sensor_msgs/Image on 'image'; compressed = sensor_msgs/CompressedImage "
            "(JPEG, PNG) on '<image>/compressed', as compressed_image_transport names it.",
            IMAGE_TRANSPORTS,
        ),
    ),
    "flow.pyr_scale": (
        _default("flow.pyr_scale", Parameter.Type.DOUBLE),
        _float(f"Farnebäck pyramid scale; {FROM_MODEL}.", 0.05, 0.95),
    ),
    "flow.levels": (
        _default("flow.levels", Parameter.Type.INTEGER),
        _int(f"Farnebäck pyramid levels; {FROM_MODEL}.", 0, 10),
    ),
    "flow.winsize": (
        _default("flow.winsize", Parameter.Type.INTEGER),
        _int(f"Farnebäck averaging window; {FROM_MODEL}.", 1, 101),
    ),
    "flow.iterations": (
        _default("flow.iterations", Parameter.Type.INTEGER),
        _int(f"Farnebäck iterations per level; {FROM_MODEL}.", 1, 50),
    ),
    "flow.poly_n": (
        _default("flow.poly_n", Parameter.Type.INTEGER),
        _int(f"Farnebäck polynomial neighbourhood (odd); {FROM_MODEL}.", 3, 9, 2),
    ),
    "flow.poly_sigma": (
        _default("flow.poly_sigma", Parameter.Type.DOUBLE),
        _float(f"Farnebäck polynomial Gaussian sigma; {FROM_MODEL}.", 0.0, 5.0),
    ),
    "flow.gaussian": (
        _default("flow.gaussian", Parameter.Type.BOOL),
        ParameterDescriptor(
            description=f"Gaussian instead of box window (OPTFLOW_FARNEBACK_GAUSSIAN); {FROM_MODEL}."
        ),
    ),
    "flow.resize_mode": (
        _default("flow.resize_mode", Parameter.Type.STRING),
        _text(f"Pyramid resize convention to reproduce; {FROM_MODEL}.", ("cpu", "cuda")),
    ),
    "flow.confidence": (
        _default("flow.confidence", Parameter.Type.STRING),
        _text(f"Flow confidence fed to the network; {FROM_MODEL}.", CONFIDENCE_MODES),
    ),
    "flow.implementation": (
        _default("flow.implementation"),
        _text(
            "Farnebäck implementation: torch (the port), cv2 (cv2.calcOpticalFlowFarneback, CPU, resize_mode "
            "cpu) or auto (torch on CUDA; on the CPU the faster of the two, measured at the first frame).",
            FLOW_IMPLEMENTATIONS,
        ),
    ),
    "flow_dt": (
        _default("flow_dt", Parameter.Type.DOUBLE),
        _float(
            "Target time gap (s) between a frame and its flow partner (the model's partner gap at its "
            f"recording's rate: 2 frames at 17 Hz for TI's data); {FROM_MODEL}.",
            0.001,
            10.0,
        ),
    ),
    "max_history": (
        _default("max_history"), _int("Processed frames kept as flow partner candidates.", 1, 64)
    ),
    "reset_gap_factor": (
        _default("reset_gap_factor"),
        _float(
            "Reset the flow history when two processed frames are more than "
            "reset_gap_factor * flow_dt apart.",
            1.0,
            1000.0,
        ),
    ),
    "publish_flow": (False, ParameterDescriptor(description="Publish the flow (32FC2, pixels) on 'flow'.")),
    "palette": ("five", _text("Named colour palette for semantic/color.", PALETTES)),
    "palette_rgb": (
        [0],
        ParameterDescriptor(
            description="Custom palette: one 0xRRGGBB integer per class; [0] or empty = use 'palette'."
        ),
    ),
    "depth_color.near": (
        DEFAULT_NEAR_M,
        _float(
            "depth/color: distance (m) drawn in the nearest colour (red); nearer saturates.", 0.01, 1000.0
        ),
    ),
    "depth_color.far": (
        DEFAULT_FAR_M,
        _float(
            "depth/color: distance (m) drawn in the farthest colour (dark blue); farther saturates.",
            0.02,
            10000.0,
        ),
    ),
    "overlay_alpha": (0.5, _float("Opacity of the motion overlay colour.", 0.0, 1.0)),
    "max_image_pixels": (
        DEFAULT_MAX_PIXELS,
        _int("Reject input images with more pixels than this.", 1, 2**31 - 1),
    ),
    "use_camera_info": (
        True,
        ParameterDescriptor(
            description="Subscribe 'camera_info' and publish 'depth/camera_info' scaled to the output size."
        ),
    ),
    "warmup": (
        True,
        ParameterDescriptor(
            description="Run two blank frames through the pipeline at startup so the first "
            "camera frame does not pay the one-off set-up costs."
        ),
    ),
    "diagnostics_period": (1.0, _float("Seconds between /diagnostics messages.", 0.05, 3600.0)),
    "summary_period": (10.0, _float("Seconds between one-line log summaries (0 = never).", 0.0, 86400.0)),
    "error_throttle": (5.0, _float("Minimum seconds between two bad-input error logs.", 0.0, 3600.0)),
}
