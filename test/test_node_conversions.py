"""Image <-> numpy/torch conversions against hand-built buffers, with cv2.cvtColor as the channel oracle."""

import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from mtl_perception.ros.conversions import (
    ImageConversionError,
    array_to_image_fields,
    image_fields_to_array,
    image_to_array,
    image_to_rgb,
    image_to_tensor,
    validate_image,
)

RNG = np.random.default_rng(0)


def make_msg(pixels: np.ndarray, encoding: str, pad: int = 0, container=bytes):
    """Hand-build an Image-like message with `pad` junk bytes at the end of every row."""
    h, w = pixels.shape[:2]
    row = pixels.reshape(h, -1)
    junk = np.full((h, pad), 0xAB, np.uint8)
    buf = np.concatenate([row, junk], axis=1)
    data = container(buf.tobytes()) if container is not np.ndarray else buf.reshape(-1).copy()
    step = row.shape[1] + pad
    return SimpleNamespace(height=h, width=w, encoding=encoding, step=step, is_bigendian=0, data=data)


@pytest.mark.parametrize("pad", [0, 5])
@pytest.mark.parametrize(
    "encoding, channels, code",
    [
        ("rgb8", 3, None),
        ("bgr8", 3, cv2.COLOR_BGR2RGB),
        ("rgba8", 4, cv2.COLOR_RGBA2RGB),
        ("bgra8", 4, cv2.COLOR_BGRA2RGB),
        ("mono8", 1, cv2.COLOR_GRAY2RGB),
    ],
)
def test_to_rgb_matches_cv2(encoding, channels, code, pad):
    pixels = RNG.integers(0, 256, (7, 11, channels), dtype=np.uint8)
    msg = make_msg(pixels, encoding, pad)
    native = image_to_array(msg)
    assert native.shape == (7, 11, channels)
    np.testing.assert_array_equal(native, pixels)
    source = np.ascontiguousarray(pixels[:, :, 0] if channels == 1 else pixels)
    expected = pixels if code is None else cv2.cvtColor(source, code)
    rgb = image_to_rgb(msg)
    np.testing.assert_array_equal(rgb, expected)
    tensor = image_to_tensor(msg, "cpu")
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == (7, 11, 3)
    np.testing.assert_array_equal(tensor.numpy(), expected)


def test_views_do_not_copy():
    """rgb8 and bgr8 arrays share memory with the message buffer (no needless copy)."""
    pixels = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    for encoding in ("rgb8", "bgr8"):
        msg = make_msg(pixels, encoding, pad=2, container=bytearray)
        buffer = np.frombuffer(msg.data, np.uint8)
        assert np.shares_memory(image_to_rgb(msg), buffer)
        assert np.shares_memory(image_to_array(msg), buffer)


def test_rosbags_and_rclpy_style_buffers():
    """numpy `data` (rosbags) and array.array('B') (rclpy) both convert."""
    import array

    pixels = RNG.integers(0, 256, (3, 5, 3), dtype=np.uint8)
    np.testing.assert_array_equal(image_to_rgb(make_msg(pixels, "rgb8", container=np.ndarray)), pixels)
    msg = make_msg(pixels, "rgb8")
    msg.data = array.array("B", msg.data)
    np.testing.assert_array_equal(image_to_rgb(msg), pixels)


@pytest.mark.parametrize(
    "change, cause",
    [
        ({"encoding": "16UC1"}, "unsupported image encoding '16UC1'"),
        ({"encoding": "yuv422"}, "unsupported image encoding"),
        ({"height": 0}, "zero-size"),
        ({"width": 0, "step": 0}, "zero-size"),
        ({"step": 10}, "step 10 is smaller than width*channels"),
        ({"data": b"\x00" * 17}, "data length 17 != step*height"),
    ],
)
def test_bad_messages_name_the_cause(change, cause):
    msg = make_msg(RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8), "rgb8")
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(ImageConversionError, match=cause.replace("*", r"\*").replace("(", r"\(")):
        image_to_rgb(msg)
    assert issubclass(ImageConversionError, ValueError)


def test_max_pixels_enforced():
    msg = make_msg(np.zeros((10, 10, 1), np.uint8), "mono8")
    assert validate_image(msg, max_pixels=100).width == 10
    with pytest.raises(ImageConversionError, match="exceeds max_image_pixels = 99"):
        image_to_tensor(msg, "cpu", max_pixels=99)


@pytest.mark.parametrize(
    "encoding, array",
    [
        ("32FC1", RNG.standard_normal((5, 7)).astype(np.float32)),
        ("32FC2", RNG.standard_normal((5, 7, 2)).astype(np.float32)),
        ("mono8", RNG.integers(0, 256, (5, 7), dtype=np.uint8)),
        ("rgb8", RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)),
    ],
)
def test_array_to_image_fields_roundtrip(encoding, array):
    fields = array_to_image_fields(array, encoding)
    channels = 1 if array.ndim == 2 else array.shape[2]
    assert fields["encoding"] == encoding
    assert (fields["height"], fields["width"]) == (5, 7)
    assert fields["step"] == 7 * channels * array.itemsize
    assert fields["is_bigendian"] == int(sys.byteorder == "big")
    assert len(fields["data"]) == fields["step"] * 5
    assert bytes(fields["data"]) == array.tobytes()  # independent oracle: numpy's own byte layout
    back = image_fields_to_array(SimpleNamespace(**fields))
    np.testing.assert_array_equal(back, array)


