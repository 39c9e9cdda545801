"""Real-texture frame pairs with a known smooth flow, for parity tests, the demo and benchmarks.

``next(q) = prev(q + g(q))`` with g a sum of random low-frequency sinusoids plus a small rotation and
zoom (closed form, so it can be evaluated anywhere). The forward ground truth u(p), which satisfies
``prev(p) = next(p + u(p))``, solves ``u = −g(p + u)`` and is found by fixed-point iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

IMAGES = ("astronaut", "coffee", "camera", "chelsea")


def texture(name: str, height: int, width: int) -> np.ndarray:
    """A real skimage.data photo as HxWx3 uint8 **BGR** (cv2 convention), centre-cropped and resized."""
    import skimage.data

    if name not in IMAGES:
        raise ValueError(f"unknown texture {name!r}; choose from {IMAGES}")
    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    h, w = img.shape[:2]
    aspect = width / height
    if w / h > aspect:
        cw = int(round(h * aspect))
        img = img[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    else:
        ch = int(round(w / aspect))
        img = img[(h - ch) // 2 : (h - ch) // 2 + ch]
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img[..., ::-1])


@dataclass
class SmoothWarp:
    """g(x, y): 4 random sinusoids + rotation + zoom, scaled so that max |g| over the frame is ``amp``."""

    height: int
    width: int
    amp: float = 3.0
    seed: int = 0

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self._waves = [
            (
                rng.normal(size=2),
                rng.uniform(0.5, 2.0) * 2 * np.pi / max(self.height, self.width),
                rng.uniform(0, 2 * np.pi, size=2),
                rng.uniform(-np.pi, np.pi),
            )
            for _ in range(4)
        ]
        self._rot, self._zoom = np.deg2rad(1.0), 0.01
        self._gain = 1.0
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        self._gain = self.amp / np.hypot(*self(xx, yy)).max()

    def __call__(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cx, cy = (self.width - 1) / 2, (self.height - 1) / 2
        dx, dy = x - cx, y - cy
        gx = dx * (np.cos(self._rot) * (1 + self._zoom) - 1) - dy * np.sin(self._rot) * (1 + self._zoom)
        gy = dx * np.sin(self._rot) * (1 + self._zoom) + dy * (np.cos(self._rot) * (1 + self._zoom) - 1)
        for amp, freq, phase, theta in self._waves:
            t = freq * (x * np.cos(theta) + y * np.sin(theta))
            gx = gx + amp[0] * np.sin(t + phase[0]) * 0.5 * max(self.height, self.width) / 100
            gy = gy + amp[1] * np.sin(t + phase[1]) * 0.5 * max(self.height, self.width) / 100
        return gx * self._gain, gy * self._gain

    def warp(self, image: np.ndarray) -> np.ndarray:
        """next(q) = image(q + g(q)) with cv2.remap (bilinear, reflect-101 border)."""
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        gx, gy = self(xx, yy)
        return cv2.remap(
            image,
            (xx + gx).astype(np.float32),
            (yy + gy).astype(np.float32),
            cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REFLECT_101,
        )

    def ground_truth(self, iterations: int = 50) -> np.ndarray:
        """Forward flow u(p) with prev(p) = next(p + u(p)): the fixed point of u = −g(p + u)."""
        yy, xx = np.mgrid[0 : self.height, 0 : self.width].astype(np.float64)
        ux = np.zeros_like(xx)
        uy = np.zeros_like(yy)
        for _ in range(iterations):
            gx, gy = self(xx + ux, yy + uy)
            ux, uy = -gx, -gy
        return np.stack([ux, uy], axis=-1).astype(np.float32)


def make_pair(name: str, height: int, width: int, amp: float = 3.0, seed: int = 0):
    """(prev BGR uint8, next BGR uint8, ground-truth flow HxWx2 float32)."""
    prev = texture(name, height, width)
    warp = SmoothWarp(height, width, amp, seed)
    return prev, warp.warp(prev), warp.ground_truth()


def endpoint_error(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance between two HxWx2 flows."""
    return np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64), axis=-1)
