"""The node's ROS parameters: name -> (default, descriptor with description and range), one table.

Declared by :class:`mtl_perception.ros.node.PerceptionNode`; ``config/params.yaml`` lists the same names and
defaults (tested) and docs/node.md explains them. The pipeline-shaping ones are read by
:meth:`mtl_perception.pipeline_factory.PipelineConfig.from_parameters`.
"""

from __future__ import annotations

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from mtl_perception.colormap import DEFAULT_FAR_M, DEFAULT_NEAR_M
from mtl_perception.flow import CONFIDENCE_MODES, DEFAULT_CONFIDENCE_MODE
from mtl_perception.inference import BACKENDS, DEFAULT_INPUT_SIZE, PRECISIONS
from mtl_perception.pipeline import DEFAULT_FLOW_DT, OUTPUT_SIZES
from mtl_perception.pipeline_factory import PALETTES
from mtl_perception.ros.conversions import DEFAULT_MAX_PIXELS
from mtl_perception.ros.image_input import IMAGE_TRANSPORTS


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


PARAMETERS = {
    # name: (default, descriptor)
    "model_file": (
        "",
        _text(
            "Checkpoint (.pt), ONNX (.onnx) or TensorRT engine (.engine); empty = the trained model "
            "shipped with the package; 'untrained' = seeded untrained model_preset (plumbing tests only)."
        ),
    ),
    "model_preset": (
        "ti",
        _text("Architecture of the untrained model (model_file:=untrained); a model file brings its own."),
    ),
    "seed": (0, _int("Seed of the untrained model (model_file:=untrained).", 0, 2**31 - 1)),
    "backend": ("auto", _text("Inference backend.", BACKENDS)),
    "device": ("auto", _text("Torch device: auto (cuda:0 when available, else cpu), cpu, cuda, cuda:N.")),
    "precision": ("fp32", _text("Network precision.", PRECISIONS)),
    "network_height": (
        0,
        _int(
            "Network input height (multiple of 16) of a model without a fixed size (checkpoint, untrained); "
            f"0 = {DEFAULT_INPUT_SIZE[0]}. An .onnx/.engine file runs at its own size.",
            0,
            4096,
            16,
        ),
    ),
    "network_width": (
        0,
        _int(
            "Network input width (multiple of 16) of a model without a fixed size (checkpoint, untrained); "
            f"0 = {DEFAULT_INPUT_SIZE[1]}. An .onnx/.engine file runs at its own size.",
            0,
            8192,
            16,
        ),
    ),
    "output_size": ("network", _text("Resolution of the published images.", OUTPUT_SIZES)),
    "image_transport": (
        "raw",
        _text(
            "Camera input: raw = sensor_msgs/Image on 'image'; compressed = sensor_msgs/CompressedImage "
            "(JPEG, PNG) on '<image>/compressed', as compressed_image_transport names it.",
            IMAGE_TRANSPORTS,
        ),
    ),
    "flow.pyr_scale": (0.5, _float("Farnebäck pyramid scale.", 0.05, 0.95)),
    "flow.levels": (5, _int("Farnebäck pyramid levels.", 0, 10)),
    "flow.winsize": (13, _int("Farnebäck averaging window.", 1, 101)),
    "flow.iterations": (10, _int("Farnebäck iterations per level.", 1, 50)),
    "flow.poly_n": (5, _int("Farnebäck polynomial neighbourhood (odd).", 3, 9, 2)),
    "flow.poly_sigma": (1.1, _float("Farnebäck polynomial Gaussian sigma.", 0.0, 5.0)),
    "flow.gaussian": (
        False,
        ParameterDescriptor(description="Gaussian instead of box window (OPTFLOW_FARNEBACK_GAUSSIAN)."),
    ),
    "flow.resize_mode": ("cpu", _text("Pyramid resize convention to reproduce.", ("cpu", "cuda"))),
    "flow.confidence": (
        DEFAULT_CONFIDENCE_MODE,
        _text("Flow confidence fed to the network (must match the training flow).", CONFIDENCE_MODES),
    ),
    "flow.implementation": (
        "auto",
        _text(
            "Farnebäck implementation: torch (the port), cv2 (cv2.calcOpticalFlowFarneback, CPU, resize_mode "
            "cpu) or auto (torch on CUDA; on the CPU the faster of the two, measured at the first frame).",
            ("auto", "torch", "cv2"),
        ),
    ),
    "flow_dt": (
        DEFAULT_FLOW_DT,
        _float(
            "Target time gap (s) between a frame and its flow partner; the network "
            "learned flow over 2 frames at 17 Hz.",
            0.001,
            10.0,
        ),
    ),
    "max_history": (8, _int("Processed frames kept as flow partner candidates.", 1, 64)),
    "reset_gap_factor": (
        10.0,
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
