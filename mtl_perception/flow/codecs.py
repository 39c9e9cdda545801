"""Flow image files: 16-bit KITTI-style PNG (flow + confidence) and TI's 8-bit (u′, v′, confidence) PNG.

KITTI convention: channel value = flow·64 + 2¹⁵ for u (R) and v (G), 16-bit; KITTI's third channel is a
valid flag, here it carries ``round(confidence·65535)`` so any KITTI reader still sees conf > 0 as valid.
Precision is 1/64 px (round trip ≤ 1/128 px), range ±511.98 px. Files are written via a temporary
file and an atomic rename, and never overwrite an existing file unless ``overwrite=True``.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.atomic import atomic_path
from mtl_perception.imageio import read_image

KITTI_SCALE = 64.0
KITTI_OFFSET = 2.0**15
#: the largest |u|, |v| a flow PNG stores (flow beyond it is clamped there, with confidence 0, by FlowInput)
FLOW_PNG_LIMIT_PX = (65535.0 - KITTI_OFFSET) / KITTI_SCALE
TI_ZERO = 128.0


def _check_flow(flow: np.ndarray, confidence: np.ndarray | None) -> None:
    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[2] != 2 or flow.size == 0:
        raise ValueError(f"flow must be a non-empty HxWx2 array, got shape {flow.shape}")
    if not np.isfinite(flow).all():
        raise ValueError("flow contains NaN or inf values")
    if confidence is not None:
        confidence = np.asarray(confidence)
        if confidence.shape != flow.shape[:2]:
            raise ValueError(f"confidence shape {confidence.shape} does not match flow {flow.shape[:2]}")
        if not np.isfinite(confidence).all() or confidence.min() < 0 or confidence.max() > 1:
            raise ValueError("confidence must be finite and within [0, 1]")


def _atomic_imwrite(path: str | os.PathLike, image: np.ndarray, overwrite: bool) -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"flow images must be written as .png, got {path.name!r}")
    with atomic_path(path, overwrite=overwrite, make_parents=False) as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise OSError(f"cv2.imwrite could not write {tmp}")
    return path


def write_flow_png(path, flow: np.ndarray, confidence: np.ndarray | None = None, *, overwrite: bool = False):
    """Write HxWx2 flow (px) and optional HxW confidence in [0,1] as a 16-bit KITTI-style PNG (R=u, G=v)."""
    _check_flow(flow, confidence)
    enc = np.rint(np.asarray(flow, dtype=np.float64) * KITTI_SCALE + KITTI_OFFSET)
    if enc.min() < 0 or enc.max() > 65535:
        raise ValueError(f"flow magnitude {np.abs(flow).max():.1f} px exceeds the PNG range (±511.98 px)")
    conf = np.ones(flow.shape[:2]) if confidence is None else np.asarray(confidence, dtype=np.float64)
    bgr = np.stack([np.rint(conf * 65535.0), enc[..., 1], enc[..., 0]], axis=-1).astype(np.uint16)
    return _atomic_imwrite(path, bgr, overwrite)


def read_flow_png(path) -> tuple[np.ndarray, np.ndarray]:
    """Read a 16-bit KITTI-style flow PNG -> (HxWx2 float32 flow px, HxW float32 confidence in [0,1])."""
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    if image.dtype != np.uint16 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path} is not a 3-channel 16-bit flow PNG ({image.dtype}, shape {image.shape})")
    b, g, r = (image[..., i].astype(np.float32) for i in range(3))
    flow = np.stack([(r - KITTI_OFFSET) / KITTI_SCALE, (g - KITTI_OFFSET) / KITTI_SCALE], axis=-1)
    return flow.astype(np.float32), (b / 65535.0).astype(np.float32)


def write_ti_flow_png(
    path, flow: np.ndarray, confidence: np.ndarray | None, scale: float, *, overwrite: bool = False
):
    """Write TI's 8-bit format: R = 128 + scale·u, G = 128 + scale·v, B = 255·conf (or 128 without)."""
    _check_flow(flow, confidence)
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    enc = np.clip(np.rint(np.asarray(flow, dtype=np.float64) * scale + TI_ZERO), 0, 255)
    if confidence is None:
        third = np.full(flow.shape[:2], TI_ZERO)
    else:
        third = np.rint(np.asarray(confidence) * 255.0)
    bgr = np.stack([third, enc[..., 1], enc[..., 0]], axis=-1).astype(np.uint8)
    return _atomic_imwrite(path, bgr, overwrite)


def read_ti_flow_png(path, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Read TI's 8-bit flow PNG (R=u′, G=v′, B=conf in RGB order; u = (u′ − 128)/scale) -> (flow, conf)."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    image = read_image(path, cv2.IMREAD_UNCHANGED)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{path} is not a 3-channel 8-bit TI flow PNG ({image.dtype}, shape {image.shape})")
    b, g, r = (image[..., i].astype(np.float32) for i in range(3))
    flow = np.stack([(r - TI_ZERO) / scale, (g - TI_ZERO) / scale], axis=-1)
    return flow.astype(np.float32), (b / 255.0).astype(np.float32)
