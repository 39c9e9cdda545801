"""``mtl_perception_node``: the ROS 2 wrapper around :class:`mtl_perception.pipeline.PerceptionPipeline`.

Thin on purpose (the yolo_ros / image_pipeline shape): it declares the parameters of
``mtl_perception.ros.parameters``, builds the pipeline through ``mtl_perception.pipeline_factory``, sets
QoS and topics, keeps the newest camera frame, runs the pipeline on a worker thread and publishes the
results with the input header. No algorithm lives here.

Topics (relative, remappable): in ``image`` (+ optional ``camera_info``); out ``depth`` (32FC1 m, NaN
invalid), ``semantic`` (mono8 ids), ``semantic/color`` (rgb8), ``motion`` (mono8 0/1), ``motion/overlay``
(rgb8), optional ``flow`` (32FC2), ``depth/camera_info``, and ``/diagnostics``. See docs/node.md.
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image

from mtl_perception.pipeline import NonFiniteOutputError, colorize, overlay_mask
from mtl_perception.pipeline_factory import (
    ConfigError,
    PipelineConfig,
    build_pipeline,
    resolve_config_model,
    semantic_colors,
)
from mtl_perception.ros.conversions import (
    ImageConversionError,
    fill_image,
    image_to_tensor,
    scaled_camera_info_fields,
)
from mtl_perception.ros.node_stats import PeriodicSummary, StatsWindow
from mtl_perception.ros.parameters import PARAMETERS


def input_qos() -> QoSProfile:
    """Sensor-data QoS with depth 1: accepts reliable and best-effort cameras, never queues stale frames."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


