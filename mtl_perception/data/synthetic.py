"""Synthetic Cityscapes-like driving sequences with exact depth, semantic and motion ground truth.

A small street world (road with lane markings, sidewalks with curbs, building facades, poles with signs,
trees, parked and driving cars, standing and walking pedestrians, sky) is rendered by vectorised NumPy ray
casting: analytic ray-plane and ray-box (slab) intersections. It is hand-written because no maintained
library renders a pinhole camera with per-pixel depth, label and motion ground truth without a GPU or an
OpenGL context; ray casting makes the ground truth exact by construction (depth and label come from the hit).

Conventions (Cityscapes ``csCalibration``):

* world = vehicle frame of the first frame: x forward along the road, y left, z up; ground plane z = 0;
* the vehicle moves on an arc per frame interval with the ``speed`` (m/s) and ``yawRate`` (rad/s) written in
  that frame's ``vehicle.json``, for the time to the next frame's timestamp;
* the camera sits at the ``extrinsic`` (x, y, z, yaw, pitch, roll) of ``camera.json`` in the vehicle frame;
  positive pitch looks down; the optical frame is x right, y down, z forward.

Textures are procedural value noise in surface coordinates (object-local for moving objects), so every
surface point keeps its appearance over time and optical flow is well posed. Noise octaves are faded out
below ~2 pixels per wavelength (a cheap level-of-detail filter) to avoid aliasing.
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.data.cityscapes import (
    CameraCalibration,
    FrameId,
    cityscapes_path,
    depth_to_disparity,
    label_id,
)

NEAR = 0.1
ROAD_HALF_WIDTH = 7.0
SIDEWALK_WIDTH = 3.0
CURB_HEIGHT = 0.15
EGO_LANE_Y = -1.75
CROSS_WIDTH = 14.0

# materials
GROUND, BUILDING, SIDEWALK, VEGETATION, POLE, SIGN, CAR, GLASS, PERSON, TRUNK = range(10)
_CONTRAST = np.array([1.8, 0.35, 0.45, 1.1, 0.4, 0.4, 0.3, 0.5, 0.5, 0.8], np.float32)

ROAD, SIDEWALK_ID, BUILDING_ID, POLE_ID, SIGN_ID = (
    label_id(n) for n in ("road", "sidewalk", "building", "pole", "traffic sign")
)
VEGETATION_ID, TERRAIN_ID, SKY_ID, PERSON_ID, CAR_ID = (
    label_id(n) for n in ("vegetation", "terrain", "sky", "person", "car")
)


def cityscapes_like_camera(height: int, width: int) -> CameraCalibration:
    """Intrinsics of a Cityscapes camera (fx 2262.5 at 2048x1024) scaled to the requested size."""
    cam = CameraCalibration(
        fx=2262.52,
        fy=2265.30,
        u0=1096.98,
        v0=513.137,
        baseline=0.209313,
        pitch=0.038,
        roll=0.0,
        yaw=0.0,
        x=1.7,
        y=0.1,
        z=1.22,
    )
    return cam.scaled(width / 2048.0, height / 1024.0)


def _rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


#: optical (x right, y down, z forward) -> vehicle (x forward, y left, z up)
OPTICAL_TO_VEHICLE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_to_vehicle(cam: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and position of the optical frame in the vehicle frame, from the Cityscapes extrinsics."""
    R = _rot_z(cam.yaw) @ _rot_y(cam.pitch) @ _rot_x(cam.roll) @ OPTICAL_TO_VEHICLE
    return R, np.array([cam.x, cam.y, cam.z])


def vehicle_arc(speed: float, yaw_rate: float, dt: float) -> tuple[np.ndarray, float]:
    """Displacement (forward, left) in the vehicle frame and heading change at constant speed, yaw rate."""
    dpsi = yaw_rate * dt
    forward = speed * dt * np.sinc(dpsi / np.pi)
    left = speed * dt * np.sin(dpsi / 2) * np.sinc(dpsi / (2 * np.pi))
    return np.array([forward, left, 0.0]), dpsi


