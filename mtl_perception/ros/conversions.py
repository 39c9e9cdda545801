"""sensor_msgs/Image <-> numpy / torch without cv_bridge and without needless copies.

Why hand-written: ROS 2 ``cv_bridge`` is not installable from PyPI (and the apt build is tied to numpy<2),
the PyPI ``cv-bridge`` is a broken ROS 1 copy, and ``rosbags-image`` only reads. The conversion itself is a
reshape of the message buffer, so a few lines of numpy keep it zero-copy on the way in.

Duck-typed: any object with ``height, width, encoding, step, is_bigendian, data`` works, so the same code
converts rclpy messages (``data`` is an ``array.array('B')``) and rosbags messages (``data`` is a numpy
array). This module deliberately does not import rclpy.
"""

from __future__ import annotations

import array
import sys
import warnings
from dataclasses import dataclass

import numpy as np
import torch

#: Input encodings the node accepts and their channel count (8-bit only; anything else is rejected).
INPUT_CHANNELS: dict[str, int] = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}

#: Output encodings this module writes: (numpy dtype, channels).
OUTPUT_FORMATS: dict[str, tuple[np.dtype, int]] = {
    "32FC1": (np.dtype(np.float32), 1),
    "32FC2": (np.dtype(np.float32), 2),
    "mono8": (np.dtype(np.uint8), 1),
    "rgb8": (np.dtype(np.uint8), 3),
}

#: Default ceiling on width*height: 8192 x 8192 guards against absurd headers allocating gigabytes.
DEFAULT_MAX_PIXELS = 8192 * 8192

_IS_BIGENDIAN = int(sys.byteorder == "big")


class ImageConversionError(ValueError):
    """An Image message that cannot be converted; the message names the cause."""


@dataclass(frozen=True)
class ImageLayout:
    """Validated geometry of an input Image message."""

    height: int
    width: int
    channels: int
    step: int
    encoding: str


def validate_image(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageLayout:
    """Check that ``msg`` describes a consistent 8-bit image this package can use; raise otherwise."""
    encoding = str(msg.encoding)
    channels = INPUT_CHANNELS.get(encoding)
    if channels is None:
        raise ImageConversionError(
            f"unsupported image encoding {encoding!r}; expected one of {sorted(INPUT_CHANNELS)}"
        )
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"zero-size image ({width}x{height})")
    if height * width > max_pixels:
        raise ImageConversionError(
            f"image {width}x{height} = {height * width} pixels exceeds max_image_pixels = {max_pixels}"
        )
    if step < width * channels:
        raise ImageConversionError(
            f"step {step} is smaller than width*channels = {width}*{channels} = {width * channels}"
        )
    size = len(msg.data)
    if size != step * height:
        raise ImageConversionError(
            f"data length {size} != step*height = {step}*{height} = {step * height} "
            "(truncated or over-long buffer)"
        )
    return ImageLayout(height, width, channels, step, encoding)


def _rows(msg, layout: ImageLayout) -> np.ndarray:
    """The message buffer as a (height, step) uint8 view (no copy)."""
    return np.frombuffer(msg.data, dtype=np.uint8).reshape(layout.height, layout.step)


