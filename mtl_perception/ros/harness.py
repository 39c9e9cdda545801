"""Driving ``mtl_perception_node`` from outside over real DDS: one output recorder, one start / stop.

The replay evaluation (:mod:`mtl_perception.ros.replay`), ``benchmarks/bench_node.py`` and the node tests
all start the installed node as its own process, watch its outputs from another DDS participant and stop it
the way a user does (Ctrl-C). They share these pieces, so they record and stop the node the same way:

* :func:`console_script` finds one of this package's executables (next to the interpreter, or on PATH);
* :func:`node_command`, :func:`start_node`, :func:`stop_process` and :func:`node_process` start the node in
  a namespace with its output in a log file, and stop a child with SIGINT -> wait -> kill;
* :func:`wait_until` polls a readiness condition and gives up as soon as the watched process has exited;
  :func:`require_node_up` raises instead, naming the exit code or what was not seen, with the node's log;
* :class:`OutputRecorder` subscribes to a set of topics and keeps, per topic and input stamp, the received
  value (array, message or nothing), its frame_id and its receive latency, plus every /diagnostics array.

The node never imports this module. It lives in the installed package rather than beside the tests because
the replay tool and the benchmarks import it too, from whatever directory they run in.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mtl_perception.ros.conversions import image_fields_to_array

#: what :class:`OutputRecorder` keeps per received message: the decoded array (Image topics; other
#: messages are kept whole), the message itself, or only its stamp (for multi-megabyte benchmark frames)
KEEP_CHOICES = ("array", "message", "stamp")


def console_script(name: str) -> str:
    """Path of one of this package's console scripts next to the running interpreter (venv) or on PATH."""
    path = shutil.which(name, path=os.path.dirname(sys.executable)) or shutil.which(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH (pip install -e .)")
    return path


def stamp_ns(header) -> int:
    """A ROS header's stamp in integer nanoseconds (the key every recorder and ground truth uses)."""
    return int(header.stamp.sec) * 10**9 + int(header.stamp.nanosec)


def node_command(
    node_args: Sequence[str], *, namespace: str | None = None, executable: str = "mtl_perception_node"
) -> list[str]:
    """The installed node (or ``mtl_perception_lifecycle_node``) with ``node_args`` after ``--ros-args``,
    remapped into ``namespace`` if given."""
    remap = ["-r", f"__ns:={namespace}"] if namespace else []
    return [console_script(executable), "--ros-args", *remap, *node_args]


def start_node(
    node_args: Sequence[str],
    *,
    namespace: str | None = None,
    log_path: str | Path | None = None,
    executable: str = "mtl_perception_node",
) -> subprocess.Popen:
    """Start the node as a process; its stdout and stderr go to ``log_path`` (or nowhere).

    Never to a pipe: nobody reads it while the node runs, and a full pipe would block a chatty node.
    """
    command = node_command(node_args, namespace=namespace, executable=executable)
    if log_path is None:
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    with open(log_path, "w") as log:  # the child holds its own copy of the descriptor
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)


def stop_process(process: subprocess.Popen, *, timeout: float = 20.0) -> int:
    """SIGINT (what Ctrl-C sends; rclpy then shuts the node down cleanly), wait, kill if it hangs.

    Returns the exit code: 0 for a clean shutdown, negative for a kill.
    """
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


@contextmanager
def node_process(
    node_args: Sequence[str],
    *,
    namespace: str | None = None,
    log_path: str | Path | None = None,
    stop_timeout: float = 20.0,
    executable: str = "mtl_perception_node",
) -> Iterator[subprocess.Popen]:
    """:func:`start_node` for the block, :func:`stop_process` after it (also on an error)."""
    process = start_node(node_args, namespace=namespace, log_path=log_path, executable=executable)
    try:
        yield process
    finally:
        stop_process(process, timeout=stop_timeout)


def log_tail(log_path: str | Path | None, chars: int = 2000) -> str:
    """The end of a node log, for error messages ('' when there is none)."""
    if log_path is None or not Path(log_path).is_file():
        return ""
    return Path(log_path).read_text(errors="replace")[-chars:]


def wait_until(
    ready: Callable[[], bool],
    *,
    timeout: float,
    process: subprocess.Popen | None = None,
    poll: float = 0.05,
) -> bool:
    """True as soon as ``ready()`` is; False at ``timeout`` or once ``process`` has exited."""
    deadline = time.monotonic() + timeout
    while True:
        if ready():
            return True
        if (process is not None and process.poll() is not None) or time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def require_node_up(
    ready: Callable[[], bool],
    *,
    process: subprocess.Popen,
    timeout: float,
    waiting_for: str,
    log_path: str | Path | None = None,
) -> None:
    """:func:`wait_until` for a starting node; RuntimeError saying why it is not up (its exit code, or
    ``waiting_for`` not seen within ``timeout`` s), followed by the end of its log."""
    if wait_until(ready, timeout=timeout, process=process):
        return
    if process.poll() is not None:
        why = f"exited with {process.returncode} during startup"
    else:
        why = f"did not {waiting_for} within {timeout:g} s"
    raise RuntimeError(f"mtl_perception_node {why}:\n{log_tail(log_path)}")


