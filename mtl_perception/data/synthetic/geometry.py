"""Camera and vehicle geometry of the synthetic drive (Cityscapes ``csCalibration`` conventions): the
Cityscapes-like camera, rotations, the optical-to-vehicle frame change, the ego arc per frame interval and
the rigid flow a static scene induces."""

from __future__ import annotations

import numpy as np

from mtl_perception.data.cityscapes import CameraCalibration


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


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


#: optical (x right, y down, z forward) -> vehicle (x forward, y left, z up)
OPTICAL_TO_VEHICLE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_to_vehicle(cam: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and position of the optical frame in the vehicle frame, from the Cityscapes extrinsics."""
    R = rot_z(cam.yaw) @ rot_y(cam.pitch) @ rot_x(cam.roll) @ OPTICAL_TO_VEHICLE
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
