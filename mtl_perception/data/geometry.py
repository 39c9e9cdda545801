"""Cityscapes coordinate systems and ego-motion (``csCalibration.pdf``, cityscapesscripts
``helpers/box3dImageTransform.py``), shared by the synthetic generator and ``make_motion_labels``.

* V, the vehicle frame (ISO 8855): origin on the ground below the rear-axle centre, x forward, y left, z up;
* C, the camera frame: origin at the optical centre, V's orientation, placed in V by the ``extrinsic`` of
  ``camera.json``: R_C->V = Rz(yaw) Ry(pitch) Rx(roll), t_C->V = (x, y, z) (csCalibration eq. 3-4);
* S, the optical frame: C's origin, x right, y down, z forward; I, the image: u right, v down, ``K``.

Ego-motion is a planar motion of V: over each frame interval the vehicle drives an arc with the ``speed``
(m/s) and ``yawRate`` (rad/s, counter-clockwise about V's z) of the interval's first frame, for the time to
the next frame's timestamp. The camera moves with V, so its motion is V's motion seen through the
extrinsic: a rotation about V's origin, not about the camera's."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from mtl_perception.data.cityscapes import CameraCalibration


def rot_x(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


#: optical S (x right, y down, z forward) -> C/V axes (x forward, y left, z up); the transpose of
#: cityscapesscripts' ``get_K_multiplier()``
OPTICAL_TO_VEHICLE = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def camera_to_vehicle(cam: CameraCalibration) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and position of the optical frame S in the vehicle frame V, from the Cityscapes extrinsics:
    a point X_S maps to X_V = R @ X_S + c."""
    R = rot_z(cam.yaw) @ rot_y(cam.pitch) @ rot_x(cam.roll) @ OPTICAL_TO_VEHICLE
    return R, np.array([cam.x, cam.y, cam.z])


def vehicle_arc(speed: float, yaw_rate: float, dt: float) -> tuple[np.ndarray, float]:
    """Displacement (forward, left, 0) in the vehicle frame and heading change at constant speed, yaw rate."""
    dpsi = yaw_rate * dt
    forward = speed * dt * np.sinc(dpsi / np.pi)
    left = speed * dt * np.sin(dpsi / 2) * np.sinc(dpsi / (2 * np.pi))
    return np.array([forward, left, 0.0]), dpsi


def ego_motion(
    speeds: Sequence[float], yaw_rates: Sequence[float], timestamps_ns: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pose of V at the last timestamp in V at the first: (rotation about z, position), the arcs of the
    intervals composed. ``speeds[i]``, ``yaw_rates[i]`` hold from ``timestamps_ns[i]`` to ``[i + 1]``."""
    if not (len(speeds) == len(yaw_rates) == len(timestamps_ns) - 1 >= 1):
        raise ValueError(
            f"need one speed and yaw rate per interval: {len(timestamps_ns)} timestamps, "
            f"{len(speeds)} speeds, {len(yaw_rates)} yaw rates"
        )
    R, p = np.eye(3), np.zeros(3)
    for i, (speed, yaw_rate) in enumerate(zip(speeds, yaw_rates, strict=True)):
        dt = (int(timestamps_ns[i + 1]) - int(timestamps_ns[i])) * 1e-9
        if not dt > 0:
            raise ValueError(f"timestamps must increase, got {timestamps_ns[i]} then {timestamps_ns[i + 1]}")
        displacement, dpsi = vehicle_arc(float(speed), float(yaw_rate), dt)
        p = p + R @ displacement
        R = R @ rot_z(dpsi)
    return R, p


def camera_motion(cam: CameraCalibration, R_v: np.ndarray, p_v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) with X_earlier = R @ X_later + t in optical coordinates, for a vehicle whose later pose in the
    earlier vehicle frame is (R_v, p_v) (``ego_motion``): S_later -> V_later -> V_earlier -> S_earlier."""
    R_vs, c = camera_to_vehicle(cam)
    return R_vs.T @ R_v @ R_vs, R_vs.T @ (R_v @ c + p_v - c)


def backproject(u: np.ndarray, v: np.ndarray, depth: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(3, N) optical coordinates of pixels (u, v) at depth Z (metres along the optical axis)."""
    z = np.asarray(depth, np.float64)
    return np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z])


def project(X: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixels (u, v) of (3, N) optical coordinates (NaN-free only where z > 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return K[0, 0] * X[0] / X[2] + K[0, 2], K[1, 1] * X[1] / X[2] + K[1, 2]


def rigid_flow_from_depth(depth: np.ndarray, K: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Flow (HxWx2, px) that a static scene with this depth induces when camera coordinates move X -> R X + t.

    Pixels with depth <= 0 / non-finite, or whose point ends behind the second camera, are NaN.
    """
    depth = np.asarray(depth, np.float64)
    h, w = depth.shape
    u, v = np.meshgrid(np.arange(w, dtype=np.float64), np.arange(h, dtype=np.float64))
    X2 = R @ backproject(u.ravel(), v.ravel(), depth.ravel(), K) + np.asarray(t, np.float64).reshape(3, 1)
    u2, v2 = project(X2, K)
    valid = np.isfinite(depth.ravel()) & (depth.ravel() > 0) & (X2[2] > 1e-6)
    flow = np.stack([u2 - u.ravel(), v2 - v.ravel()], -1)
    flow[~valid] = np.nan
    return flow.reshape(h, w, 2).astype(np.float32)
