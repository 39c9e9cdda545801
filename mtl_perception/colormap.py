"""Depth as a picture: metres -> rgb8 with a fixed, documented range (the node's ``depth/color``).

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
