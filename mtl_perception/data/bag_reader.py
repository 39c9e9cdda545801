"""Reading other people's rosbag2 recordings (sqlite3 or MCAP) with ``rosbags``: open with one-line errors,
find the camera topics, the image_transport sibling camera_info. Shared by ``play_bag`` and ``mtl_infer``.

Bags without embedded message definitions (sqlite3 bags of older distributions) are read with the Jazzy
type store, which holds sensor_msgs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

#: the camera message types this package takes, raw and compressed
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")


class DamagedBagError(ValueError):
    """The bag cannot be opened or read to its end."""


def reason(error: BaseException) -> str:
    """One line: the exception's type and text (whitespace collapsed)."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@contextmanager
def open_bag(bag: str | Path) -> Iterator:
    """rosbags' AnyReader on ``bag``; its errors (and those of the storage file) become one line naming it."""
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    bag = Path(bag)
    if not (bag / "metadata.yaml").is_file():
        raise FileNotFoundError(f"not a rosbag2 directory (no metadata.yaml): {bag}")
    try:
        reader = AnyReader([bag], default_typestore=get_typestore(Stores.ROS2_JAZZY))
        reader.open()
    except Exception as error:  # AnyReaderError, sqlite3 and YAML errors, struct errors of a cut file
        raise DamagedBagError(f"{bag}: cannot open the bag ({reason(error)})") from error
    try:
        yield reader
    finally:
        reader.close()


def image_topics(reader) -> dict[str, str]:
    """{topic: message type} of the bag's Image and CompressedImage topics, in the bag's order."""
    topics: dict[str, str] = {}
    for connection in reader.connections:
        if connection.msgtype in IMAGE_TYPES:
            topics.setdefault(connection.topic, connection.msgtype)
    return topics


def choose_image_topic(reader, topic: str | None = None) -> tuple[str, str]:
    """(topic, message type): ``topic`` if it is an image topic of the bag, else its first image topic."""
    topics = image_topics(reader)
    bag = reader.paths[0]
    if not topics:
        found = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections}) or ["no topics"]
        raise ValueError(f"{bag} has no sensor_msgs Image or CompressedImage topic ({', '.join(found)})")
    if topic is None:
        first = next(iter(topics))
        return first, topics[first]
    if topic not in topics:
        raise ValueError(f"{topic} is not an image topic of {bag}; its image topics: {', '.join(topics)}")
    return topic, topics[topic]


def camera_info_topic(image_topic: str) -> str:
    """The CameraInfo topic image_transport pairs with ``image_topic``: a sibling of the base topic
    (``/cam/image_raw`` and ``/cam/image_raw/compressed`` -> ``/cam/camera_info``)."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    parent = base.rsplit("/", 1)[0]
    return f"{parent}/camera_info"


def read_messages(reader, connections: Sequence, *, start: int | None = None) -> Iterator[tuple]:
    """``reader.messages(connections, start)``, with a storage file that breaks while being read (cut,
    damaged) reported as DamagedBagError naming the bag and how far it got."""
    messages = reader.messages(connections=connections, start=start)
    count = 0
    while True:
        try:
            item = next(messages)
        except StopIteration:
            return
        except Exception as error:  # whatever the storage reader hits in a damaged file
            raise DamagedBagError(
                f"{reader.paths[0]}: damaged after {count} messages ({reason(error)})"
            ) from error
        count += 1
        yield item
