"""Offline training utilities: the multi-task dataset, its augmentation and the flow dataset builder."""

from training.augment import Resize, TrainAugment, hflip, warp_affine
from training.dataset import DEFAULT_ROOT, FLOW_FOLDER, FLOW_SUFFIX, CityscapesMultiTask, flow_path

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
