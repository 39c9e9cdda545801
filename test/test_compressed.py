"""Compressed frames (mtl_perception.compressed) against independent codecs: real JPEG / PNG bytes written by
OpenCV and by Pillow, decoded here and compared with Pillow's own decode of the same bytes."""

import enum
import io
import sys
import types

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from mtl_perception.compressed import (
    CompressedFormat,
    CompressedImageError,
    FrameDecoder,
    SizeGuard,
    choose_fastest,
    parse_format,
    torchvision_jpeg_available,
)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """A real photograph (scikit-image's rocket.jpg), 120x160 RGB."""
    from skimage import data

    return np.ascontiguousarray(cv2.resize(data.rocket(), (160, 120), interpolation=cv2.INTER_AREA))


def pillow_bytes(rgb: np.ndarray, kind: str, **options) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, kind, **options)
    return buffer.getvalue()


def opencv_bytes(bgr: np.ndarray, ext: str, *params) -> bytes:
    ok, encoded = cv2.imencode(ext, bgr, list(params))
    assert ok
    return encoded.tobytes()


def pillow_decode(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", "bgr8; jpeg compressed bgr8", ""])
@pytest.mark.parametrize("writer", ["opencv", "pillow"])
def test_jpeg_decodes_to_rgb_like_pillow(photo, fmt, writer):
    if writer == "opencv":
        data = opencv_bytes(photo[:, :, ::-1], ".jpg", cv2.IMWRITE_JPEG_QUALITY, 90)
    else:
        data = pillow_bytes(photo, "JPEG", quality=90)
    image = FrameDecoder("cpu").decode(data, fmt)
    assert image.shape == (120, 160, 3) and image.dtype == np.uint8
    # the same libjpeg family; the IDCT may differ by a grey level between builds
    np.testing.assert_allclose(image.astype(int), pillow_decode(data).astype(int), atol=2)
    assert np.abs(image.astype(int) - photo).mean() < 6  # and it is the photo, channels in RGB order


@pytest.mark.parametrize("fmt", ["png", "rgb8; png compressed bgr8", "bgra8; png compressed bgra8"])
def test_png_from_both_writers_is_exact(photo, fmt):
    for data in (opencv_bytes(photo[:, :, ::-1], ".png"), pillow_bytes(photo, "PNG")):
        np.testing.assert_array_equal(FrameDecoder("cpu").decode(data, fmt), photo)
    rgba = np.dstack([photo, np.full(photo.shape[:2], 200, np.uint8)])
    np.testing.assert_array_equal(FrameDecoder("cpu").decode(pillow_bytes(rgba, "PNG"), fmt), photo)


def test_compressed_rgb_order_and_grey(photo):
    """'... compressed rgb8': the codec holds RGB where OpenCV expects BGR (what compressed_image_transport's
    subscriber then leaves unswapped); mono8 becomes three equal channels."""
    swapped = opencv_bytes(photo, ".png")  # OpenCV writes the RGB array as if it were BGR
    np.testing.assert_array_equal(FrameDecoder("cpu").decode(swapped, "rgb8; png compressed rgb8"), photo)
    grey = cv2.cvtColor(photo, cv2.COLOR_RGB2GRAY)
    out = FrameDecoder("cpu").decode(pillow_bytes(grey, "JPEG", quality=95), "mono8; jpeg compressed mono8")
    assert out.shape == (120, 160, 3)
    assert np.array_equal(out[..., 0], out[..., 1]) and np.array_equal(out[..., 1], out[..., 2])
    assert np.abs(out[..., 0].astype(int) - grey).mean() < 3


def test_format_strings():
    assert parse_format("rgb8; jpeg compressed bgr8") == CompressedFormat("jpeg", "rgb8", False)
    assert parse_format("rgb8; png compressed rgb8") == CompressedFormat("png", "rgb8", True)
    assert parse_format("JPEG").compression == "jpeg" and parse_format("jpg").compression == "jpeg"
    assert parse_format("", b"\x89PNG\r\n\x1a\n....").compression == "png"


@pytest.mark.parametrize(
    "fmt, data, message",
    [
        ("jpeg", b"", "0 bytes"),
        ("h264", b"\x00\x00\x01", "unsupported compressed format 'h264'"),
        ("16UC1; compressedDepth png", b"\x89PNG", "unsupported compressed format"),
        ("rgb8", b"\xff\xd8\xff", "unsupported compressed format 'rgb8'"),
        ("mono16; png compressed mono16", b"\x89PNG", "16-bit image"),
        ("", b"garbage!", "neither a JPEG nor a PNG"),
        ("jpeg", b"\x89PNG\r\n\x1a\n" + b"x" * 20, "format says jpeg but the data is png"),
        ("png", b"GIF89a" + b"x" * 20, "format says png but the data is data starting 47 49 46 38"),
        ("jpeg", b"\xff\xd8\xff\xe0" + b"\x11" * 100 + b"\xff\xd9", "corrupt JPEG"),
    ],
)
def test_bad_data_is_named(fmt, data, message):
    with pytest.raises(CompressedImageError, match=message):
        FrameDecoder("cpu").decode(data, fmt)


def test_truncated_frames_are_refused_and_padding_is_not(photo):
    jpeg = pillow_bytes(photo, "JPEG", quality=90)
    png = pillow_bytes(photo, "PNG")
    decoder = FrameDecoder("cpu")
    for cut in (jpeg[: len(jpeg) // 2], jpeg[:-2], jpeg[:-1]):
        with pytest.raises(CompressedImageError, match="truncated JPEG"):
            decoder.decode(cut, "jpeg")
    for cut in (png[: len(png) // 2], png[:-1]):
        with pytest.raises(CompressedImageError, match="truncated PNG"):
            decoder.decode(cut, "png")
    padded = decoder.decode(jpeg + bytes(16), "jpeg")  # zero padding after EOI (hardware encoders)
    np.testing.assert_array_equal(padded, decoder.decode(jpeg, "jpeg"))


def test_pixel_limit(photo):
    with pytest.raises(CompressedImageError, match="exceeds max_image_pixels = 100"):
        FrameDecoder("cpu", max_pixels=100).decode(pillow_bytes(photo, "PNG"), "png")


def test_size_guard_drops_a_lone_size_change_and_takes_a_lasting_one():
    guard = SizeGuard()
    guard.check((120, 160))
    guard.check((120, 160))
    with pytest.raises(CompressedImageError, match="size changed mid-stream to 80x60 from 160x120"):
        guard.check((60, 80))
    guard.check((120, 160))  # a glitch: the stream goes on at its size
    with pytest.raises(CompressedImageError):
        guard.check((60, 80))
    guard.check((60, 80))  # twice in a row: the camera's new size
    assert guard.size == (60, 80)
    with pytest.raises(CompressedImageError, match="from 80x60"):
        guard.check((120, 160))


def test_choose_fastest_measures_and_skips_failures():
    ticks = iter(range(1000))
    cost = {"slow": 5, "fast": 2}
    now = [0.0]

    def clock():
        next(ticks)
        return now[0]

    def make(name):
        def run():
            now[0] += cost[name] * 1e-3

        return run

    def broken():
        raise RuntimeError("no nvJPEG")

    name, measured = choose_fastest({"slow": make("slow"), "fast": make("fast"), "gpu": broken}, clock=clock)
    assert name == "fast" and measured == pytest.approx({"slow": 5.0, "fast": 2.0})
    assert choose_fastest({"cv2": broken}) == ("cv2", {})  # one candidate: nothing to measure


@pytest.fixture
def fake_torchvision(monkeypatch):
    """torchvision.io's decode_jpeg / ImageReadMode as documented (CPU bytes in, (3, H, W) RGB on
    ``device`` out), recording its calls; Pillow decodes."""
    calls = []

    class ImageReadMode(enum.Enum):
        UNCHANGED = 0
        RGB = 3

    def decode_jpeg(input, mode=ImageReadMode.UNCHANGED, device="cpu", apply_exif_orientation=False):
        calls.append((input, mode, torch.device(device)))
        assert input.device.type == "cpu" and input.dtype == torch.uint8 and input.ndim == 1
        return torch.from_numpy(pillow_decode(input.numpy().tobytes()).copy()).permute(2, 0, 1)

    io_module = types.ModuleType("torchvision.io")
    io_module.decode_jpeg, io_module.ImageReadMode = decode_jpeg, ImageReadMode
    package = types.ModuleType("torchvision")
    package.io = io_module
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.io", io_module)
    return calls, ImageReadMode


def test_torchvision_branch_calls_decode_jpeg_on_the_device(photo, fake_torchvision):
    calls, modes = fake_torchvision
    assert torchvision_jpeg_available(torch.device("cuda:0"))
    assert not torchvision_jpeg_available(torch.device("cpu"))  # the CPU keeps OpenCV
    assert FrameDecoder("cpu").name == "cv2"
    data = pillow_bytes(photo, "JPEG", quality=90)
    decoder = FrameDecoder("cuda:0", decoder="torchvision")
    image = decoder.decode(data, "rgb8; jpeg compressed bgr8")
    ((tensor, mode, device),) = calls
    assert mode is modes.RGB and device == torch.device("cuda:0") and bytes(tensor.numpy()) == data
    np.testing.assert_array_equal(image.numpy(), pillow_decode(data))  # (H, W, 3), RGB
    swapped = opencv_bytes(photo, ".jpg", cv2.IMWRITE_JPEG_QUALITY, 95)
    out = decoder.decode(swapped, "rgb8; jpeg compressed rgb8")
    assert np.abs(out.numpy().astype(int) - photo).mean() < 6
    png = decoder.decode(pillow_bytes(photo, "PNG"), "png")  # PNG always through OpenCV
    assert isinstance(png, np.ndarray) and len(calls) == 2


def test_auto_measures_on_the_first_jpeg_and_keeps_the_faster(photo, fake_torchvision, monkeypatch):
    """On CUDA with torchvision: both decoders timed on the first JPEG (here the OpenCV candidate cannot
    upload to the absent GPU, so it drops out), the choice kept for the stream; a PNG decides nothing."""
    calls, _ = fake_torchvision
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: None)
    decoder = FrameDecoder("cuda:0")
    assert decoder.name == "cv2" and not decoder.measured_ms
    decoder.decode(pillow_bytes(photo, "PNG"), "png")
    assert decoder.name == "cv2" and not calls
    decoder.decode(pillow_bytes(photo, "JPEG", quality=90), "jpeg")
    assert decoder.name == "torchvision" and set(decoder.measured_ms) == {"torchvision"}
    timed = len(calls)
    decoder.decode(pillow_bytes(photo, "JPEG", quality=80), "jpeg")
    assert len(calls) == timed + 1  # measured once: from now on one decode per frame
