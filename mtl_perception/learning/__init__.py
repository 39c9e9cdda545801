"""The training library: the multi-task dataset, its augmentation (and next the losses and task weighting).

Imported by the scripts in the top-level `training/` folder; the runtime never imports it.
"""

from mtl_perception.learning.augment import Resize, TrainAugment, hflip, warp_affine
from mtl_perception.learning.dataset import (
    DEFAULT_ROOT,
    FLOW_FOLDER,
    FLOW_SUFFIX,
    CityscapesMultiTask,
    flow_path,
)

__all__ = [
    "DEFAULT_ROOT",
    "FLOW_FOLDER",
    "FLOW_SUFFIX",
    "CityscapesMultiTask",
    "Resize",
    "TrainAugment",
    "flow_path",
    "hflip",
    "warp_affine",
]