def test_nan_survives_32fc1():
    depth = np.array([[1.5, np.nan], [np.inf, 80.0]], np.float32)
    back = image_fields_to_array(SimpleNamespace(**array_to_image_fields(depth, "32FC1")))
    np.testing.assert_array_equal(np.isnan(back), np.isnan(depth))
    assert back[1, 1] == 80.0 and np.isinf(back[1, 0])


def test_big_endian_float_is_decoded():
    depth = np.arange(6, dtype=np.float32).reshape(2, 3)
    msg = SimpleNamespace(
        height=2, width=3, encoding="32FC1", step=12, is_bigendian=1, data=depth.astype(">f4").tobytes()
    )
    np.testing.assert_array_equal(image_fields_to_array(msg), depth)


@pytest.mark.parametrize(
    "array, encoding, cause",
    [
        (np.zeros((2, 2), np.float64), "32FC1", "needs dtype float32"),
        (np.zeros((2, 2, 3), np.uint8), "mono8", "needs shape"),
        (np.zeros((2, 2), np.uint8), "bgr8", "cannot write encoding 'bgr8'"),
        (np.zeros((0, 2), np.float32), "32FC1", "zero-size"),
    ],
)
def test_array_to_image_fields_rejects(array, encoding, cause):
    with pytest.raises(ImageConversionError, match=cause):
        array_to_image_fields(array, encoding)


def test_fields_fit_a_real_rclpy_image():
    """The fields are accepted by the real sensor_msgs/Image (with and without rclpy field checks)."""
    Image = pytest.importorskip("sensor_msgs.msg").Image
    rgb = RNG.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    msg = Image(**array_to_image_fields(rgb, "rgb8"))
    np.testing.assert_array_equal(image_to_rgb(msg), rgb)
    checked = Image(check_fields=True, **array_to_image_fields(rgb, "rgb8"))
    np.testing.assert_array_equal(image_fields_to_array(checked), rgb)


def test_real_rosbags_message_converts():
    """A sensor_msgs/Image from the rosbags typestore (numpy `data`) converts like an rclpy one."""
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_JAZZY)
    Image, Header, Time = (
        store.types[n]
        for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header", "builtin_interfaces/msg/Time")
    )
    pixels = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    padded = np.concatenate([pixels.reshape(5, 18), np.zeros((5, 2), np.uint8)], axis=1)
    msg = Image(
        header=Header(stamp=Time(sec=1, nanosec=2), frame_id="cam"),
        height=5,
        width=6,
        encoding="bgr8",
        is_bigendian=0,
        step=20,
        data=padded.reshape(-1),
    )
    raw = store.serialize_cdr(msg, Image.__msgtype__)
    back = store.deserialize_cdr(raw, Image.__msgtype__)
    np.testing.assert_array_equal(image_to_rgb(back), cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB))


def test_scaled_camera_info_follows_image_proc_resize():
    msgs = pytest.importorskip("sensor_msgs.msg")
    from mtl_perception.ros.conversions import scaled_camera_info_fields

    info = msgs.CameraInfo(width=2048, height=1024, distortion_model="plumb_bob", d=[0.1, 0, 0, 0, 0])
    info.k = [2262.5, 0.0, 1096.9, 0.0, 2265.3, 513.1, 0.0, 0.0, 1.0]
    info.p = [2262.5, 0.0, 1096.9, -473.6, 0.0, 2265.3, 513.1, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = 100, 50, 1000, 500
    scaled = msgs.CameraInfo(**scaled_camera_info_fields(info, 2048, 1024, 768, 384))
    s = 768 / 2048
    assert (scaled.width, scaled.height) == (768, 384) and scaled.distortion_model == "plumb_bob"
    np.testing.assert_allclose(scaled.k, [2262.5 * s, 0, 1096.9 * s, 0, 2265.3 * s, 513.1 * s, 0, 0, 1])
    np.testing.assert_allclose(
        scaled.p, [2262.5 * s, 0, 1096.9 * s, -473.6 * s, 0, 2265.3 * s, 513.1 * s, 0, 0, 0, 1, 0]
    )
    assert (scaled.roi.x_offset, scaled.roi.y_offset, scaled.roi.width, scaled.roi.height) == (
        37,
        18,
        375,
        187,
    )
    np.testing.assert_allclose(scaled.d, info.d)


def test_camera_info_roi_outside_the_image_is_clamped_and_named():
    """A ROI of 5e7 on a 2x2 image scaled to 192x384 would wrap a uint32; it is clamped to the output."""
    CameraInfo = pytest.importorskip("sensor_msgs.msg").CameraInfo  # noqa: N806 - the message class
    from mtl_perception.ros.conversions import roi_outside_image, scaled_camera_info_fields

    info = CameraInfo(width=2, height=2)
    info.roi.x_offset, info.roi.width, info.roi.height = 0, 50_000_000, 1
    fields = scaled_camera_info_fields(info, 2, 2, 384, 192)
    roi = fields["roi"]
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height) == (0, 0, 384, 96)
    CameraInfo(**fields)  # every field fits its message type
    assert "50000000" in roi_outside_image(info, 2, 2) and "2x2" in roi_outside_image(info, 2, 2)
    info.roi.width = 2
    assert roi_outside_image(info, 2, 2) is None
