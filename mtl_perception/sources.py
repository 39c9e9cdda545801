"""Camera frames from files, for ``mtl_infer``: a video (whatever OpenCV's FFmpeg reads), a folder of images,
or a rosbag2 folder (raw or compressed camera topic). No ROS import (bags are read with ``rosbags``).

Each source yields :class:`SourceFrame` in order: an (H, W, 3) uint8 RGB image and its capture time in
seconds -- the container's timestamps for a video (``--fps`` replaces them), the header stamps for a bag,
``index / fps`` for a folder (sorted by name) -- or, for a frame that cannot be read, ``problem`` naming why.
A source that cannot be opened at all raises ValueError / FileNotFoundError naming it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.compressed import FrameDecoder
from mtl_perception.data.bag_reader import (
    DamagedBagError,
    choose_image_topic,
    open_bag,
    read_messages,
    reason,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")
#: frame rate assumed for a folder of images without --fps: Cityscapes' 17 Hz, what the shipped model saw
DEFAULT_FOLDER_FPS = 17.0
#: a video read that fails before the container's frame count: this many more tries before giving up
VIDEO_RETRIES = 10


@dataclass
class SourceFrame:
    index: int  # position in the source, from 0
    name: str  # the prefix of this frame's output files
    stamp: float  # capture time, seconds
    image: np.ndarray | None = None  # (H, W, 3) uint8 RGB
    problem: str | None = None  # why there is no image


@dataclass
class Source:
    """An opened source: what it is (``info``, for summary.json), its length when known, its frames."""

    info: dict
    total: int | None
    fps: float  # the rate for the preview video
    frames: Iterator[SourceFrame]
    _closer: ExitStack = field(default_factory=ExitStack)

    def close(self) -> None:
        self._closer.close()


def open_source(path: str | Path, *, fps: float | None = None, topic: str | None = None) -> Source:
    """A rosbag2 folder (has metadata.yaml), another folder (images) or a file (video)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file or folder: {path}")
    if path.is_dir() and (path / "metadata.yaml").is_file():
        return _bag(path, topic)
    if topic is not None:
        raise ValueError(f"--topic is for a rosbag2 folder; {path} is not one (no metadata.yaml)")
    if path.is_dir():
        return _folder(path, fps)
    return _video(path, fps)


def _video(path: Path, fps: float | None) -> Source:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise ValueError(f"{path}: not a video OpenCV can read (FFmpeg)")
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
    container_fps = capture.get(cv2.CAP_PROP_FPS) or 0.0
    size = (int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)), int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)))
    info = {
        "kind": "video",
        "path": str(path),
        "backend": capture.getBackendName(),
        "frames_in_source": total,
        "size": list(size),
        "container_fps": container_fps,
        "timestamps": f"index / --fps {fps}" if fps else "container (presentation time of each frame)",
    }
    source = Source(
        info, total, fps or container_fps or DEFAULT_FOLDER_FPS, _video_frames(capture, fps, total)
    )
    source._closer.callback(capture.release)
    return source


def _video_frames(capture, fps: float | None, total: int | None) -> Iterator[SourceFrame]:
    index = 0
    while True:
        ok, bgr = capture.read()
        failed = 0
        while not ok and total is not None and index + failed < total and failed < VIDEO_RETRIES:
            failed += 1  # before the container's end: a broken frame, or the start of a broken tail
            ok, bgr = capture.read()
        if failed:
            what = f"frames {index}-{index + failed - 1} do not decode" if ok else (
                f"the video ends at frame {index} of {total}: the rest does not decode"
            )  # fmt: skip
            yield SourceFrame(index, f"{index:06d}", 0.0, problem=what)
            index += failed
        if not ok:
            return
        stamp = index / fps if fps else capture.get(cv2.CAP_PROP_POS_MSEC) * 1e-3
        yield SourceFrame(index, f"{index:06d}", stamp, image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        index += 1


def _folder(path: Path, fps: float | None) -> Source:
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in the folder")
    stems = [p.stem for p in files]
    names = stems if len(set(stems)) == len(stems) else [p.name.replace(".", "_") for p in files]
    rate = fps or DEFAULT_FOLDER_FPS
    info = {
        "kind": "folder",
        "path": str(path),
        "frames_in_source": len(files),
        "timestamps": f"index / {rate} fps" + ("" if fps else " (assumed; give --fps)"),
    }
    return Source(info, len(files), rate, _folder_frames(files, names, rate))


def _folder_frames(files: list[Path], names: list[str], fps: float) -> Iterator[SourceFrame]:
    for index, (file, name) in enumerate(zip(files, names, strict=True)):
        bgr = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if bgr is None:
            yield SourceFrame(index, name, index / fps, problem=f"{file}: unreadable or truncated image")
            continue
        yield SourceFrame(index, name, index / fps, image=cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _bag(path: Path, topic: str | None) -> Source:
    closer = ExitStack()
    try:
        reader = closer.enter_context(open_bag(path))
        topic, msgtype = choose_image_topic(reader, topic)
        connections = [c for c in reader.connections if c.topic == topic]
        total = sum(c.msgcount for c in connections)
        if total == 0:
            raise ValueError(f"{path}: no messages on {topic}")
    except BaseException:
        closer.close()
        raise
    duration = max(reader.end_time - reader.start_time, 1) * 1e-9
    info = {
        "kind": "rosbag2",
        "path": str(path),
        "topic": topic,
        "msgtype": msgtype,
        "frames_in_source": total,
        "timestamps": "header stamps",
    }
    fps = (total - 1) / duration if total > 1 else DEFAULT_FOLDER_FPS
    source = Source(info, total, fps, _bag_frames(reader, connections))
    source._closer = closer
    return source


def _bag_frames(reader, connections) -> Iterator[SourceFrame]:
    from mtl_perception.ros.conversions import image_to_rgb  # rclpy-free, duck-typed on the fields

    decoder = FrameDecoder("cpu")
    messages = read_messages(reader, connections)
    index = 0
    while True:
        try:
            connection, _, raw = next(messages)
        except StopIteration:
            return
        except DamagedBagError as error:
            yield SourceFrame(index, f"{index:06d}", 0.0, problem=str(error))
            return
        name = f"{index:06d}"
        try:
            msg = reader.deserialize(raw, connection.msgtype)
        except Exception as error:  # the CDR deserializer raises whatever the bytes make it hit
            yield SourceFrame(index, name, 0.0, problem=f"message {index} does not decode ({reason(error)})")
            index += 1
            continue
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        try:
            if connection.msgtype.endswith("CompressedImage"):
                image = np.asarray(decoder.decode(msg.data, msg.format))
            else:
                image = np.ascontiguousarray(image_to_rgb(msg))
        except ValueError as error:
            yield SourceFrame(index, name, stamp, problem=f"message {index}: {error}")
        else:
            yield SourceFrame(index, name, stamp, image=image)
        index += 1
