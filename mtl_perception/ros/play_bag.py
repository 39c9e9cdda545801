"""Play a rosbag2 (MCAP or sqlite3) through rclpy at its recorded timing, like ``ros2 bag play``.

Any robot's bag: by default its first camera topic (``sensor_msgs/Image`` or ``CompressedImage``; ``--topic``
chooses another) and that camera's ``camera_info`` when the bag has it (image_transport's sibling topic);
``--topics`` plays exactly the topics named. ``--start S`` begins S seconds into the bag, ``--rate`` scales
the timing, ``--loop`` repeats. Messages are published as the serialized CDR bytes stored in the bag (rclpy
publishes ``bytes`` as-is), so header stamps and pixels are the recorded ones. QoS: reliable, keep-last 10,
volatile (``ros2 bag play``'s default). Users with a ROS 2 install can equally run ``ros2 bag play BAG``.

A bag that cannot be opened or read (truncated, missing or garbage storage file, bad metadata) is one error
line naming it, before anything is published; a message that does not decode (or an image whose data does
not fill its size) is skipped with a warning, and the run then ends with an error (exit 2). SIGINT/SIGTERM
stop playback: exit 130/143 (rclpy's own signal handlers are off; the CLI entry handles them).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from mtl_perception.cli import non_negative_float, non_negative_int, positive_float, tool_main
from mtl_perception.data.bag_reader import (
    DamagedBagError,
    camera_info_topic,
    choose_image_topic,
    open_bag,
    read_messages,
    reason,
)


def message_class(msgtype: str):
    """'sensor_msgs/msg/Image' -> the rclpy message class."""
    try:
        from rosidl_runtime_py.utilities import get_message
    except ImportError:
        pkg, kind, name = msgtype.split("/")
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    return get_message(msgtype)


def _playback_qos():
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE,
        durability=DurabilityPolicy.VOLATILE,
    )


def _decode_problem(reader, conn, raw: bytes) -> str | None:
    """Why the message does not decode, or None. An image must also hold step x height bytes."""
    try:
        msg = reader.deserialize(raw, conn.msgtype)
    except Exception as error:  # the CDR deserializer raises whatever the bytes make it hit
        return reason(error)
    if conn.msgtype == "sensor_msgs/msg/Image" and len(msg.data) != msg.step * msg.height:
        return f"image data has {len(msg.data)} bytes, step x height is {msg.step * msg.height}"
    return None


def selected_topics(reader, *, topic: str | None = None, topics: list[str] | None = None) -> list[str]:
    """What to play: ``topics`` as named (each must be in the bag), else the image ``topic`` (default: the
    bag's first image topic) plus its camera_info sibling when the bag has one."""
    present = {c.topic for c in reader.connections}
    if topics:
        unknown = set(topics) - present
        if unknown:
            raise ValueError(f"topics not in {reader.paths[0]}: {sorted(unknown)}")
        return list(topics)
    image, _ = choose_image_topic(reader, topic)
    info = camera_info_topic(image)
    return [image, info] if info in present else [image]


def play(
    bag: Path,
    *,
    rate: float = 1.0,
    loop: bool = False,
    topic: str | None = None,
    topics: list[str] | None = None,
    start: float = 0.0,
    start_delay: float = 0.0,
    wait_for_subscribers: int = 0,
    wait_timeout: float = 10.0,
    progress: bool = True,
) -> int:
    """Publish the chosen topics of ``bag`` (:func:`selected_topics`) from ``start`` seconds into it on;
    returns the number of messages published."""
    if not (rate > 0 and rate != float("inf")):  # also refuses NaN
        raise ValueError(f"--rate must be a positive finite number, got {rate}")
    bag = Path(bag)
    with open_bag(bag) as reader:
        chosen = selected_topics(reader, topic=topic, topics=topics)
        conns = [c for c in reader.connections if c.topic in chosen]
        if progress:
            counts = {t: sum(c.msgcount for c in conns if c.topic == t) for t in chosen}
            listed = ", ".join(f"{t} ({n} msgs)" for t, n in counts.items())
            print(f"play_bag: playing {listed}", file=sys.stderr)
        first_ns = reader.start_time + int(round(start * 1e9))
        import rclpy
        from rclpy.signals import SignalHandlerOptions

        # the CLI entry turns SIGINT/SIGTERM into exceptions; rclpy's handlers would only stop the context
        rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node("play_bag")
        try:
            published, undecodable = _publish_all(
                reader, node, conns, rate, loop, start_delay, wait_for_subscribers, wait_timeout, progress,
                first_ns,
            )  # fmt: skip
            time.sleep(0.5)  # let reliable writers deliver the last messages before the node goes away
        finally:
            node.destroy_node()
            rclpy.try_shutdown()
    if undecodable:
        raise DamagedBagError(f"{bag}: {undecodable} messages did not decode and were skipped")
    return published


def _publish_all(reader, node, conns, rate, loop, start_delay, wait_for, wait_timeout, progress, first_ns):
    qos = _playback_qos()
    pubs = {}
    for c in conns:
        if c.topic not in pubs:
            pubs[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, qos)
    _wait_for_subscribers(node, pubs, wait_for, wait_timeout)
    if start_delay > 0:
        time.sleep(start_delay)
    total = sum(c.msgcount for c in conns)
    duration = max(reader.end_time - reader.start_time, 0) * 1e-9
    published = undecodable = 0
    while True:
        wall0, bag0 = time.monotonic(), None
        last_print = 0.0
        for i, (conn, stamp, raw) in enumerate(read_messages(reader, conns, start=first_ns)):
            bag0 = stamp if bag0 is None else bag0
            delay = wall0 + (stamp - bag0) * 1e-9 / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            problem = _decode_problem(reader, conn, raw)
            if problem:
                undecodable += 1
                print(
                    f"\nplay_bag: warning: skipped message {i + 1} on {conn.topic} (stamp {stamp}): "
                    f"{problem}",
                    file=sys.stderr,
                )
                continue
            pubs[conn.topic].publish(bytes(raw))
            published += 1
            now = time.monotonic()
            if progress and (now - last_print > 0.5 or i + 1 == total):
                last_print = now
                print(
                    f"\r[play_bag] {i + 1}/{total} msgs, t {(stamp - reader.start_time) * 1e-9:6.2f}"
                    f"/{duration:.2f} s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        if not loop:
            break
    if progress:
        print(file=sys.stderr)
    return published, undecodable


def _wait_for_subscribers(node, pubs: dict, wanted: int, timeout: float) -> None:
    """Wait (bounded) until ``wanted`` subscriptions are matched over all played topics."""
    if wanted <= 0:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(p.get_subscription_count() for p in pubs.values()) >= wanted:
            time.sleep(0.2)  # discovery is two-way: give the subscriber a moment to match us too
            return
        time.sleep(0.05)
    node.get_logger().warning(
        f"only {sum(p.get_subscription_count() for p in pubs.values())} of {wanted} "
        f"subscribers matched after {timeout:.1f} s; playing anyway"
    )


@tool_main("play_bag")
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="play_bag", description=__doc__.split("\n")[0])
    ap.add_argument("bag", type=Path)
    ap.add_argument("--rate", type=positive_float, default=1.0)
    ap.add_argument("--loop", action="store_true")
    which = ap.add_mutually_exclusive_group()
    which.add_argument(
        "--topic", help="the camera topic to play (Image or CompressedImage; default: the bag's first one), "
        "with its camera_info when the bag has it",
    )  # fmt: skip
    which.add_argument("--topics", nargs="+", help="play exactly these topics")
    ap.add_argument(
        "--start", type=non_negative_float, default=0.0, metavar="S", help="begin S seconds into the bag"
    )
    ap.add_argument(
        "--start-delay", type=non_negative_float, default=0.0, help="seconds to wait before the first message"
    )
    ap.add_argument(
        "--wait-for-subscribers",
        type=non_negative_int,
        default=0,
        metavar="N",
        help="wait until N subscriptions are matched (bounded by --wait-timeout)",
    )
    ap.add_argument("--wait-timeout", type=non_negative_float, default=10.0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    n = play(
        args.bag,
        rate=args.rate,
        loop=args.loop,
        topic=args.topic,
        topics=args.topics,
        start=args.start,
        start_delay=args.start_delay,
        wait_for_subscribers=args.wait_for_subscribers,
        wait_timeout=args.wait_timeout,
        progress=not args.quiet,
    )
    print(f"play_bag: published {n} messages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
