"""Datasets: Cityscapes layout, labels and disparity -> depth; geometry; synthetic sequences; motion labels
from public Cityscapes; rosbag2 conversion."""

from mtl_perception.data.cityscapes import (
    FIVE_CLASS_NAMES,
    IGNORE_INDEX,
    CameraCalibration,
    FrameId,
    cityscapes_path,
    colorize_semantic,
    depth_to_disparity,
    disparity_to_depth,
    five_class_table,
    label_ids_to_semantic,
    num_semantic_classes,
    read_camera,
    semantic_palette,
)

__all__ = [
    "FIVE_CLASS_NAMES",
    "IGNORE_INDEX",
    "CameraCalibration",
    "FrameId",
    "cityscapes_path",
    "colorize_semantic",
    "depth_to_disparity",
    "disparity_to_depth",
    "five_class_table",
    "label_ids_to_semantic",
    "num_semantic_classes",
    "read_camera",
    "semantic_palette",
]
