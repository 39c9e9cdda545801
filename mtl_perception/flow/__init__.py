"""Dense Farnebäck optical flow in PyTorch matching OpenCV, plus confidence, streaming and flow codecs."""

from .api import calc_optical_flow_farneback
from .codecs import read_flow_png, read_ti_flow_png, write_flow_png
from .colorwheel import flow_to_color
from .confidence import CONFIDENCE_MODES, DEFAULT_CONFIDENCE_MODE, forward_backward_confidence
from .farneback import FarnebackEngine, FrameFeatures
from .gray import to_gray
from .params import (
    COMMON,
    CUDA_DEFAULTS,
    OPTFLOW_FARNEBACK_GAUSSIAN,
    OPTFLOW_USE_INITIAL_FLOW,
    FarnebackParams,
)
from .streaming import StreamingFarneback

__all__ = [
    "COMMON",
    "CONFIDENCE_MODES",
    "CUDA_DEFAULTS",
    "DEFAULT_CONFIDENCE_MODE",
    "OPTFLOW_FARNEBACK_GAUSSIAN",
    "OPTFLOW_USE_INITIAL_FLOW",
    "FarnebackEngine",
    "FarnebackParams",
    "FrameFeatures",
    "StreamingFarneback",
    "calc_optical_flow_farneback",
    "flow_to_color",
    "forward_backward_confidence",
    "read_flow_png",
    "read_ti_flow_png",
    "to_gray",
    "write_flow_png",
]