def image_to_array(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, C) uint8 view of the message in its own channel order (no copy; row padding sliced off)."""
    layout = validate_image(msg, max_pixels)
    rows = _rows(msg, layout)[:, : layout.width * layout.channels]
    return rows.reshape(layout.height, layout.width, layout.channels)


def image_to_rgb(msg, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """(H, W, 3) uint8 RGB array; a strided view of the buffer wherever numpy can express the reorder.

    mono8 is broadcast to three channels (a read-only view); bgr/bgra use a reversed channel view.
    """
    native = image_to_array(msg, max_pixels)
    encoding = str(msg.encoding)
    if encoding == "rgb8":
        return native
    if encoding == "rgba8":
        return native[:, :, :3]
    if encoding in ("bgr8", "bgra8"):
        return native[:, :, 2::-1]
    return np.broadcast_to(native, (*native.shape[:2], 3))


def image_to_tensor(
    msg, device: torch.device | str = "cpu", max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor:
    """(H, W, 3) uint8 RGB tensor on ``device`` with exactly one host->device copy.

    The whole (height, step) buffer travels as one contiguous block; row padding is sliced off and the
    channels are reordered on the device, so a GPU never waits for a host-side gather.
    """
    layout = validate_image(msg, max_pixels)
    rows = _rows(msg, layout)
    with warnings.catch_warnings():
        # bytes buffers are read-only; the tensor is only read (resized into new memory), never written.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        host = torch.from_numpy(rows)
    dev = host.to(device, non_blocking=False)
    native = dev[:, : layout.width * layout.channels].reshape(layout.height, layout.width, layout.channels)
    if layout.encoding == "rgb8":
        return native
    if layout.encoding == "rgba8":
        return native[:, :, :3]
    if layout.encoding in ("bgr8", "bgra8"):
        return native[:, :, :3].flip(-1)  # one copy kernel (advanced indexing is ~4x slower on the CPU)
    return native.expand(layout.height, layout.width, 3)


def array_to_image_fields(image: np.ndarray, encoding: str) -> dict:
    """Fields (height, width, encoding, is_bigendian, step, data) of an Image holding ``image``.

    ``data`` is an ``array.array('B')`` filled by one memcpy. rclpy's Image setter keeps such an array as
    is when the message has field checks on (``Image(check_fields=True)``, what the node uses) and copies it
    once more otherwise (a memcpy, never element by element).
    """
    fmt = OUTPUT_FORMATS.get(encoding)
    if fmt is None:
        raise ImageConversionError(f"cannot write encoding {encoding!r}; supported: {sorted(OUTPUT_FORMATS)}")
    dtype, channels = fmt
    image = np.asarray(image)
    if image.dtype != dtype:
        raise ImageConversionError(f"{encoding} needs dtype {dtype}, got {image.dtype}")
    expected_ndim = 2 if channels == 1 else 3
    if image.ndim == 3 and channels == 1 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim != expected_ndim or (channels > 1 and image.shape[2] != channels):
        wanted = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ImageConversionError(f"{encoding} needs shape {wanted}, got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ImageConversionError(f"zero-size image {image.shape}")
    image = np.ascontiguousarray(image)
    data = array.array("B")
    data.frombytes(memoryview(image).cast("B"))
    height, width = image.shape[:2]
    return {
        "height": height,
        "width": width,
        "encoding": encoding,
        "is_bigendian": _IS_BIGENDIAN,
        "step": width * channels * dtype.itemsize,
        "data": data,
    }


def fill_image(msg, image: np.ndarray, encoding: str, header=None):
    """Write ``image`` into the Image-like ``msg`` (and copy ``header`` if given); returns ``msg``."""
    for key, value in array_to_image_fields(image, encoding).items():
        setattr(msg, key, value)
    if header is not None:
        msg.header = header
    return msg


def image_fields_to_array(msg) -> np.ndarray:
    """Inverse of :func:`array_to_image_fields` for the output encodings (used by tests and replay tools).

    Returns (H, W) for one channel and (H, W, C) otherwise, honouring ``step`` padding and byte order.
    """
    fmt = OUTPUT_FORMATS.get(str(msg.encoding))
    if fmt is None:
        raise ImageConversionError(
            f"unsupported encoding {msg.encoding!r}; supported: {sorted(OUTPUT_FORMATS)}"
        )
    dtype, channels = fmt
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    row_bytes = width * channels * dtype.itemsize
    if height <= 0 or width <= 0:
        raise ImageConversionError(f"zero-size image ({width}x{height})")
    if step < row_bytes or len(msg.data) != step * height:
        raise ImageConversionError(
            f"inconsistent image: step {step}, width {width}, {channels}x{dtype} per pixel, "
            f"data length {len(msg.data)} != step*height {step * height}"
        )
    rows = np.frombuffer(msg.data, dtype=np.uint8).reshape(height, step)[:, :row_bytes]
    if dtype.itemsize > 1:
        order = ">" if msg.is_bigendian else "<"
        rows = np.ascontiguousarray(rows).view(dtype.newbyteorder(order))
    pixels = rows.reshape(height, width, channels)
    return pixels[:, :, 0] if channels == 1 else pixels


def scaled_camera_info_fields(
    info, image_width: int, image_height: int, out_width: int, out_height: int
) -> dict:
    """CameraInfo fields for an image resized from (image_width, image_height) to (out_width, out_height).

    Same arithmetic as image_proc's ``resize`` node (K and P focal lengths, principal point and Tx
    scaled per axis; ROI scaled), so depth_image_proc sees the geometry it expects. ``header`` is left
    to the caller (it must be the image's header). A ROI reaching outside the image is clamped to the
    output image (a uint32 field would otherwise wrap); :func:`roi_outside_image` tells the caller to warn.
    """
    sx, sy = out_width / image_width, out_height / image_height
    k = list(info.k)
    k[0], k[2], k[4], k[5] = k[0] * sx, k[2] * sx, k[4] * sy, k[5] * sy
    p = list(info.p)
    p[0], p[2], p[3], p[5], p[6] = p[0] * sx, p[2] * sx, p[3] * sx, p[5] * sy, p[6] * sy
    roi = info.roi
    x_offset = _clamp(int(roi.x_offset * sx), out_width)
    y_offset = _clamp(int(roi.y_offset * sy), out_height)
    scaled_roi = type(roi)(
        x_offset=x_offset,
        y_offset=y_offset,
        width=_clamp(int(roi.width * sx), out_width - x_offset),
        height=_clamp(int(roi.height * sy), out_height - y_offset),
        do_rectify=roi.do_rectify,
    )
    return {
        "height": int(out_height),
        "width": int(out_width),
        "distortion_model": info.distortion_model,
        "d": list(info.d),
        "k": k,
        "r": list(info.r),
        "p": p,
        "binning_x": info.binning_x,
        "binning_y": info.binning_y,
        "roi": scaled_roi,
    }


def _clamp(value: int, high: int) -> int:
    return min(max(int(value), 0), max(int(high), 0))


def roi_outside_image(info, image_width: int, image_height: int) -> str | None:
    """Why the CameraInfo ROI does not fit an image of this size (None when it does)."""
    roi = info.roi
    if roi.x_offset + roi.width > image_width or roi.y_offset + roi.height > image_height:
        return (
            f"camera_info ROI (x_offset {roi.x_offset}, y_offset {roi.y_offset}, width {roi.width}, "
            f"height {roi.height}) reaches outside the {image_width}x{image_height} image; "
            "depth/camera_info carries it clamped to the output image"
        )
    return None