def rigid_flow_from_depth(depth: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Flow (HxWx2, px) that a static scene with this depth induces when camera coordinates move X -> R X + t.

    Pixels with depth <= 0 / non-finite, or whose point ends behind the second camera, are NaN.
    """
    depth = np.asarray(depth, np.float64)
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(h * w)])
    X = rays * depth.ravel()
    X2 = R @ X + np.asarray(t, np.float64).reshape(3, 1)
    p = K @ X2
    with np.errstate(divide="ignore", invalid="ignore"):
        u2, v2 = p[0] / p[2], p[1] / p[2]
    valid = np.isfinite(depth.ravel()) & (depth.ravel() > 0) & (X2[2] > 1e-6)
    flow = np.stack([u2 - u.ravel(), v2 - v.ravel()], -1)
    flow[~valid] = np.nan
    return flow.reshape(h, w, 2).astype(np.float32)


# --------------------------------------------------------------------------------------------- noise
_H1, _H2, _H3 = np.uint32(0x27D4EB2D), np.uint32(0x165667B1), np.uint32(0x9E3779B1)


def _finalize(h: np.ndarray) -> np.ndarray:
    """murmur3 finaliser on uint32 -> [0, 1) (deterministic on every platform)."""
    h ^= h >> np.uint32(15)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h.astype(np.float32) * np.float32(1.0 / 4294967296.0)


def _lattice(x: np.ndarray) -> np.ndarray:
    return x.astype(np.int32).view(np.uint32)


def _hash(ix: np.ndarray, iy: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """Integer lattice hash -> [0, 1)."""
    return _finalize((_lattice(ix) * _H1) ^ (_lattice(iy) * _H2) ^ (seed * _H3))


def _value_noise(x: np.ndarray, y: np.ndarray, seed: np.ndarray) -> np.ndarray:
    xf, yf = np.floor(x), np.floor(y)
    fx, fy = x - xf, y - yf
    fx = fx * fx * (3 - 2 * fx)
    fy = fy * fy * (3 - 2 * fy)
    hx0, hy0 = _lattice(xf) * _H1, _lattice(yf) * _H2
    hx1, hy1 = hx0 + _H1, hy0 + _H2  # (i + 1) * C, wrapping like the uint32 product
    hs = seed * _H3
    a, b = _finalize(hx0 ^ hy0 ^ hs), _finalize(hx1 ^ hy0 ^ hs)
    c, d = _finalize(hx0 ^ hy1 ^ hs), _finalize(hx1 ^ hy1 ^ hs)
    return (a + (b - a) * fx) * (1 - fy) + (c + (d - c) * fx) * fy


def _fbm(
    s: np.ndarray,
    t: np.ndarray,
    seed: np.ndarray,
    footprint: np.ndarray,
    wavelengths=(3.0, 1.0, 0.45, 0.2, 0.09),
    amplitudes=(0.25, 0.2, 0.2, 0.2, 0.15),
) -> np.ndarray:
    """Fractal value noise in [0, 1]; octaves finer than ~2 px fade to their mean (anti-aliasing)."""
    out = np.zeros_like(s)
    for k, (lam, amp) in enumerate(zip(wavelengths, amplitudes, strict=True)):
        weight = np.clip(lam / footprint / 2.0 - 1.0, 0.0, 1.0)
        n = _value_noise(s / lam, t / lam, seed + np.uint32(7919 * (k + 1)))
        out += amp * (0.5 + weight * (n - 0.5))
    return out


def _line_coverage(dist: np.ndarray, half_width: float, footprint: np.ndarray) -> np.ndarray:
    return np.clip((half_width - np.abs(dist)) / footprint + 0.5, 0.0, 1.0)


# --------------------------------------------------------------------------------------------- scene
@dataclass
class Box:
    lo: np.ndarray
    hi: np.ndarray
    label: int
    material: int
    color: tuple[float, float, float]
    seed: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))

    @property
    def moving(self) -> bool:
        return bool(np.any(self.velocity != 0))


@dataclass
class Lighting:
    sun: np.ndarray
    ambient: float
    sun_strength: float
    tint: np.ndarray
    exposure: float
    sky_zenith: np.ndarray
    sky_horizon: np.ndarray


@dataclass
class Scene:
    boxes: list[Box]
    lighting: Lighting
    timestamps_ns: np.ndarray
    speeds: np.ndarray
    yaw_rates: np.ndarray
    poses: np.ndarray  # (F, 3): x, y, heading of the vehicle in the world
    seed: int
    cross: tuple[float, float]  # x range of the cross street


def _pick(rng: np.random.Generator, colors) -> tuple[float, float, float]:
    c = np.asarray(colors[rng.integers(len(colors))], np.float64)
    return tuple(np.clip(c * rng.uniform(0.85, 1.15), 0, 1))


_BUILDING_COLORS = [
    (0.72, 0.66, 0.55),
    (0.6, 0.6, 0.62),
    (0.65, 0.42, 0.33),
    (0.8, 0.76, 0.68),
    (0.5, 0.52, 0.5),
]
_CAR_COLORS = [
    (0.7, 0.1, 0.1),
    (0.15, 0.2, 0.55),
    (0.85, 0.85, 0.85),
    (0.1, 0.1, 0.1),
    (0.45, 0.47, 0.5),
    (0.2, 0.4, 0.25),
]
_CLOTH_COLORS = [(0.2, 0.2, 0.5), (0.6, 0.15, 0.15), (0.15, 0.15, 0.15), (0.7, 0.6, 0.3), (0.3, 0.5, 0.3)]


def _car(rng, x: float, y: float, heading_sign: float, speed: float, seed: int, along: int = 0) -> list[Box]:
    """A car (body, glass cabin, dark wheel box) driving along world axis ``along`` (0 = x, 1 = y)."""
    length, width = rng.uniform(3.9, 4.8), rng.uniform(1.7, 1.9)
    color = _pick(rng, _CAR_COLORS)
    vel = np.zeros(3)
    vel[along] = heading_sign * speed
    centre = np.array([x, y])

    def box(a0, a1, w_inset, z0, z1, material, col, s) -> Box:
        lo, hi = np.zeros(3), np.zeros(3)
        lo[along], hi[along] = (
            centre[along] - length / 2 + a0 * length,
            centre[along] - length / 2 + a1 * length,
        )
        lo[1 - along], hi[1 - along] = (
            centre[1 - along] - width / 2 + w_inset,
            centre[1 - along] + width / 2 - w_inset,
        )
        lo[2], hi[2] = z0, z1
        return Box(lo, hi, CAR_ID, material, col, s, vel.copy())

    cab = 0.25 if heading_sign > 0 else 0.2
    return [
        box(0.0, 1.0, 0.0, 0.25, 0.95, CAR, color, seed),
        box(cab, cab + 0.5, 0.1, 0.95, 1.45, GLASS, (0.25, 0.28, 0.33), seed + 1),
        box(0.07, 0.93, 0.05, 0.0, 0.25, CAR, (0.08, 0.08, 0.08), seed + 2),
    ]


def _pedestrian(
    rng, x: float, y: float, ground: float, hip: float, top: float, vel: np.ndarray, seed: int
) -> list[Box]:
    """A pedestrian: legs from ``ground`` to ``hip`` and a narrower torso up to ``top`` (metres)."""
    return [
        Box(
            np.array([x - 0.2, y - 0.25, ground]),
            np.array([x + 0.2, y + 0.25, hip]),
            PERSON_ID,
            PERSON,
            _pick(rng, _CLOTH_COLORS),
            seed,
            vel.copy(),
        ),
        Box(
            np.array([x - 0.17, y - 0.25, hip]),
            np.array([x + 0.17, y + 0.25, top]),
            PERSON_ID,
            PERSON,
            _pick(rng, _CLOTH_COLORS),
            seed + 1,
            vel.copy(),
        ),
    ]


def make_scene(rng: np.random.Generator, num_frames: int, fps: float) -> Scene:
    """Draw one street, its objects, lighting and the ego trajectory."""
    boxes: list[Box] = []
    seed = int(rng.integers(1, 2**31))

    def sid() -> int:
        return int(rng.integers(1, 2**31))

    x_min, x_max = -30.0, 230.0
    cross0 = rng.uniform(45.0, 70.0)  # a cross street [cross0, cross0 + CROSS_WIDTH] with crossing traffic
    cross1 = cross0 + CROSS_WIDTH

    def free(a: float, b: float) -> bool:
        return b < cross0 - 1.0 or a > cross1 + 1.0

    for side in (-1.0, 1.0):
        # sidewalk with curb: the raised top is sidewalk, the curb face too (Cityscapes convention)
        y0 = side * ROAD_HALF_WIDTH
        y1 = side * (ROAD_HALF_WIDTH + SIDEWALK_WIDTH)
        for xa, xb in ((x_min, cross0), (cross1, x_max)):
            boxes.append(
                Box(
                    np.array([xa, min(y0, y1), 0.0]),
                    np.array([xb, max(y0, y1), CURB_HEIGHT]),
                    SIDEWALK_ID,
                    SIDEWALK,
                    (0.62, 0.6, 0.57),
                    sid(),
                )
            )
        x = x_min
        while x < x_max:  # building facades at varying setback
            if cross0 - 4.0 <= x < cross1 + 1.0:
                x = cross1 + 1.0
                continue
            length = min(rng.uniform(8, 22), cross0 - 1.0 - x) if x < cross0 else rng.uniform(8, 22)
            setback = rng.uniform(0.0, 6.0) if rng.random() < 0.8 else rng.uniform(8, 15)
            near = ROAD_HALF_WIDTH + SIDEWALK_WIDTH + setback
            depth = rng.uniform(8, 14)
            height = rng.uniform(7, 24)
            ylo, yhi = sorted((side * near, side * (near + depth)))
            boxes.append(
                Box(
                    np.array([x, ylo, 0.0]),
                    np.array([x + length, yhi, height]),
                    BUILDING_ID,
                    BUILDING,
                    _pick(rng, _BUILDING_COLORS),
                    sid(),
                )
            )
            ty = side * (ROAD_HALF_WIDTH + SIDEWALK_WIDTH + rng.uniform(0.8, max(setback - 1.5, 0.9)))
            tx = x + rng.uniform(2, max(2.5, length - 2))
            # a tree in front of set-back facades, never on the cross street
            if setback > 3.0 and rng.random() < 0.7 and free(tx - 2.5, tx + 2.5):
                boxes.append(
                    Box(
                        np.array([tx - 0.15, ty - 0.15, 0.0]),
                        np.array([tx + 0.15, ty + 0.15, 2.5]),
                        VEGETATION_ID,
                        TRUNK,
                        (0.3, 0.22, 0.15),
                        sid(),
                    )
                )
                r, hc = rng.uniform(1.2, 2.2), rng.uniform(2.0, 3.5)
                boxes.append(
                    Box(
                        np.array([tx - r, ty - r, 2.2]),
                        np.array([tx + r, ty + r, 2.2 + hc]),
                        VEGETATION_ID,
                        VEGETATION,
                        _pick(rng, [(0.2, 0.38, 0.12), (0.28, 0.42, 0.15)]),
                        sid(),
                    )
                )
            x += length + (rng.uniform(2, 8) if rng.random() < 0.3 else 0.0)
        # poles (some with a sign) near the curb
        for px in [p for p in np.sort(rng.uniform(0, 150, size=rng.integers(3, 6))) if free(p, p)]:
            py = side * (ROAD_HALF_WIDTH + 0.5)
            ph = rng.uniform(3.5, 6.0)
            boxes.append(
                Box(
                    np.array([px - 0.08, py - 0.08, CURB_HEIGHT]),
                    np.array([px + 0.08, py + 0.08, ph]),
                    POLE_ID,
                    POLE,
                    (0.5, 0.5, 0.52),
                    sid(),
                )
            )
            if rng.random() < 0.6:
                boxes.append(
                    Box(
                        np.array([px - 0.12, py - 0.35, 2.2]),
                        np.array([px - 0.08, py + 0.35, 2.9]),
                        SIGN_ID,
                        SIGN,
                        _pick(rng, [(0.1, 0.25, 0.7), (0.8, 0.1, 0.1), (0.9, 0.8, 0.1)]),
                        sid(),
                    )
                )
        # parked cars in the outer lane
        for cx in [c for c in np.sort(rng.uniform(5, 140, size=rng.integers(2, 6))) if free(c - 3, c + 3)]:
            boxes += _car(rng, cx, side * 5.4, 1.0, 0.0, sid())
        # pedestrians on the sidewalk: some standing, some walking along it
        for _ in range(rng.integers(2, 6)):
            px, py = rng.uniform(8, 40), side * (ROAD_HALF_WIDTH + rng.uniform(0.5, SIDEWALK_WIDTH - 0.5))
            walking = rng.random() < 0.6
            vel = (
                np.array([rng.choice([-1.0, 1.0]) * rng.uniform(1.0, 1.8), 0.0, 0.0])
                if walking
                else np.zeros(3)
            )
            boxes += _pedestrian(rng, px, py, CURB_HEIGHT, 0.95, 1.75, vel, sid())
    # a cross street facade closing the view
    boxes.append(
        Box(
            np.array([x_max + 15, -60.0, 0.0]),
            np.array([x_max + 30, 60.0, 20.0]),
            BUILDING_ID,
            BUILDING,
            _pick(rng, _BUILDING_COLORS),
            sid(),
        )
    )

    speed0 = rng.uniform(6.0, 11.0)
    # traffic: a car ahead in the ego lane, oncoming cars in the other lane
    t_ann = annotated_index(num_frames) / fps
    ego_x_ann = speed0 * t_ann
    boxes += _car(rng, rng.uniform(35, 60), EGO_LANE_Y, 1.0, speed0 * rng.uniform(0.5, 1.3), sid())
    # oncoming traffic, one car passing 15-30 m ahead around the annotated frame
    v_on = rng.uniform(8, 13)
    boxes += _car(rng, ego_x_ann + rng.uniform(15, 30) + v_on * t_ann, -EGO_LANE_Y, -1.0, v_on, sid())
    # crossing traffic on the cross street, visible around the annotated frame
    for lane_x, sign in ((cross0 + 3.0, 1.0), (cross1 - 3.0, -1.0)):
        if rng.random() < 0.75:
            v_cross = rng.uniform(7, 12)
            y_ann = rng.uniform(-12, 12)
            boxes += _car(rng, lane_x, y_ann - sign * v_cross * t_ann, sign, v_cross, sid(), along=1)
    # pedestrians crossing the road ahead
    for _ in range(rng.integers(1, 3)):
        px, py = rng.uniform(22, 45), rng.uniform(-6.0, 6.0)
        vel = np.array([0.0, rng.choice([-1.0, 1.0]) * rng.uniform(1.2, 1.8), 0.0])
        boxes += _pedestrian(rng, px, py, 0.0, 0.85, 1.7, vel, sid())
    for _ in range(rng.integers(0, 3)):
        boxes += _car(rng, rng.uniform(60, 140), -EGO_LANE_Y, -1.0, rng.uniform(7, 13), sid())

    # ego motion: speed with mild acceleration, yaw rate oscillating gently (lane keeping)
    t = np.arange(num_frames) / fps
    timestamps = np.rint(t * 1e9).astype(np.int64)
    speeds = speed0 + rng.uniform(-0.8, 0.8) * t
    amp, phase = rng.uniform(0.03, 0.12), rng.uniform(0, 2 * np.pi)
    yaw_rates = amp * np.sin(phase + 2 * np.pi * t / 2.5)
    poses = np.zeros((num_frames, 3))
    poses[0] = (0.0, EGO_LANE_Y + rng.uniform(-0.2, 0.2), rng.uniform(-0.02, 0.02))
    for i in range(num_frames - 1):
        dt = (timestamps[i + 1] - timestamps[i]) * 1e-9
        disp, dpsi = vehicle_arc(speeds[i], yaw_rates[i], dt)
        x, y, psi = poses[i]
        dx, dy, _ = _rot_z(psi) @ disp
        poses[i + 1] = (x + dx, y + dy, psi + dpsi)

    elev, azim = rng.uniform(0.3, 1.0), rng.uniform(0, 2 * np.pi)
    lighting = Lighting(
        sun=np.array([np.cos(elev) * np.cos(azim), np.cos(elev) * np.sin(azim), np.sin(elev)]),
        ambient=rng.uniform(0.45, 0.6),
        sun_strength=rng.uniform(0.35, 0.6),
        tint=rng.uniform(0.92, 1.08, size=3),
        exposure=rng.uniform(0.9, 1.1),
        sky_zenith=np.array([0.35, 0.55, 0.85]) * rng.uniform(0.85, 1.1),
        sky_horizon=np.array([0.78, 0.84, 0.9]) * rng.uniform(0.9, 1.05),
    )
    return Scene(boxes, lighting, timestamps, speeds, yaw_rates, poses, seed, (cross0, cross1))


def camera_pose(scene: Scene, index: int, cam: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Camera-to-world rotation and camera centre at frame ``index``."""
    R_vc, c_v = camera_to_vehicle(cam)
    x, y, psi = scene.poses[index]
    Rz = _rot_z(psi)
    return Rz @ R_vc, np.array([x, y, 0.0]) + Rz @ c_v


# --------------------------------------------------------------------------------------------- render
@dataclass
class RenderedFrame:
    image: np.ndarray  # HxWx3 uint8 RGB
    depth: np.ndarray  # HxW float32 metres (0 = sky)
    label_ids: np.ndarray  # HxW uint8, official Cityscapes ids
    motion: np.ndarray  # HxW uint8, 0 static / 255 moving


def render_frame(scene: Scene, index: int, cam: CameraCalibration, height: int, width: int) -> RenderedFrame:
    """Ray-cast one frame: nearest hit per pixel over the ground plane and all boxes, then shade it."""
    R_wc, origin = camera_pose(scene, index, cam)
    time_s = scene.timestamps_ns[index] * 1e-9
    u = (np.arange(width, dtype=np.float64) - cam.u0) / cam.fx
    v = (np.arange(height, dtype=np.float64) - cam.v0) / cam.fy
    dc = np.stack(np.broadcast_arrays(u[None, :], v[:, None], np.ones((1, 1))))  # (3,H,W), z = 1
    d = np.einsum("ij,jhw->ihw", R_wc, dc).astype(np.float32)
    d_safe = np.where(d == 0, np.float32(1e-12), d)

    best = np.full((height, width), np.inf, np.float32)
    obj = np.full((height, width), -1, np.int32)  # -1 sky, 0 ground, k >= 1 box k-1
    axis = np.full((height, width), 2, np.int8)
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(d[2] < 0, -origin[2] / d[2], np.inf).astype(np.float32)
    ground = np.isfinite(t_ground) & (t_ground > NEAR)
    best[ground], obj[ground] = t_ground[ground], 0

    R_cw = R_wc.T
    offsets = [box.velocity * time_s for box in scene.boxes]
    for k, box in enumerate(scene.boxes):
        lo, hi = box.lo + offsets[k], box.hi + offsets[k]
        corners = np.array(
            [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
        )
        pc = (corners - origin) @ R_cw.T
        if np.all(pc[:, 2] <= NEAR):
            continue
        if np.all(pc[:, 2] > NEAR):
            us = cam.fx * pc[:, 0] / pc[:, 2] + cam.u0
            vs = cam.fy * pc[:, 1] / pc[:, 2] + cam.v0
            u0, u1 = max(int(np.floor(us.min())), 0), min(int(np.ceil(us.max())) + 1, width)
            v0, v1 = max(int(np.floor(vs.min())), 0), min(int(np.ceil(vs.max())) + 1, height)
            if u0 >= u1 or v0 >= v1:
                continue
        else:
            u0, u1, v0, v1 = 0, width, 0, height
        dw = d_safe[:, v0:v1, u0:u1]
        inv = 1.0 / dw
        t1 = (lo - origin).astype(np.float32)[:, None, None] * inv
        t2 = (hi - origin).astype(np.float32)[:, None, None] * inv
        tn = np.minimum(t1, t2)
        tnear, tfar = tn.max(0), np.maximum(t1, t2).min(0)
        bw = best[v0:v1, u0:u1]
        better = (tfar >= tnear) & (tnear > NEAR) & (tnear < bw)
        if not better.any():
            continue
        bw[better] = tnear[better]
        obj[v0:v1, u0:u1][better] = k + 1
        axis[v0:v1, u0:u1][better] = tn.argmax(0)[better]

    return _shade(scene, cam, d, origin, best, obj, axis, offsets)


def _shade(scene, cam, d, origin, best, obj, axis, offsets) -> RenderedFrame:
    height, width = best.shape
    L = scene.lighting
    nb = len(scene.boxes) + 1
    # per-object tables, index 0 = ground
    lo = np.zeros((nb, 3), np.float32)
    color = np.zeros((nb, 3), np.float32)
    material = np.zeros(nb, np.int32)
    labels = np.zeros(nb, np.uint8)
    seeds = np.zeros(nb, np.uint32)
    moving = np.zeros(nb, bool)
    seeds[0] = scene.seed % 2**32
    for k, box in enumerate(scene.boxes, start=1):
        lo[k] = box.lo + offsets[k - 1]
        color[k], material[k], labels[k] = box.color, box.material, box.label
        seeds[k], moving[k] = box.seed % 2**32, box.moving

    hit = obj >= 0
    o = np.where(hit, obj, 0)
    t = np.where(hit, best, 0.0).astype(np.float32)
    P = origin.astype(np.float32)[:, None, None] + d * t  # world hit points
    local = P - np.moveaxis(lo[o], -1, 0)
    local = np.where(o[None] == 0, P, local)
    ax = axis.astype(np.int64)
    ax = np.where(o == 0, 2, ax)
    s_coord = np.where(ax == 0, local[1], local[0])
    t_coord = np.where(ax == 2, local[1], local[2])
    dnorm = np.sqrt((d * d).sum(0))
    cos = np.abs(np.take_along_axis(d, ax[None], 0)[0]) / dnorm
    footprint = (t / np.float32(cam.fx)) * dnorm / np.maximum(cos, 0.05)  # metres per pixel on the surface
    footprint = np.maximum(footprint, 1e-4).astype(np.float32)

    mat = material[o]
    seed = seeds[o]
    noise = _fbm(s_coord, t_coord, seed, footprint)
    albedo = color[o].copy()
    # ground: road, sidewalk under curbs never visible, terrain beyond the sidewalks
    is_ground = o == 0
    road = is_ground & (
        (np.abs(P[1]) < ROAD_HALF_WIDTH) | ((P[0] > scene.cross[0]) & (P[0] < scene.cross[1]))
    )
    label = labels[o].copy()
    label[is_ground] = TERRAIN_ID
    label[road] = ROAD
    albedo[is_ground & ~road] = (0.36, 0.42, 0.22)
    albedo[road] = (0.34, 0.34, 0.36)
    contrast = _CONTRAST[mat]
    albedo *= np.clip(1.0 + contrast * (noise - 0.5) * 2.0, 0.15, None)[..., None]

    # lane markings: solid edge lines at |y| = 3.5 (dashed centre line at y = 0)
    x, y = P[0], P[1]
    dash = _line_coverage(np.mod(x - 1.5 + 4.5, 9.0) - 4.5, 1.5, footprint)
    mark = np.maximum(
        _line_coverage(np.abs(y) - 3.5, 0.07, footprint), _line_coverage(y, 0.07, footprint) * dash
    )
    on_main = (P[0] < scene.cross[0]) | (P[0] > scene.cross[1])
    mark = np.where(road & on_main, mark, 0.0)[..., None]
    albedo = albedo * (1 - mark) + 0.85 * mark

    # building windows on facades, each pane with its own brightness
    facade = (mat == BUILDING) & (ax != 2) & (t_coord > 1.5)
    fs, ft = np.mod(s_coord / 3.0, 1.0), np.mod(t_coord / 3.2, 1.0)
    window = facade & (fs > 0.25) & (fs < 0.75) & (ft > 0.3) & (ft < 0.8)
    pane = _hash(np.floor(s_coord / 3.0), np.floor(t_coord / 3.2), seed + np.uint32(17))
    glass = (
        np.array([0.12, 0.15, 0.2], np.float32)
        * (0.6 + 0.9 * pane)[..., None]
        * (0.8 + 0.4 * noise)[..., None]
    )
    albedo = np.where(window[..., None], glass, albedo)
    # sidewalk tiles
    tiles = _hash(np.floor(s_coord / 0.6), np.floor(t_coord / 0.6), seed)
    tile_w = np.clip(0.6 / footprint / 2.0 - 1.0, 0.0, 1.0)
    sw = (mat == SIDEWALK) & (ax == 2) & ~is_ground
    albedo = np.where(
        sw[..., None], albedo * (0.85 + 0.3 * (0.5 + tile_w * (tiles - 0.5)))[..., None], albedo
    )
    # people: darker legs
    albedo = np.where(((mat == PERSON) & (local[2] < 0.8))[..., None], albedo * 0.6, albedo)

    # Lambert shading with face normals
    normal_sign = -np.sign(np.take_along_axis(d, ax[None], 0)[0])
    normal_sign = np.where(is_ground, 1.0, normal_sign)
    sun_dot = np.clip(normal_sign * L.sun.astype(np.float32)[ax], 0.0, None)
    shade = L.ambient + L.sun_strength * sun_dot
    rgb = albedo * shade[..., None] * (L.tint * L.exposure).astype(np.float32)

    # sky: gradient with clouds fixed in direction (at infinity)
    dn = d / dnorm
    elev = np.arcsin(np.clip(dn[2], -1, 1))
    az = np.arctan2(dn[1], dn[0])
    wsky = np.clip(elev / 0.6, 0, 1)[..., None]
    sky = L.sky_horizon * (1 - wsky) + L.sky_zenith * wsky
    sky_fp = np.float32(1.0 / cam.fx)
    clouds = _fbm(
        az * 8.0,
        elev * 8.0,
        np.full(elev.shape, seeds[0] + 99, np.uint32),
        np.full(elev.shape, sky_fp * 8.0, np.float32),
        wavelengths=(1.0, 0.3, 0.1),
        amplitudes=(0.5, 0.3, 0.2),
    )
    sky = sky * (1 - 0.3 * wsky) + (0.3 * wsky) * (0.7 + 0.5 * clouds)[..., None]
    rgb = np.where(hit[..., None], rgb, sky * L.exposure)
    image = np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8)

    label = np.where(hit, label, SKY_ID).astype(np.uint8)
    motion = np.where(hit & moving[o], 255, 0).astype(np.uint8)
    depth = np.where(hit, best, 0.0).astype(np.float32)
    return RenderedFrame(image, depth, label, motion)


# --------------------------------------------------------------------------------------------- writing
def annotated_index(num_frames: int) -> int:
    """Cityscapes annotates the 20th frame (index 19) of each 30-frame snippet."""
    return 19 if num_frames >= 20 else num_frames - 1


def _seq_rng(seed: int, city: str, seq: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(city.encode()), seq])


