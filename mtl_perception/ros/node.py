"""``mtl_perception_node``: the ROS 2 wrapper around :class:`mtl_perception.pipeline.PerceptionPipeline`.

Thin on purpose (the yolo_ros / image_pipeline shape): :class:`PerceptionNode` is an rclpy node that
configures and activates a :class:`mtl_perception.ros.node_core.PerceptionCore` (parameters -> pipeline,
QoS and topics, keep-newest worker thread, diagnostics) when it is created. The managed variant is
``mtl_perception.ros.lifecycle_node``. :func:`run` is the process around either: the node's default DDS
transport (:mod:`mtl_perception.ros.transport`), rclpy start-up, signals and an orderly shutdown.

Topics (relative, remappable): in ``image`` (+ optional ``camera_info``); out ``depth`` (32FC1 m, NaN
invalid), ``depth/color`` (rgb8), ``semantic`` (mono8 ids), ``semantic/color`` (rgb8), ``motion`` (mono8
0/1), ``motion/overlay`` (rgb8), optional ``flow`` (32FC2), ``depth/camera_info``, and ``/diagnostics``.
See docs/node.md.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

from mtl_perception.pipeline_config import ConfigError
from mtl_perception.ros.node_core import PerceptionCore, input_qos, output_qos
from mtl_perception.ros.parameters import PARAMETERS
from mtl_perception.ros.transport import apply_default_profile, socket_buffer_limits

__all__ = ["PARAMETERS", "PerceptionNode", "input_qos", "main", "output_qos", "run"]

#: the node profile's socket buffers; below this net.core.rmem_max caps them (worth a warning)
PROFILE_SOCKET_BUFFER = 4 * 2**20


class PerceptionNode(Node):
    """The plain (unmanaged) node: configured and active as soon as it exists."""

    def __init__(self, *, transport: str = "", **kwargs) -> None:
        super().__init__("mtl_perception", **kwargs)
        self.core = PerceptionCore(self, transport=transport)
        self.core.configure()
        self.core.activate()

    def stop(self) -> None:
        """Stop the worker before the context goes, so no frame is published into a dead context."""
        self.core.stop_worker()


class _Signals:
    """SIGINT / SIGTERM: during start-up abort at once (KeyboardInterrupt); while spinning, ask to stop.

    rclpy's own handlers shut the context down from the signal, while the worker may be publishing, and
    cannot interrupt a model load or warm-up; these let the process stop its worker first.
    """

    def __init__(self) -> None:
        self.requested = False
        self.starting = True
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True
        if self.starting:
            raise KeyboardInterrupt


def _startup_failed(message: str) -> int:
    print(f"[mtl_perception] startup failed: {message}", file=sys.stderr, flush=True)
    return 2


def run(make_node: Callable[[str], Node], argv: list[str] | None = None) -> int:
    """Start rclpy with the node's transport, create ``make_node(transport)``, spin until a signal.

    Exit codes: 0 after a signal (also one during start-up), 2 when the arguments, the parameters or the
    model are refused (one line naming the cause on stderr).
    """
    try:
        transport = apply_default_profile()
    except FileNotFoundError as error:
        return _startup_failed(str(error))
    try:
        rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    except _rclpy.RCLError as error:  # e.g. --params-file that does not exist or does not parse
        return _startup_failed(f"the ROS arguments were refused: {error}")
    signals = _Signals()
    node = None
    try:
        try:
            node = make_node(transport)
        except Exception as error:  # parameters, model file, backend: report the cause and exit non-zero
            cause = error if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
            return _startup_failed(str(cause))
        signals.starting = False  # from here a signal asks the loop below to stop
        limits = socket_buffer_limits()
        if "node_udp" in transport and limits.get("rmem_max", PROFILE_SOCKET_BUFFER) < PROFILE_SOCKET_BUFFER:
            node.get_logger().warning(
                f"net.core.rmem_max is {limits['rmem_max']} bytes: the node's 4 MiB UDP receive buffer is "
                "capped to it and large frames may be lost (sudo sysctl -w net.core.rmem_max=4194304)"
            )
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not signals.requested and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
        executor.shutdown()
        return 0
    except KeyboardInterrupt:  # a signal during start-up: a normal, prompt exit
        return 0
    finally:
        signals.starting = False
        if node is not None:
            node.stop()
            node.destroy_node()
        rclpy.try_shutdown()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ros2 run mtl_perception mtl_perception_node``; non-zero exit on startup errors."""
    return run(lambda transport: PerceptionNode(transport=transport), argv)


if __name__ == "__main__":
    sys.exit(main())
