"""Compressed camera frames (the ``data`` and ``format`` of sensor_msgs/CompressedImage: JPEG, PNG) -> RGB.

Used by the node (``image_transport: compressed``) and by ``mtl_infer`` on bags; no ROS import.

Format strings. compressed_image_transport writes ``"<encoding>; <jpeg|png> compressed <order>"``, e.g.
``"rgb8; jpeg compressed bgr8"``: an rgb8 camera whose JPEG holds the pixels in OpenCV's BGR order (its
publisher converts before encoding). Drivers and older publishers write ``"jpeg"`` or ``"png"``; an empty
format is recognised by the data's signature. As in compressed_image_transport's subscriber, the decoded
pixels are BGR unless the part after ';' says ``compressed rgb``. Refused: other codecs
(``compressedDepth``, h264, theora, ...) and 16-bit images (the node, like its raw input, takes 8-bit frames).

Checks before any decoder runs: 0 bytes, the signature of the declared codec, and its end marker (JPEG
EOI, PNG IEND). A frame cut in transit is refused by name instead of being decoded: older libjpeg builds
fill the missing part with grey and only warn, OpenCV 5 returns nothing without saying why.

Decoders: ``cv2.imdecode`` on the CPU; on CUDA, where torchvision is installed, its nvJPEG decoder
``torchvision.io.decode_jpeg(..., device=...)`` as well. :class:`FrameDecoder` measures both on the first
JPEG (decode into a tensor on the pipeline's device, the upload included) and keeps the faster, as
``flow.implementation: auto`` does for the flow (:func:`choose_fastest`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import cv2
import numpy as np
import torch

COMPRESSIONS = ("jpeg", "png")
DECODERS = ("cv2", "torchvision")
_SIGNATURES = {"jpeg": b"\xff\xd8\xff", "png": b"\x89PNG\r\n\x1a\n"}
_JPEG_END = b"\xff\xd9"
_PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: the last 8 bytes of every complete PNG


class CompressedImageError(ValueError):
    """A compressed frame that cannot be used; the message names the cause."""


@dataclass(frozen=True)
class CompressedFormat:
    """What a CompressedImage ``format`` (and, for an empty one, the data) says about the frame."""

    compression: str  # one of COMPRESSIONS
    encoding: str  # the camera's encoding before compression ("" when the format does not say)
    stored_rgb: bool  # the codec holds RGB where OpenCV expects BGR ("... compressed rgb8")


def parse_format(text: str, data: bytes | memoryview | np.ndarray = b"") -> CompressedFormat:
    """Parse a CompressedImage ``format``; CompressedImageError for a codec or depth the node cannot use."""
    text = str(text).strip()
    encoding, _, detail = (part.strip() for part in text.partition(";"))
    if not detail:  # "jpeg", "png", "" (a bare encoding name is not a codec: refused below)
        encoding, detail = "", encoding
    words = detail.lower().split()
    if not words:
        compression = _sniff(data)
        if compression is None:
            raise CompressedImageError("empty format and the data is neither a JPEG nor a PNG")
        return CompressedFormat(compression, "", False)
    compression = {"jpg": "jpeg"}.get(words[0], words[0])
    if compression not in COMPRESSIONS:
        raise CompressedImageError(
            f"unsupported compressed format {text!r}; expected jpeg or png "
            "(e.g. 'jpeg' or compressed_image_transport's 'rgb8; jpeg compressed bgr8')"
        )
    stored = words[2] if len(words) >= 3 and words[1] == "compressed" else ""
    if "16" in encoding or "16" in stored:
        raise CompressedImageError(f"16-bit image {text!r}; the node takes 8-bit camera images")
    return CompressedFormat(compression, encoding, stored.startswith("rgb"))


def _sniff(data) -> str | None:
    head = bytes(memoryview(data)[:8])
    return next((name for name, magic in _SIGNATURES.items() if head.startswith(magic)), None)


def check_data(fmt: CompressedFormat, data) -> np.ndarray:
    """The bytes as a uint8 array once they look like one complete image of ``fmt``; else why not."""
    array = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.view(np.uint8)
    if array.size == 0:
        raise CompressedImageError("0 bytes of image data")
    if not bytes(array[:8]).startswith(_SIGNATURES[fmt.compression]):
        found = _sniff(array) or f"data starting {bytes(array[:4]).hex(' ')}"
        raise CompressedImageError(f"format says {fmt.compression} but the data is {found}")
    if fmt.compression == "jpeg":
        # trailing zero padding after EOI is common from hardware encoders; anything cut before EOI is not
        if not bytes(array[-64:]).rstrip(b"\0").endswith(_JPEG_END):
            raise CompressedImageError(f"truncated JPEG: {array.size} bytes without the end-of-image marker")
    elif bytes(array[-8:]) != _PNG_END:
        raise CompressedImageError(f"truncated PNG: {array.size} bytes without the IEND chunk")
    return array


def decode_cv2(array: np.ndarray, fmt: CompressedFormat) -> np.ndarray:
    """(H, W, 3) uint8 RGB, contiguous, from checked bytes (:func:`check_data`); grey fills 3 channels."""
    image = cv2.imdecode(array, cv2.IMREAD_COLOR)
    if image is None:
        raise CompressedImageError(f"corrupt {fmt.compression.upper()}: OpenCV could not decode it")
    if not fmt.stored_rgb:
        cv2.cvtColor(image, cv2.COLOR_BGR2RGB, dst=image)
    return image


def decode_torchvision(array: np.ndarray, fmt: CompressedFormat, device: torch.device) -> torch.Tensor:
    """(H, W, 3) uint8 RGB tensor on ``device`` by ``torchvision.io.decode_jpeg`` (nvJPEG on CUDA)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    host = torch.from_numpy(array.copy())  # decode_jpeg takes a CPU tensor, whatever ``device`` is
    try:
        image = decode_jpeg(host, mode=ImageReadMode.RGB, device=device)
    except RuntimeError as error:
        raise CompressedImageError(f"corrupt JPEG: torchvision could not decode it ({error})") from error
    image = image.permute(1, 2, 0)  # (3, H, W) -> (H, W, 3); the upload's permute makes it contiguous again
    return image.flip(-1) if fmt.stored_rgb else image  # decode_jpeg gives true RGB, "compressed rgb" swapped