def sequence_outputs(root: Path, split: str, city: str, seq: int, num_frames: int) -> list[Path]:
    ann = FrameId(city, seq, annotated_index(num_frames))
    paths = []
    for f in range(num_frames):
        fid = FrameId(city, seq, f)
        paths += [cityscapes_path(root, k, split, fid) for k in ("image_sequence", "vehicle", "timestamp")]
    paths += [
        cityscapes_path(root, k, split, ann) for k in ("image", "label_ids", "motion", "disparity", "camera")
    ]
    return paths


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = array[..., ::-1] if array.ndim == 3 else array
    if not cv2.imwrite(str(path), np.ascontiguousarray(img)):
        raise OSError(f"could not write {path}")


def _vehicle_json(scene: Scene, i: int) -> dict:
    x, y, psi = scene.poses[i]
    lat0, lon0 = 50.7753, 6.0839  # a reference point; positions follow the world x (north-ish) / y
    return {
        "gpsHeading": float(np.degrees(-psi) % 360.0),
        "gpsLatitude": lat0 + x / 111_320.0,
        "gpsLongitude": lon0 - y / (111_320.0 * np.cos(np.radians(lat0))),
        "outsideTemperature": 18.5,
        "speed": float(scene.speeds[i]),
        "yawRate": float(scene.yaw_rates[i]),
    }


