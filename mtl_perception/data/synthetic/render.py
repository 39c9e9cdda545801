"""One frame of a scene: ray casting, then shading."""

from __future__ import annotations

from mtl_perception.data.cityscapes import CameraCalibration

from .raycast import cast_rays
from .shading import RenderedFrame, shade
from .world import Scene


def render_frame(scene: Scene, index: int, cam: CameraCalibration, height: int, width: int) -> RenderedFrame:
    """Ray-cast one frame: nearest hit per pixel over the ground plane and all boxes, then shade it."""
    hits = cast_rays(scene, index, cam, height, width)
    return shade(scene, cam, hits)
