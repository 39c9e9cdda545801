"""Synthetic Cityscapes-like driving sequences with exact depth, semantic and motion ground truth.

A small street world (road with lane markings, sidewalks with curbs, building facades, poles with signs,
trees, parked and driving cars, standing and walking pedestrians, sky) is rendered by vectorised NumPy ray
casting and written in the Cityscapes layout. One module per step:

* ``geometry``: the Cityscapes-like camera (frame conventions, the ego arc and rigid flow from depth are
  ``mtl_perception.data.geometry``'s, re-exported here);
* ``world``: dimensions, materials, label ids, the box and scene types, car and pedestrian builders;
* ``street``: ``make_scene`` (one random street, its traffic, ego trajectory and lighting), ``camera_pose``;
* ``raycast``: nearest hit per pixel (ground plane, boxes); ``noise``: procedural textures;
* ``shading``: image, depth, labels and motion from the hits; ``render``: ``render_frame`` = both;
* ``annotation``: which frames carry ground truth; ``writer``: ``generate`` (the Cityscapes layout);
* ``cli``: the ``make_synthetic_cityscapes`` command.

Conventions (Cityscapes ``csCalibration``):

* world = vehicle frame of the first frame: x forward along the road, y left, z up; ground plane z = 0;
* the vehicle moves on an arc per frame interval with the ``speed`` (m/s) and ``yawRate`` (rad/s) written in
  that frame's ``vehicle.json``, for the time to the next frame's timestamp;
* the camera sits at the ``extrinsic`` (x, y, z, yaw, pitch, roll) of ``camera.json`` in the vehicle frame;
  positive pitch looks down; the optical frame is x right, y down, z forward.
"""

from mtl_perception.data.geometry import (
    OPTICAL_TO_VEHICLE,
    camera_to_vehicle,
    rigid_flow_from_depth,
    vehicle_arc,
)

from .annotation import ANNOTATE_MODES, DEFAULT_FLOW_GAP, annotated_frames, annotated_index
from .cli import main
from .geometry import cityscapes_like_camera
from .render import render_frame
from .shading import RenderedFrame
from .street import camera_pose, make_scene
from .world import Box, Lighting, Scene
from .writer import generate, generate_sequence, sequence_outputs

__all__ = [
    "ANNOTATE_MODES",
    "DEFAULT_FLOW_GAP",
    "OPTICAL_TO_VEHICLE",
    "Box",
    "Lighting",
    "RenderedFrame",
    "Scene",
    "annotated_frames",
    "annotated_index",
    "camera_pose",
    "camera_to_vehicle",
    "cityscapes_like_camera",
    "generate",
    "generate_sequence",
    "main",
    "make_scene",
    "render_frame",
    "rigid_flow_from_depth",
    "sequence_outputs",
    "vehicle_arc",
]
