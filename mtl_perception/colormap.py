"""The outputs as pictures: depth in metres -> rgb8 with a fixed, documented range (the node's
``depth/color``), class ids through a palette (``semantic/color``), a mask blended over the frame
(``motion/overlay``).

A fixed range (not per-frame min/max) so that one colour means one distance in every frame and on every
robot: inverse depth from ``1/far`` to ``1/near`` onto OpenCV's Turbo colour map (near = red, far = dark
blue; inverse depth spends the colours where a driving scene has detail), invalid (NaN, <= 0) black.
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_NEAR_M = 1.0
DEFAULT_FAR_M = 80.0  # TI's depth evaluation range ends at 80 m


def colorize_depth(
    depth: np.ndarray, *, near: float = DEFAULT_NEAR_M, far: float = DEFAULT_FAR_M
) -> np.ndarray:
    """(H, W) float metres -> (H, W, 3) uint8 RGB; nearer than ``near`` / farther than ``far`` saturate."""
    if not 0 < near < far:
        raise ValueError(f"depth colour range must satisfy 0 < near < far, got near={near}, far={far}")
    depth = np.asarray(depth, dtype=np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    inverse = np.divide(1.0, depth, out=np.zeros_like(depth), where=valid)
    scaled = (inverse - 1.0 / far) / (1.0 / near - 1.0 / far)
    levels = np.round(np.clip(scaled, 0.0, 1.0) * 255.0).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(levels, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    return rgb


def colorize(ids: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB; ids beyond the palette (e.g. 255) are drawn black."""
    palette = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    lut = np.zeros((256, 3), np.uint8)
    lut[: len(palette)] = palette[:256]
    return lut[ids]


def overlay_mask(image: np.ndarray, mask: np.ndarray, color=(255, 0, 0), alpha: float = 0.5) -> np.ndarray:
    """Blend ``color`` over the RGB ``image`` where ``mask`` is non-zero (motion overlay)."""
    out = image.copy()
    selected = mask.astype(bool)
    blend = (1.0 - alpha) * image[selected].astype(np.float32) + alpha * np.asarray(color, np.float32)
    out[selected] = np.round(blend).astype(np.uint8)
    return out
