"""The demo's pictures: prediction-beside-ground-truth mosaic with a depth scale bar and a class legend, and
the GIF of the predictions over the drive. Plain arrays in, RGB uint8 arrays / files out."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from mtl_perception.colormap import colorize, overlay_mask
from mtl_perception.data.cityscapes import FIVE_CLASS_NAMES, semantic_palette
from mtl_perception.flow import flow_to_color

MAX_DEPTH_M = 80.0
MIN_DEPTH_M = 2.0
MOTION_COLOR = (255, 0, 0)
BAR_TICKS_M = (2, 3, 5, 10, 20, 40, 80)


def _depth_position(depth: np.ndarray) -> np.ndarray:
    """0 (near, MIN_DEPTH_M) .. 1 (far, MAX_DEPTH_M) on a log scale: street scenes span 2-80 m evenly."""
    clipped = np.clip(depth, MIN_DEPTH_M, MAX_DEPTH_M)
    return np.log(clipped / MIN_DEPTH_M) / np.log(MAX_DEPTH_M / MIN_DEPTH_M)


def depth_to_color(depth: np.ndarray, max_depth: float = MAX_DEPTH_M) -> np.ndarray:
    """Log-depth colour map from MIN_DEPTH_M to ``max_depth`` (near = bright), NaN or <= 0 (invalid) black;
    RGB uint8."""
    depth = np.asarray(depth, np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    position = _depth_position(np.where(valid, np.minimum(depth, max_depth), MIN_DEPTH_M))
    color = cv2.applyColorMap((255 * (1 - position)).astype(np.uint8), cv2.COLORMAP_MAGMA)[:, :, ::-1]
    color[~valid] = 0
    return np.ascontiguousarray(color)


def label(image: np.ndarray, text: str, scale: float = 0.45) -> np.ndarray:
    """``text`` in white with a dark outline in the top-left corner (readable on any tile)."""
    out = np.ascontiguousarray(image.copy())
    cv2.putText(out, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (5, 16), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def depth_scale_bar(width: int, height: int = 44) -> np.ndarray:
    """The depth colour map as a horizontal bar with metre ticks (inverse-depth spacing, as the tiles)."""
    bar = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 70, width - 20, 6, 22
    metres = np.geomspace(MIN_DEPTH_M, MAX_DEPTH_M, right - left)  # near (left) -> far, log scale
    bar[top:bottom, left:right] = depth_to_color(np.tile(metres, (bottom - top, 1)))
    cv2.putText(bar, "depth", (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    for tick in BAR_TICKS_M:
        x = min(left + int(round(float(_depth_position(np.float32(tick))) * (right - left))), right - 1)
        cv2.line(bar, (x, bottom), (x, bottom + 4), (0, 0, 0), 1)
        cv2.putText(bar, f"{tick} m", (x - 10, bottom + 17), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1)
    return bar


def class_legend(width: int, height: int = 30) -> np.ndarray:
    """One colour swatch per semantic class (the 'five' palette), plus the motion overlay colour."""
    legend = np.full((height, width, 3), 255, np.uint8)
    entries = list(zip(FIVE_CLASS_NAMES, np.asarray(semantic_palette("five"), np.uint8), strict=True))
    entries.append(("moving (overlay)", np.asarray(MOTION_COLOR, np.uint8)))
    x = 6
    for name, color in entries:
        cv2.rectangle(legend, (x, 8), (x + 16, 24), tuple(int(c) for c in color), -1)
        cv2.rectangle(legend, (x, 8), (x + 16, 24), (0, 0, 0), 1)
        cv2.putText(legend, name, (x + 21, 21), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
        x += 21 + 9 * len(name) + 18
    return legend


def frame_block(frame, result, truth, *, stamp_s: float) -> np.ndarray:
    """Two rows for one frame: predictions (input, depth, semantic, motion) over ground truth (flow, ...)."""
    palette = semantic_palette("five")
    gt_depth = np.where(truth.depth > 0, truth.depth, np.nan).astype(np.float32)
    predicted = [
        label(frame, f"input t={stamp_s:.2f}s"),
        label(depth_to_color(result.depth), "depth: predicted"),
        label(colorize(result.semantic, palette), "semantic: predicted"),
        label(overlay_mask(frame, result.motion, color=MOTION_COLOR), "motion: predicted"),
    ]
    dt = f"{1e3 * result.partner_dt:.0f} ms" if result.partner_dt else "no partner"
    truth_row = [
        label(_fit(flow_to_color(result.flow), frame.shape[:2]), f"flow input (partner {dt})"),
        label(depth_to_color(gt_depth), "depth: ground truth"),
        label(colorize(truth.semantic, palette), "semantic: ground truth"),
        label(overlay_mask(frame, truth.motion == 1, color=MOTION_COLOR), "motion: ground truth"),
    ]
    return np.concatenate([np.concatenate(predicted, 1), np.concatenate(truth_row, 1)], 0)


def _fit(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(shape):
        return image
    return cv2.resize(image, (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST)


def mosaic(blocks: list[np.ndarray]) -> np.ndarray:
    """Frame blocks stacked, a white gap between them, the depth scale bar and class legend below."""
    width = blocks[0].shape[1]
    gap = np.full((6, width, 3), 255, np.uint8)
    parts = []
    for block in blocks:
        parts += [block, gap]
    return np.concatenate([*parts, depth_scale_bar(width), class_legend(width)], 0)


def write_png(path: Path, rgb: np.ndarray) -> None:
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"could not write {path}")


def prediction_strip(frame, result, scale: float = 0.5) -> np.ndarray:
    """One GIF frame: input | depth | semantic | motion overlay, each scaled by ``scale``."""
    tiles = [
        frame,
        depth_to_color(result.depth),
        colorize(result.semantic, semantic_palette("five")),
        overlay_mask(frame, result.motion, color=MOTION_COLOR),
    ]
    height, width = frame.shape[:2]
    size = (int(width * scale), int(height * scale))
    return np.concatenate([cv2.resize(t, size, interpolation=cv2.INTER_AREA) for t in tiles], 1)


def write_gif(path: Path, strips: list[np.ndarray], *, fps: float) -> None:
    """An endlessly looping GIF (Pillow) of ``strips`` at ``fps``."""
    from PIL import Image

    images = [Image.fromarray(s).quantize(colors=255, method=Image.Quantize.MEDIANCUT) for s in strips]
    images[0].save(
        path, save_all=True, append_images=images[1:], duration=int(round(1000 / fps)), loop=0, optimize=True
    )