class OutputRecorder:
    """Subscribes to ``topics`` (resolved in ``namespace``) in its own rclpy context and spin thread.

    Per topic and input stamp it keeps ``outputs[topic][stamp]`` (see :data:`KEEP_CHOICES`) and
    ``frame_ids[topic][stamp]``; per topic ``latency_ms[topic]``, receive wall time minus stamp in arrival
    order; and every /diagnostics array. Topics ending in ``camera_info`` are CameraInfo, others Image.
    ``qos`` is a depth (reliable, keep last) or a profile; ``qos_overrides`` sets it per topic. Read the
    recorded dicts under ``lock`` (or through :meth:`wait_for`, :meth:`by_stamp`), close it when done.
    """

    def __init__(
        self,
        topics: Iterable[str],
        *,
        namespace: str = "/",
        keep: str = "array",
        qos: Any = 50,
        qos_overrides: Mapping[str, Any] | None = None,
        name: str = "recorder",
    ) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from sensor_msgs.msg import CameraInfo, Image

        if keep not in KEEP_CHOICES:
            raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}")
        topics = list(topics)
        self._rclpy = rclpy
        self._keep = keep
        self.lock = threading.Lock()
        self.outputs: dict[str, dict[int, Any]] = {topic: {} for topic in topics}
        self.frame_ids: dict[str, dict[int, str]] = {topic: {} for topic in topics}
        self.latency_ms: dict[str, list[float]] = {topic: [] for topic in topics}
        self.diagnostics: list = []
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(
            f"{name}_{uuid.uuid4().hex[:8]}", namespace=namespace, context=self.context
        )
        overrides = dict(qos_overrides or {})
        for topic in topics:
            msg_type = CameraInfo if topic.endswith("camera_info") else Image
            self.node.create_subscription(msg_type, topic, self._recorder(topic), overrides.get(topic, qos))
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _recorder(self, topic: str) -> Callable[[Any], None]:
        def record(msg) -> None:
            received = time.time_ns()  # first, so the conversion below is not part of the latency
            stamp = stamp_ns(msg.header)
            if self._keep == "stamp":
                value = None
            elif self._keep == "array" and hasattr(msg, "encoding"):
                value = image_fields_to_array(msg)
            else:
                value = msg
            with self.lock:
                self.outputs[topic][stamp] = value
                self.frame_ids[topic][stamp] = msg.header.frame_id
                self.latency_ms[topic].append((received - stamp) * 1e-6)

        return record

    def _on_diagnostics(self, msg) -> None:
        with self.lock:
            self.diagnostics.append(msg)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float, process: subprocess.Popen | None = None
    ) -> bool:
        """:func:`wait_until` with ``predicate`` evaluated under the lock (it may read the records)."""

        def ready() -> bool:
            with self.lock:
                return predicate()

        return wait_until(ready, timeout=timeout, process=process)

    def by_stamp(self) -> dict[int, dict[str, Any]]:
        """A copy of the records as {stamp: {topic: value}} (the layout :func:`replay.evaluate` scores)."""
        grouped: dict[int, dict[str, Any]] = {}
        with self.lock:
            for topic, values in self.outputs.items():
                for stamp, value in values.items():
                    grouped.setdefault(stamp, {})[topic] = value
        return grouped

    def wait_quiet(self, quiet: float = 2.0, timeout: float = 60.0) -> None:
        """Return once no message arrived for ``quiet`` seconds (or at ``timeout``)."""
        deadline = time.monotonic() + timeout
        last_count, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self.lock:
                count = sum(len(latency) for latency in self.latency_ms.values())
            if count != last_count:
                last_count, last_change = count, time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                return
            time.sleep(0.1)

    def diagnostic_values(self, name_part: str = "mtl_perception") -> dict[str, str]:
        """Key/values of the latest /diagnostics status whose name contains ``name_part``."""
        with self.lock:
            for array in reversed(self.diagnostics):
                for status in array.status:
                    if name_part in status.name:
                        return {kv.key: kv.value for kv in status.values}
        return {}

    def stage_means(self, name_part: str = "mtl_perception") -> dict[str, float]:
        """Mean of each ``stage_<name>_ms`` value over all matching /diagnostics statuses, by stage name."""
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        with self.lock:
            for array in self.diagnostics:
                for status in array.status:
                    if name_part not in status.name:
                        continue
                    for kv in status.values:
                        if kv.key.startswith("stage_") and kv.value != "nan":
                            sums[kv.key] = sums.get(kv.key, 0.0) + float(kv.value)
                            counts[kv.key] = counts.get(kv.key, 0) + 1
        return {key[len("stage_") : -len("_ms")]: sums[key] / counts[key] for key in sums}

    def close(self) -> None:
        self.executor.shutdown()
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self._rclpy.try_shutdown(context=self.context)

    def __enter__(self) -> OutputRecorder:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
