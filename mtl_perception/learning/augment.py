"""Geometric augmentation applied consistently to images, flow and dense targets (TI recipe, bug-fixed).

Every transform is an affine map p' = A p + b of pixel coordinates, applied with ``cv2.warpAffine``:

* images (``KIND_IMAGE``): bilinear;
* flow (``KIND_FLOW``, HxWx3 = u, v, confidence): resampled bilinearly, and the flow VECTORS are mapped by
  the linear part A (u' = A00 u + A01 v, v' = A10 u + A11 v, both from the original vector; TI's code
  reused the already-rotated u), which scales them by the resize ratios, rotates them with the image and
  negates u on a horizontal flip; confidence is resampled only;
* targets (``KIND_TARGET``): nearest neighbour, so only values present in the input survive.

The scale step of ``TrainAugment`` and ``Resize`` use ``cv2.resize`` (area averaging when shrinking) and an
exact crop instead of a warp, so that shrinking a full-resolution frame to the network size does not alias.

Borders uncovered by a warp are filled with "no information": 0 for images, flow and confidence, 0 (invalid)
for depth and 255 (ignore) for semantic and motion (TI filled 0, which teaches "road"/"static" there).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

KIND_IMAGE, KIND_FLOW, KIND_TARGET = "image", "flow", "target"

#: kind and border value of the keys the multi-task dataset uses
DEFAULT_KINDS: dict[str, tuple[str, float]] = {
    "image": (KIND_IMAGE, 0.0),
    "flow": (KIND_FLOW, 0.0),
    "depth": (KIND_TARGET, 0.0),
    "semantic": (KIND_TARGET, 255),
    "motion": (KIND_TARGET, 255),
}


def _kind(key: str, kinds: Mapping[str, tuple[str, float]]) -> tuple[str, float]:
    if key not in kinds:
        raise ValueError(f"no augmentation kind for key {key!r}; known: {sorted(kinds)}")
    return kinds[key]


def warp_affine(
    sample: dict,
    M: np.ndarray,
    out_size: tuple[int, int],
    kinds: Mapping[str, tuple[str, float]] = DEFAULT_KINDS,
) -> dict:
    """Apply the 2x3 pixel map ``M`` (p' = M[:, :2] p + M[:, 2]) to every array of ``sample``.

    ``out_size`` is (height, width). Keys missing from ``kinds`` raise ValueError; None values pass through.
    """
    M = np.asarray(M, np.float64)
    h, w = out_size
    A = M[:, :2]
    out = {}
    for key, arr in sample.items():
        if arr is None:
            out[key] = None
            continue
        kind, border = _kind(key, kinds)
        interp = cv2.INTER_NEAREST if kind == KIND_TARGET else cv2.INTER_LINEAR
        warped = cv2.warpAffine(
            arr, M, (w, h), flags=interp, borderMode=cv2.BORDER_CONSTANT, borderValue=(border,) * 4
        )
        if kind == KIND_FLOW:
            warped = warped.astype(np.float32, copy=True)
            u, v = warped[..., 0].copy(), warped[..., 1].copy()
            warped[..., 0] = A[0, 0] * u + A[0, 1] * v
            warped[..., 1] = A[1, 0] * u + A[1, 1] * v
        out[key] = warped
    return out


def hflip(sample: dict, kinds: Mapping[str, tuple[str, float]] = DEFAULT_KINDS) -> dict:
    """Mirror left-right; flow u is negated (exact, no resampling: flipping twice is the identity)."""
    out = {}
    for key, arr in sample.items():
        if arr is None:
            out[key] = None
            continue
        kind, _ = _kind(key, kinds)
        flipped = np.ascontiguousarray(arr[:, ::-1])
        if kind == KIND_FLOW:
            flipped = flipped.astype(np.float32, copy=True)
            flipped[..., 0] *= -1.0
        out[key] = flipped
    return out


def resize(
    sample: dict, out_size: tuple[int, int], kinds: Mapping[str, tuple[str, float]] = DEFAULT_KINDS
) -> dict:
    """Resize every array to (height, width): images and flow with ``cv2.INTER_AREA`` when shrinking
    (area averaging, close to the antialiased resize the node applies to camera frames; a bilinear warp
    would alias) and bilinear when enlarging; targets nearest; flow vectors scaled by the axis ratios."""
    h, w = _size(sample)
    oh, ow = out_size
    shrink = oh < h or ow < w
    out = {}
    for key, arr in sample.items():
        if arr is None:
            out[key] = None
            continue
        kind, _ = _kind(key, kinds)
        if kind == KIND_TARGET:
            interp = cv2.INTER_NEAREST
        else:
            interp = cv2.INTER_AREA if shrink else cv2.INTER_LINEAR
        resized = cv2.resize(arr, (ow, oh), interpolation=interp)
        if kind == KIND_FLOW:
            resized = resized.astype(np.float32, copy=True)
            resized[..., 0] *= ow / w
            resized[..., 1] *= oh / h
        out[key] = resized
    return out


def align_flow(sample: dict) -> dict:
    """The flow resized to the image's size (bilinear, vectors scaled with the axes; TI's ``AlignImages``)
    when it was made at another size, e.g. make_flow_dataset's network size; otherwise ``sample`` itself."""
    flow, image = sample.get("flow"), sample.get("image")
    if flow is None or image is None or flow.shape[:2] == image.shape[:2]:
        return sample
    (h, w), (fh, fw) = image.shape[:2], flow.shape[:2]
    aligned = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.float32, copy=False)
    aligned[..., 0] *= w / fw
    aligned[..., 1] *= h / fh
    return {**sample, "flow": aligned}


