"""Middlebury colour coding of flow (Baker et al., 2011): the 55-colour wheel.

Hand-written because it is ~30 lines of NumPy: the small pip package for it (flow_vis) is unmaintained
and the other options (mmcv, torchvision.utils.flow_to_image on tensors) pull in heavy dependencies or
use a different layout; here it stays a pure NumPy function on HxWx2 arrays.
"""

from __future__ import annotations

import numpy as np

# Segment lengths red->yellow, yellow->green, green->cyan, cyan->blue, blue->magenta, magenta->red.
_SEGMENTS = (15, 6, 4, 11, 13, 6)


def make_colorwheel() -> np.ndarray:
    """(55, 3) RGB wheel as in the Middlebury flow code."""
    ry, yg, gc, cb, bm, mr = _SEGMENTS
    wheel = np.zeros((sum(_SEGMENTS), 3))
    col = 0
    wheel[col : col + ry, 0], wheel[col : col + ry, 1] = 255, np.floor(255 * np.arange(ry) / ry)
    col += ry
    wheel[col : col + yg, 0], wheel[col : col + yg, 1] = 255 - np.floor(255 * np.arange(yg) / yg), 255
    col += yg
    wheel[col : col + gc, 1], wheel[col : col + gc, 2] = 255, np.floor(255 * np.arange(gc) / gc)
    col += gc
    wheel[col : col + cb, 1], wheel[col : col + cb, 2] = 255 - np.floor(255 * np.arange(cb) / cb), 255
    col += cb
    wheel[col : col + bm, 2], wheel[col : col + bm, 0] = 255, np.floor(255 * np.arange(bm) / bm)
    col += bm
    wheel[col : col + mr, 2], wheel[col : col + mr, 0] = 255 - np.floor(255 * np.arange(mr) / mr), 255
    return wheel


def flow_to_color(flow: np.ndarray, max_magnitude: float | None = None) -> np.ndarray:
    """HxWx2 flow (px) -> HxWx3 uint8 RGB; hue = direction, saturation = |flow| / max_magnitude.

    Zero flow is white; vectors at or beyond ``max_magnitude`` (default: the largest in the image) are
    fully saturated and darkened to 75 %, as in the Middlebury code.
    """
    flow = np.asarray(flow, dtype=np.float64)
    if flow.ndim != 3 or flow.shape[2] != 2:
        raise ValueError(f"flow must be HxWx2, got shape {flow.shape}")
    if not np.isfinite(flow).all():
        raise ValueError("flow contains NaN or inf values")
    rad = np.hypot(flow[..., 0], flow[..., 1])
    if max_magnitude is None:
        max_magnitude = float(rad.max()) if rad.size else 0.0
    elif not max_magnitude > 0:
        raise ValueError(f"max_magnitude must be > 0, got {max_magnitude}")
    norm = max(max_magnitude, 1e-12)
    u, v, rad = flow[..., 0] / norm, flow[..., 1] / norm, rad / norm
    wheel = make_colorwheel()
    ncols = wheel.shape[0]
    angle = np.arctan2(-v, -u) / np.pi
    fk = (angle + 1) / 2 * (ncols - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = np.where(k0 + 1 == ncols, 0, k0 + 1)
    f = (fk - k0)[..., None]
    col = ((1 - f) * wheel[k0] + f * wheel[k1]) / 255.0
    inside = (rad <= 1)[..., None]
    col = np.where(inside, 1 - rad[..., None] * (1 - col), col * 0.75)
    return np.floor(255 * col).astype(np.uint8)