def torchvision_jpeg_available(device: torch.device) -> bool:
    """nvJPEG decoding is possible: ``device`` is CUDA and torchvision with decode_jpeg imports."""
    if torch.device(device).type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except (ImportError, RuntimeError, OSError):  # absent, or built for another torch
        return False
    return True


def choose_fastest(
    candidates: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 3,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[str, dict[str, float]]:
    """(the fastest candidate, {name: ms}): each runs once untimed (set-up), then the best of ``repeats``.

    A single candidate is returned without running it. A candidate that raises is left out.
    """
    if len(candidates) == 1:
        return next(iter(candidates)), {}
    costs: dict[str, float] = {}
    for name, run in candidates.items():
        try:
            run()
            best = float("inf")
            for _ in range(repeats):
                start = clock()
                run()
                best = min(best, clock() - start)
        except Exception:  # noqa: BLE001 -- a decoder that fails here is not chosen; it must not stop the node
            continue
        costs[name] = best * 1e3
    if not costs:
        return next(iter(candidates)), {}
    return min(costs, key=costs.get), costs


class SizeGuard:
    """Refuse a frame whose size differs from the stream's, unless the next frame has that size too.

    A compressed frame carries no size of its own, so a frame decoding to another size in the middle of a
    stream is dropped; a camera that really changed its resolution delivers the new size twice in a row,
    and the second frame is taken (the pipeline then restarts its flow history, as for a raw camera).
    """

    def __init__(self) -> None:
        self.size: tuple[int, int] | None = None
        self._candidate: tuple[int, int] | None = None

    def check(self, size: tuple[int, int]) -> None:
        size = tuple(int(v) for v in size)
        if self.size is None or size == self.size or size == self._candidate:
            self.size, self._candidate = size, None
            return
        self._candidate = size
        raise CompressedImageError(
            f"image size changed mid-stream to {size[1]}x{size[0]} from {self.size[1]}x{self.size[0]}; "
            "dropped (a size that repeats in the next frame is taken as the camera's new size)"
        )


class FrameDecoder:
    """CompressedImage bytes -> (H, W, 3) uint8 RGB for a pipeline on ``device``.

    ``decoder``: ``cv2``, ``torchvision`` (JPEG on CUDA only; PNG always goes to OpenCV) or ``auto``:
    cv2 on the CPU; on CUDA with torchvision, whichever decoded the first JPEG into a device tensor faster
    (:attr:`name`, :attr:`measured_ms` say which and why). ``max_pixels`` refuses larger images.
    """

    def __init__(
        self, device: torch.device | str = "cpu", *, decoder: str = "auto", max_pixels: int | None = None
    ) -> None:
        if decoder not in ("auto", *DECODERS):
            raise ValueError(f"decoder must be auto or one of {DECODERS}, got {decoder!r}")
        self.device = torch.device(device)
        self.max_pixels = max_pixels
        self.measured_ms: dict[str, float] = {}
        if decoder == "auto" and not torchvision_jpeg_available(self.device):
            decoder = "cv2"
        self._decided = decoder != "auto"
        self.name = "cv2" if decoder == "auto" else decoder

    def decode(self, data, format: str) -> np.ndarray | torch.Tensor:
        """Decode one frame; CompressedImageError names why it cannot be used."""
        fmt = parse_format(format, data)
        array = check_data(fmt, data)
        if fmt.compression == "jpeg" and not self._decided:
            self.name, self.measured_ms = choose_fastest(self._candidates(array, fmt))
            self._decided = bool(self.measured_ms)  # a JPEG no decoder could read decides nothing
        if fmt.compression == "jpeg" and self.name == "torchvision":
            image = decode_torchvision(array, fmt, self.device)
        else:
            image = decode_cv2(array, fmt)
        height, width = image.shape[:2]
        if self.max_pixels is not None and height * width > self.max_pixels:
            raise CompressedImageError(
                f"image {width}x{height} = {height * width} pixels exceeds "
                f"max_image_pixels = {self.max_pixels}"
            )
        return image

    def _candidates(self, array: np.ndarray, fmt: CompressedFormat) -> dict[str, Callable[[], object]]:
        device = self.device

        def synchronized(make: Callable[[], torch.Tensor]) -> Callable[[], object]:
            def run():
                tensor = make()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                return tensor

            return run

        return {
            "cv2": synchronized(lambda: torch.from_numpy(decode_cv2(array, fmt)).to(device)),
            "torchvision": synchronized(lambda: decode_torchvision(array, fmt, device)),
        }