def generate_sequence(
    root: Path,
    split: str,
    city: str,
    seq: int,
    num_frames: int,
    height: int,
    width: int,
    seed: int,
    fps: float = 17.0,
    progress=None,
) -> None:
    """Render and write one snippet in the Cityscapes layout."""
    scene = make_scene(_seq_rng(seed, city, seq), num_frames, fps)
    cam = cityscapes_like_camera(height, width)
    ann = annotated_index(num_frames)
    for i in range(num_frames):
        fid = FrameId(city, seq, i)
        frame = render_frame(scene, i, cam, height, width)
        _write_png(cityscapes_path(root, "image_sequence", split, fid), frame.image)
        vpath = cityscapes_path(root, "vehicle", split, fid)
        vpath.parent.mkdir(parents=True, exist_ok=True)
        vpath.write_text(json.dumps(_vehicle_json(scene, i), indent=2))
        tpath = cityscapes_path(root, "timestamp", split, fid)
        tpath.parent.mkdir(parents=True, exist_ok=True)
        tpath.write_text(f"{int(scene.timestamps_ns[i])}\n")
        if i == ann:
            _write_png(cityscapes_path(root, "image", split, fid), frame.image)
            _write_png(cityscapes_path(root, "label_ids", split, fid), frame.label_ids)
            _write_png(cityscapes_path(root, "motion", split, fid), frame.motion)
            _write_png(
                cityscapes_path(root, "disparity", split, fid),
                depth_to_disparity(frame.depth, cam.fx, cam.baseline),
            )
            cpath = cityscapes_path(root, "camera", split, fid)
            cpath.parent.mkdir(parents=True, exist_ok=True)
            cpath.write_text(json.dumps(cam.to_json(), indent=2))
        if progress is not None:
            progress.update(1)


