"""Motion ground truth for Cityscapes from what Cityscapes publishes: ``make_motion_labels``.

One module per step: ``inputs`` (the files of one annotated frame, problems by kind, the packages that
provide each folder), ``frame`` (ego-motion, rigid flow, residual flow, one decision per object instance),
``evidence`` (an object's residual speed and how fast it could move unseen), ``records`` (settings sidecar
and per-frame decisions: resume, never mix), ``tool`` (the split, in parallel), ``report`` (the per-split
report and its lines), ``cli`` (the console script). Geometry: ``mtl_perception.data.geometry``.
"""

from .frame import (
    DECISIONS,
    MOVABLE_LABEL_IDS,
    REASONS,
    FrameDecisions,
    FrameLabeller,
    InstanceDecision,
    Settings,
)
from .inputs import PACKAGES, InputProblem, read_frame_inputs
from .tool import make_motion_labels

__all__ = [
    "DECISIONS",
    "MOVABLE_LABEL_IDS",
    "PACKAGES",
    "REASONS",
    "FrameDecisions",
    "FrameLabeller",
    "InputProblem",
    "InstanceDecision",
    "Settings",
    "make_motion_labels",
    "read_frame_inputs",
]