def output_qos() -> QoSProfile:
    """Reliable keep-last 2 (REP 2003 for processed data); overridable through qos_overrides parameters."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)


class PerceptionNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("mtl_perception", **kwargs)
        for name, (default, descriptor) in PARAMETERS.items():
            self.declare_parameter(name, default, descriptor)
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.params = p
        config = PipelineConfig.from_parameters(p)
        self.model = resolve_config_model(config)  # "" = shipped, "untrained" = seeded preset, else the file
        self.pipeline = build_pipeline(config, warn=self.get_logger().warning)
        if not self.model.trained:
            self.get_logger().warning(f"model: {self.model.label}")
        self.palette = semantic_colors(p["palette"], p["palette_rgb"], self.pipeline.backend)
        if p["warmup"]:
            start = time.perf_counter()
            self.pipeline.warmup()
            self.get_logger().info(f"warm-up took {time.perf_counter() - start:.2f} s")
        backend = self.pipeline.backend
        self.description = (
            f"backend={backend.name} device={self.pipeline.device} "
            f"network={self.pipeline.network_size[0]}x{self.pipeline.network_size[1]} "
            f"output_size={p['output_size']} model={self.model.label}"
        )

        qos_options = QoSOverridingOptions.with_default_policies()
        self.tasks = tuple(t for t in ("depth", "semantic", "motion") if t in tuple(backend.tasks))
        pub = {}
        for topic in ("depth", "semantic", "semantic/color", "motion", "motion/overlay"):
            if topic.split("/")[0] in self.tasks:
                pub[topic] = self.create_publisher(
                    Image, topic, output_qos(), qos_overriding_options=qos_options
                )
        if p["publish_flow"]:
            pub["flow"] = self.create_publisher(
                Image, "flow", output_qos(), qos_overriding_options=qos_options
            )
        if p["use_camera_info"] and "depth" in self.tasks:
            pub["depth/camera_info"] = self.create_publisher(
                CameraInfo, "depth/camera_info", output_qos(), qos_overriding_options=qos_options
            )
        self.pub = pub
        self.diagnostics_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._latest: tuple[Image, float] | None = None
        self._camera_info: CameraInfo | None = None
        self._running = True
        self.stats = StatsWindow(start=time.monotonic())
        self.summary = PeriodicSummary(p["summary_period"], start=time.monotonic())

        self.create_subscription(
            Image, "image", self._on_image, input_qos(), qos_overriding_options=qos_options
        )
        if p["use_camera_info"]:
            self.create_subscription(
                CameraInfo,
                "camera_info",
                self._on_camera_info,
                input_qos(),
                qos_overriding_options=qos_options,
            )
        self.create_timer(p["diagnostics_period"], self._on_diagnostics_timer)
        self.worker = threading.Thread(target=self._work, name="mtl_perception_worker", daemon=True)
        self.worker.start()
        self.get_logger().info(f"ready: {self.description}; subscribed to {self.resolve_topic_name('image')}")

    # ---------------------------------------------------------------------------------- callbacks
    def _on_image(self, msg: Image) -> None:
        """Keep only the newest frame; the worker picks it up (no processing in the executor thread)."""
        with self._wake:
            self.stats.count_received(replaced_unprocessed=self._latest is not None)
            self._latest = (msg, time.monotonic())
            self._wake.notify()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self._camera_info = msg

    # ------------------------------------------------------------------------------------- worker
    def _work(self) -> None:
        while True:
            with self._wake:
                while self._running and self._latest is None:
                    self._wake.wait(timeout=0.5)
                if not self._running:
                    return
                msg, received = self._latest
                self._latest = None
            try:
                self._process(msg, received)
            except (ImageConversionError, NonFiniteOutputError, ValueError) as error:
                self._reject(msg, error)
            except Exception as error:  # keep the node alive; a crash here would silently stop all outputs
                self._reject(msg, error, unexpected=True)

    def _reject(self, msg: Image, error: Exception, unexpected: bool = False) -> None:
        kind = "unexpected error" if unexpected else "bad input"
        text = (
            f"{kind}, frame dropped (stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}, "
            f"{msg.width}x{msg.height} {msg.encoding!r}): {error}"
        )
        self.stats.count_rejected(str(error))
        self.get_logger().error(text, throttle_duration_sec=self.params["error_throttle"])

    def _process(self, msg: Image, received: float) -> None:
        start = time.perf_counter()
        image = image_to_tensor(msg, self.pipeline.device, self.params["max_image_pixels"])
        convert_ms = (time.perf_counter() - start) * 1e3
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        want_color = "semantic/color" in self.pub and self.pub["semantic/color"].get_subscription_count() > 0
        want_overlay = (
            "motion/overlay" in self.pub and self.pub["motion/overlay"].get_subscription_count() > 0
        )
        result = self.pipeline.process(
            image,
            stamp,
            msg.encoding,
            want_flow="flow" in self.pub,
            want_image=want_overlay,
            timings={"convert": convert_ms},
        )
        publish_start = time.perf_counter()
        header = msg.header
        outputs = [
            ("depth", result.depth, "32FC1"),
            ("semantic", result.semantic, "mono8"),
            ("motion", result.motion, "mono8"),
            ("flow", result.flow, "32FC2"),
        ]
        if want_color and result.semantic is not None:
            outputs.append(("semantic/color", colorize(result.semantic, self.palette), "rgb8"))
        if want_overlay and result.motion is not None:
            outputs.append(
                (
                    "motion/overlay",
                    overlay_mask(result.image, result.motion, alpha=self.params["overlay_alpha"]),
                    "rgb8",
                )
            )
        # check_fields=True makes rclpy keep our array.array('B') as is instead of copying it again
        for topic, array, encoding in outputs:
            if array is not None and topic in self.pub:
                self.pub[topic].publish(fill_image(Image(check_fields=True), array, encoding, header))
        if "depth/camera_info" in self.pub:
            with self._lock:
                info = self._camera_info
            if info is not None:
                out_h, out_w = result.size
                scaled = CameraInfo(**scaled_camera_info_fields(info, msg.width, msg.height, out_w, out_h))
                scaled.header = header
                self.pub["depth/camera_info"].publish(scaled)
        done = time.monotonic()
        timings = dict(result.timings)
        timings["publish"] = (time.perf_counter() - publish_start) * 1e3
        now_ns = self.get_clock().now().nanoseconds
        stamp_latency = (now_ns - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) * 1e-6
        self.stats.count_processed(
            latency_receive_ms=(done - received) * 1e3,
            latency_stamp_ms=stamp_latency,
            timings=timings,
            reset=result.reset,
            partner_dt=result.partner_dt,
        )

    # -------------------------------------------------------------------------------- diagnostics
    def _on_diagnostics_timer(self) -> None:
        """The period ends: take its statistics, publish them, log the summary line when one is due."""
        now = time.monotonic()
        values, processed_in_period = self.stats.snapshot(now)
        self._publish_diagnostics(values, processed_in_period)
        line = self.summary.line(values, now)
        if line is not None:
            self.get_logger().info(line)

    def _publish_diagnostics(self, values: dict, processed_in_period: int) -> None:
        """Build the DiagnosticArray of one period's statistics and publish it."""
        backend = self.pipeline.backend
        values = {
            **values,
            "backend": backend.name,
            "device": str(self.pipeline.device),
            "network_size": f"{self.pipeline.network_size[0]}x{self.pipeline.network_size[1]}",
            "output_size": self.params["output_size"],
            "model": self.model.label,
        }
        if values["frames_received"] == 0:
            level, message = DiagnosticStatus.WARN, "waiting for images"
        elif processed_in_period == 0 and values["input_rate_hz"] > 0:
            level, message = DiagnosticStatus.WARN, "receiving but not processing"
        elif values["last_error"]:
            level, message = DiagnosticStatus.WARN, f"rejected frames; last: {values['last_error']}"
        else:
            level, message = DiagnosticStatus.OK, "ok"
        status = DiagnosticStatus(
            level=level,
            name=f"{self.get_fully_qualified_name()}: pipeline",
            message=message,
            hardware_id=f"{backend.name}@{self.pipeline.device}",
            values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)

    def stop(self) -> None:
        with self._wake:
            self._running = False
            self._wake.notify_all()
        self.worker.join(timeout=5.0)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ros2 run mtl_perception mtl_perception_node``; non-zero exit on startup errors.

    rclpy's signal handlers turn SIGINT/SIGTERM into a context shutdown at any moment, also while the model
    loads; a shutdown requested that way is a clean exit (0), whatever step it interrupted.
    """
    rclpy.init(args=argv)
    executor = SingleThreadedExecutor()
    try:
        node = PerceptionNode()
    except Exception as error:  # parameters, model file, backend: report the cause and exit non-zero
        if not rclpy.ok():
            return 0
        cause = error if isinstance(error, ConfigError) else f"{type(error).__name__}: {error}"
        print(f"[mtl_perception] startup failed: {cause}", file=sys.stderr, flush=True)
        rclpy.try_shutdown()
        return 2
    try:
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        if rclpy.ok():  # a real failure, not the shutdown race
            raise
    finally:
        node.stop()
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