def crop(sample: dict, y0: int, x0: int, out_size: tuple[int, int]) -> dict:
    """Exact crop (slicing) of every array."""
    oh, ow = out_size
    return {
        k: None if a is None else np.ascontiguousarray(a[y0 : y0 + oh, x0 : x0 + ow])
        for k, a in sample.items()
    }


def rotation_matrix(angle_deg: float, height: int, width: int) -> np.ndarray:
    """Rotation about the image centre (cv2 convention: positive = counter-clockwise on screen)."""
    return cv2.getRotationMatrix2D(((width - 1) / 2.0, (height - 1) / 2.0), angle_deg, 1.0)


def scale_crop_matrix(sx: float, sy: float, x0: float, y0: float) -> np.ndarray:
    """Resize by (sx, sy) (pixel centres, as cv2.resize), then crop at (x0, y0) of the resized image."""
    return np.array([[sx, 0.0, 0.5 * sx - 0.5 - x0], [0.0, sy, 0.5 * sy - 0.5 - y0]])


def _size(sample: dict) -> tuple[int, int]:
    arr = sample.get("image")
    if arr is None:
        arr = next(a for a in sample.values() if a is not None)
    return arr.shape[0], arr.shape[1]


@dataclass
class Resize:
    """Deterministic resize to (height, width) (validation)."""

    size: tuple[int, int]
    kinds: Mapping[str, tuple[str, float]] = None

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        return resize(align_flow(sample), self.size, self.kinds or DEFAULT_KINDS)


@dataclass
class TrainAugment:
    """TI's train recipe: RandomRotate(±rotation°) -> RandomScaleCrop(size, scale) -> RandomHorizontalFlip.

    RandomScaleCrop: with probability ``p_scale`` the input is resized to (U(scale)·H_out, U(scale)·W_out),
    each axis drawn separately, otherwise to exactly (H_out, W_out); then a random (H_out, W_out) crop.
    """

    size: tuple[int, int]
    rotation: float = 5.0
    scale: tuple[float, float] = (1.0, 2.0)
    p_rotate: float = 0.5
    p_scale: float = 0.5
    p_flip: float = 0.5
    kinds: Mapping[str, tuple[str, float]] = None

    def __call__(self, sample: dict, rng: np.random.Generator | None = None) -> dict:
        rng = rng if rng is not None else np.random.default_rng()
        kinds = self.kinds or DEFAULT_KINDS
        sample = align_flow(sample)
        h, w = _size(sample)
        oh, ow = self.size
        if self.rotation > 0 and rng.random() < self.p_rotate:
            sample = warp_affine(
                sample, rotation_matrix(rng.uniform(-self.rotation, self.rotation), h, w), (h, w), kinds
            )
        if rng.random() < self.p_scale:
            rh, rw = math.ceil(rng.uniform(*self.scale) * oh), math.ceil(rng.uniform(*self.scale) * ow)
        else:
            rh, rw = oh, ow
        y0, x0 = int(rng.integers(0, rh - oh + 1)), int(rng.integers(0, rw - ow + 1))
        sample = crop(resize(sample, (rh, rw), kinds), y0, x0, (oh, ow))
        if rng.random() < self.p_flip:
            sample = hflip(sample, kinds)
        return sample
