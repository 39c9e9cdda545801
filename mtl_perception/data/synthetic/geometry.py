"""The synthetic drive's camera: a Cityscapes camera scaled to the requested size. The frame conventions,
the ego arc and the rigid flow are Cityscapes' own (``mtl_perception.data.geometry``)."""

from __future__ import annotations

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
