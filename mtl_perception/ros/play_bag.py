"""Play a rosbag2 (MCAP or sqlite3) through rclpy at its recorded timing, like ``ros2 bag play``.

Messages are published as the serialized CDR bytes stored in the bag (rclpy publishes ``bytes`` as-is), so
nothing is deserialized on the way. QoS: reliable, keep-last 10, volatile (``ros2 bag play``'s default).
Users with a ROS 2 install can equally run ``ros2 bag play BAG`` on the same bags.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path


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


def play(
    bag: Path,
    *,
    rate: float = 1.0,
    loop: bool = False,
    topics: list[str] | None = None,
    start_delay: float = 0.0,
    wait_for_subscribers: int = 0,
    wait_timeout: float = 10.0,
    progress: bool = True,
) -> int:
    """Publish every message of ``bag``; returns the number of messages published."""
    import rclpy
    from rosbags.highlevel import AnyReader

    if rate <= 0:
        raise ValueError(f"--rate must be positive, got {rate}")
    bag = Path(bag)
    if not (bag / "metadata.yaml").is_file():
        raise FileNotFoundError(f"not a rosbag2 directory (no metadata.yaml): {bag}")
    rclpy.init()
    node = rclpy.create_node("play_bag")
    published = 0
    try:
        with AnyReader([bag]) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            if topics:
                unknown = set(topics) - {c.topic for c in reader.connections}
                if unknown:
                    raise ValueError(f"topics not in {bag}: {sorted(unknown)}")
            qos = _playback_qos()
            pubs = {}
            for c in conns:
                if c.topic not in pubs:
                    pubs[c.topic] = node.create_publisher(message_class(c.msgtype), c.topic, qos)
            _wait_for_subscribers(node, pubs, wait_for_subscribers, wait_timeout)
            if start_delay > 0:
                time.sleep(start_delay)
            total = sum(c.msgcount for c in conns)
            duration = max(reader.end_time - reader.start_time, 0) * 1e-9
            while True:
                wall0, bag0 = time.monotonic(), None
                last_print = 0.0
                for i, (conn, stamp, raw) in enumerate(reader.messages(connections=conns)):
                    bag0 = stamp if bag0 is None else bag0
                    delay = wall0 + (stamp - bag0) * 1e-9 / rate - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if not rclpy.ok():  # SIGINT/SIGTERM shut the context down: stop cleanly
                        break
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
                if not loop or not rclpy.ok():
                    break
            if progress:
                print(file=sys.stderr)
            time.sleep(0.5)  # let reliable writers deliver the last messages before the node goes away
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return published


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="play_bag", description=__doc__.split("\n")[0])
    ap.add_argument("bag", type=Path)
    ap.add_argument("--rate", type=float, default=1.0)
    ap.add_argument("--loop", action="store_true")
    ap.add_argument("--topics", nargs="+")
    ap.add_argument("--start-delay", type=float, default=0.0, help="seconds to wait before the first message")
    ap.add_argument(
        "--wait-for-subscribers",
        type=int,
        default=0,
        metavar="N",
        help="wait until N subscriptions are matched (bounded by --wait-timeout)",
    )
    ap.add_argument("--wait-timeout", type=float, default=10.0)
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    try:
        n = play(
            args.bag,
            rate=args.rate,
            loop=args.loop,
            topics=args.topics,
            start_delay=args.start_delay,
            wait_for_subscribers=args.wait_for_subscribers,
            wait_timeout=args.wait_timeout,
            progress=not args.quiet,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"play_bag: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"play_bag: published {n} messages", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