def generate(
    root: str | Path,
    split: str = "train",
    sequences: int = 4,
    frames: int = 30,
    height: int = 1024,
    width: int = 2048,
    seed: int = 0,
    city: str = "synthetic",
    fps: float = 17.0,
    overwrite: bool = False,
    show_progress: bool = True,
    workers: int = 1,
) -> None:
    """Write ``sequences`` snippets of ``frames`` frames; refuses to overwrite existing files unless asked."""
    from tqdm import tqdm

    root = Path(root)
    if frames < 1 or sequences < 1 or height < 8 or width < 8:
        raise ValueError(
            f"need frames, sequences >= 1 and an image of at least 8x8, got "
            f"{sequences=} {frames=} {height=} {width=}"
        )
    if "_" in city or "/" in city:
        raise ValueError(f"city names may not contain '_' or '/': {city!r}")
    if not overwrite:
        for s in range(sequences):
            for p in sequence_outputs(root, split, city, s, frames):
                if p.exists():
                    raise FileExistsError(f"{p} exists; pass --overwrite to replace the generated files")
    bar = tqdm(
        total=sequences * frames, desc=f"render {city}/{split}", unit="frame", disable=not show_progress
    )
    with bar:
        if workers <= 1 or sequences == 1:
            for s in range(sequences):
                generate_sequence(root, split, city, s, frames, height, width, seed, fps, progress=bar)
            return
        # one process per snippet: every snippet is independent and deterministic from (seed, city, seq)
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            jobs = [
                pool.submit(generate_sequence, root, split, city, s, frames, height, width, seed, fps)
                for s in range(sequences)
            ]
            for job in as_completed(jobs):
                job.result()
                bar.update(frames)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make_synthetic_cityscapes", description=__doc__.split("\n")[0])
    ap.add_argument(
        "--out", required=True, type=Path, help="dataset root (Cityscapes layout is written below)"
    )
    ap.add_argument("--split", default="train")
    ap.add_argument("--sequences", type=int, default=4)
    ap.add_argument("--frames", type=int, default=30, help="frames per snippet; frame 19 is annotated")
    ap.add_argument("--height", type=int, default=1024)
    ap.add_argument("--width", type=int, default=2048)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--city", default="synthetic")
    ap.add_argument("--fps", type=float, default=17.0)
    ap.add_argument("--overwrite", action="store_true")
    ap.add_argument("--workers", type=int, default=1, help="processes rendering snippets in parallel")
    args = ap.parse_args(argv)
    try:
        generate(
            args.out,
            args.split,
            args.sequences,
            args.frames,
            args.height,
            args.width,
            args.seed,
            args.city,
            args.fps,
            args.overwrite,
            workers=args.workers,
        )
    except (FileExistsError, ValueError) as exc:
        print(f"make_synthetic_cityscapes: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
