"""Colour -> grey conversion that reproduces ``cv2.cvtColor(..., COLOR_RGB2GRAY / COLOR_BGR2GRAY)``.

Hand-written (not ``cv2.cvtColor``) so that the same code runs on torch tensors on any device. For uint8
OpenCV uses 15-bit fixed-point coefficients (R 9798, G 19235, B 3735, summing to 2**15) with rounding
(verified bit-exact against cv2 in test_flow_gray); for float it uses 0.299 / 0.587 / 0.114.
"""

from __future__ import annotations

import numpy as np
import torch

_FIXED = (9798, 19235, 3735)  # R, G, B weights << 15, as OpenCV's cvtColor for 8-bit images
_SHIFT = 15
_FLOAT = (0.299, 0.587, 0.114)
ORDERS = ("rgb", "bgr")


def to_gray(image, order: str = "rgb"):
    """HxWx3 (numpy or torch) or (N,3,H,W)/(3,H,W) torch -> grey with OpenCV's exact arithmetic.

    uint8 stays uint8 (bit-exact with cv2); float inputs give float32. Channel order is ``order``.
    """
    if order not in ORDERS:
        raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"to_gray expects an HxWx3 array, got shape {image.shape}")
        chans = [image[..., i] for i in range(3)]
        r, g, b = chans if order == "rgb" else chans[::-1]
        if image.dtype == np.uint8:
            r, g, b = (c.astype(np.int32) for c in (r, g, b))
            acc = r * _FIXED[0] + g * _FIXED[1] + b * _FIXED[2]
            return ((acc + (1 << (_SHIFT - 1))) >> _SHIFT).astype(np.uint8)
        if image.dtype.kind != "f":
            raise ValueError(f"to_gray supports uint8 or floating arrays, got dtype {image.dtype}")
        r, g, b = (c.astype(np.float32) for c in (r, g, b))
        return (b * np.float32(_FLOAT[2]) + g * np.float32(_FLOAT[1]) + r * np.float32(_FLOAT[0])).astype(
            np.float32
        )
    if isinstance(image, torch.Tensor):
        if image.ndim == 3 and image.shape[-1] == 3:
            dim = -1
        elif image.ndim in (3, 4) and image.shape[-3] == 3:
            dim = -3
        else:
            raise ValueError(f"to_gray expects HxWx3, 3xHxW or Nx3xHxW tensors, got {tuple(image.shape)}")
        chans = image.unbind(dim)
        r, g, b = chans if order == "rgb" else chans[::-1]
        if image.dtype == torch.uint8:
            acc = r.int() * _FIXED[0] + g.int() * _FIXED[1] + b.int() * _FIXED[2]
            out = ((acc + (1 << (_SHIFT - 1))) >> _SHIFT).to(torch.uint8)
        elif image.is_floating_point():
            r, g, b = (c.float() for c in (r, g, b))
            out = b * _FLOAT[2] + g * _FLOAT[1] + r * _FLOAT[0]
        else:
            raise ValueError(f"to_gray supports uint8 or floating tensors, got dtype {image.dtype}")
        return out.unsqueeze(-3) if dim == -3 and image.ndim == 4 else out
    raise ValueError(f"to_gray expects a numpy array or torch tensor, got {type(image).__name__}")
