"""Vectorised ray casting of one frame: one ray per pixel centre through the pinhole camera, an analytic
ray-plane hit for the ground and slab-method ray-box hits for the boxes (each box tested only on the pixels
of its projected bounding rectangle); the nearest hit wins. Hand-written because no maintained library
renders a pinhole camera with per-pixel depth, label and motion ground truth without a GPU or an OpenGL
context; the ground truth is exact by construction (it comes from the hit)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtl_perception.data.cityscapes import CameraCalibration

from .street import camera_pose
from .world import Scene

NEAR = 0.1  # metres: nearer hits are ignored (the camera's near plane)
SKY, GROUND_SURFACE = -1, 0  # surface indices; box k is surface k + 1


@dataclass
class RayHits:
    """Nearest hit of every pixel's ray. Ray directions have unit camera z, so the ray parameter of a hit
    is its depth Z in the camera."""

    origin: np.ndarray  # (3,) camera centre in the world
    directions: np.ndarray  # (3,H,W) float32 world ray direction per pixel
    hit_depth: np.ndarray  # (H,W) float32 depth of the nearest hit, inf where the ray hits nothing (sky)
    surface: np.ndarray  # (H,W) int32: SKY, GROUND_SURFACE or k + 1 for box k
    face_axis: np.ndarray  # (H,W) int8: world axis of the hit face's normal (2 on the ground)
    box_offsets: list[np.ndarray]  # displacement of each box at this frame's time


def _pixel_rays(R_wc: np.ndarray, cam: CameraCalibration, height: int, width: int) -> np.ndarray:
    """(3,H,W) float32 world directions through the pixel centres, scaled to unit camera z."""
    u = (np.arange(width, dtype=np.float64) - cam.u0) / cam.fx
    v = (np.arange(height, dtype=np.float64) - cam.v0) / cam.fy
    dc = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))))  # (3,H,W), z = 1
    return np.einsum("ij,jhw->ihw", R_wc, dc).astype(np.float32)


def _box_pixel_window(
    lo: np.ndarray,
    hi: np.ndarray,
    origin: np.ndarray,
    R_cw: np.ndarray,
    cam: CameraCalibration,
    height: int,
    width: int,
) -> tuple[int, int, int, int] | None:
    """Pixel rectangle (v0, v1, u0, u1) the box can cover: its projected corners' bounds, the whole image
    when it straddles the near plane, None when it is behind the camera or off-screen."""
    corners = np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])
    pc = (corners - origin) @ R_cw.T
    if np.all(pc[:, 2] <= NEAR):
        return None
    if not np.all(pc[:, 2] > NEAR):
        return 0, height, 0, width
    us = cam.fx * pc[:, 0] / pc[:, 2] + cam.u0
    vs = cam.fy * pc[:, 1] / pc[:, 2] + cam.v0
    u0, u1 = max(int(np.floor(us.min())), 0), min(int(np.ceil(us.max())) + 1, width)
    v0, v1 = max(int(np.floor(vs.min())), 0), min(int(np.ceil(vs.max())) + 1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return v0, v1, u0, u1


def cast_rays(scene: Scene, index: int, cam: CameraCalibration, height: int, width: int) -> RayHits:
    """Nearest hit per pixel over the ground plane and all boxes (moved to frame ``index``'s time)."""
    R_wc, origin = camera_pose(scene, index, cam)
    time_s = scene.timestamps_ns[index] * 1e-9
    directions = _pixel_rays(R_wc, cam, height, width)
    safe_directions = np.where(directions == 0, np.float32(1e-12), directions)

    hit_depth = np.full((height, width), np.inf, np.float32)
    surface = np.full((height, width), SKY, np.int32)
    face_axis = np.full((height, width), 2, np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(directions[2] < 0, -origin[2] / directions[2], np.inf).astype(np.float32)
    ground = np.isfinite(t_ground) & (t_ground > NEAR)
    hit_depth[ground], surface[ground] = t_ground[ground], GROUND_SURFACE

    R_cw = R_wc.T
    box_offsets = [box.velocity * time_s for box in scene.boxes]
    for k, box in enumerate(scene.boxes):
        lo, hi = box.lo + box_offsets[k], box.hi + box_offsets[k]
        window = _box_pixel_window(lo, hi, origin, R_cw, cam, height, width)
        if window is None:
            continue
        v0, v1, u0, u1 = window
        # slab method: entry = latest of the per-axis entries, exit = earliest of the per-axis exits
        inv = 1.0 / safe_directions[:, v0:v1, u0:u1]
        t1 = (lo - origin).astype(np.float32)[:, None, None] * inv
        t2 = (hi - origin).astype(np.float32)[:, None, None] * inv
        t_axis_entry = np.minimum(t1, t2)
        t_entry, t_exit = t_axis_entry.max(0), np.maximum(t1, t2).min(0)
        nearest = hit_depth[v0:v1, u0:u1]
        nearer = (t_exit >= t_entry) & (t_entry > NEAR) & (t_entry < nearest)
        if not nearer.any():
            continue
        nearest[nearer] = t_entry[nearer]
        surface[v0:v1, u0:u1][nearer] = k + 1
        face_axis[v0:v1, u0:u1][nearer] = t_axis_entry.argmax(0)[nearer]
    return RayHits(origin, directions, hit_depth, surface, face_axis, box_offsets)
