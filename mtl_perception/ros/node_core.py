"""What the plain and the lifecycle node share: parameters -> pipeline, topics, the worker, diagnostics.

:class:`PerceptionCore` is given the rclpy node it works for and has the lifecycle's steps as methods:
:meth:`configure` (read the parameters, build and warm the pipeline), :meth:`activate` (publishers,
subscriptions, diagnostics timer, worker thread), :meth:`deactivate` (the reverse; the pipeline stays
loaded) and :meth:`cleanup` (drop the pipeline). ``mtl_perception.ros.node.PerceptionNode`` runs the first
two at construction, ``mtl_perception.ros.lifecycle_node.PerceptionLifecycleNode`` on the transitions.
No algorithm lives here.
"""

from __future__ import annotations

import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.exceptions import ParameterUninitializedException
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.qos_overriding_options import QoSOverridingOptions
from sensor_msgs.msg import CameraInfo, Image

from mtl_perception.colormap import colorize, colorize_depth, overlay_mask
from mtl_perception.pipeline import NonFiniteOutputError
from mtl_perception.pipeline_config import ConfigError, PipelineConfig
from mtl_perception.pipeline_factory import build_pipeline, choose_model, semantic_colors
from mtl_perception.ros.conversions import (
    ImageConversionError,
    fill_image,
    roi_outside_image,
    scaled_camera_info_fields,
)
from mtl_perception.ros.image_input import IMAGE_TRANSPORTS, make_input
from mtl_perception.ros.node_stats import PeriodicSummary, StatsWindow
from mtl_perception.ros.parameters import PARAMETERS

#: input-loss fraction in one diagnostics period from which /diagnostics says WARN (stamp-gap estimate)
LOSS_WARN_FRACTION = 0.01


def input_qos() -> QoSProfile:
    """Sensor-data QoS with depth 1: accepts reliable and best-effort cameras, never queues stale frames."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)


def output_qos() -> QoSProfile:
    """Reliable keep-last 2 (REP 2003 for processed data); overridable through qos_overrides parameters."""
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=2, reliability=ReliabilityPolicy.RELIABLE)


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


class PerceptionCore:
    """The node's topics, worker and diagnostics around one pipeline, for ``node`` (an rclpy node)."""

    def __init__(self, node, *, transport: str = "") -> None:
        self.node = node
        self.transport = transport
        self.pipeline = None
        self.params: dict = {}
        self.pub: dict = {}
        self._entities: list = []  # subscriptions and the timer created by activate
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._latest: tuple[Image, float] | None = None
        self._camera_info: CameraInfo | None = None
        self._running = False
        self._roi_warned = False
        self.overridden = ""  # the settings that override the model's input contract ("" = none)
        self.worker: threading.Thread | None = None
        for name, (default, descriptor) in PARAMETERS.items():
            node.declare_parameter(name, default, descriptor)

    @property
    def log(self):
        return self.node.get_logger()

    # ------------------------------------------------------------------------------ lifecycle steps
    def parameter_values(self) -> dict:
        """Every parameter's value; None for one left unset (the model's input contract decides it)."""
        values = {}
        for name in PARAMETERS:
            try:
                values[name] = self.node.get_parameter(name).value
            except ParameterUninitializedException:
                values[name] = None
        return values

    def configure(self) -> None:
        """Read the parameters, build the pipeline (raises ConfigError and the model's errors), warm it.
        The model file is read once; each setting that overrides its input contract is warned about once."""
        p = self.parameter_values()
        if not p["depth_color.near"] < p["depth_color.far"]:
            raise ConfigError(
                "depth_color.near",
                f"depth_color.near ({p['depth_color.near']}) must be below "
                f"depth_color.far ({p['depth_color.far']})"
            )
        if p["image_transport"] not in IMAGE_TRANSPORTS:
            raise ConfigError(
                "image_transport",
                f"parameter image_transport={p['image_transport']!r} must be one of {IMAGE_TRANSPORTS}",
            )
        self.params = p
        config = PipelineConfig.from_parameters(p)
        config.validate()  # a typo fails before the model file is read
        choice = choose_model(config, warn=self.log.warning)  # "" = shipped, "untrained" = seeded, else file
        self.model = choice.model
        self.pipeline = build_pipeline(config, warn=self.log.warning, choice=choice)
        if not self.model.trained:
            self.log.warning(f"model: {self.model.label}")
        self.overridden = "; ".join(map(str, self.pipeline.overrides)) if self.model.trained else ""
        self.palette = semantic_colors(p["palette"], p["palette_rgb"], self.pipeline.backend)
        self.input = make_input(
            p["image_transport"], device=self.pipeline.device, max_pixels=p["max_image_pixels"]
        )
        if p["warmup"]:
            self.log.info("warming up the pipeline (two blank frames through every stage)")
            start = time.perf_counter()
            self.pipeline.warmup()
            self.log.info(f"warm-up took {time.perf_counter() - start:.2f} s")
        backend = self.pipeline.backend
        self.tasks = tuple(t for t in ("depth", "semantic", "motion") if t in tuple(backend.tasks))
        self.description = (
            f"backend={backend.name} device={self.pipeline.device} "
            f"network={self.pipeline.network_size[0]}x{self.pipeline.network_size[1]} "
            f"output_size={p['output_size']} flow={self.pipeline.flow_implementation} "
            f"model={self.model.label} inputs=({self.pipeline.backend.contract.summary()})"
            + (f" CONTRACT OVERRIDDEN: {self.overridden}" if self.overridden else "")
        )

    def activate(self) -> None:
        """Publishers, subscriptions, the diagnostics timer and the worker; frames flow from here on."""
        node, p = self.node, self.params
        qos_options = QoSOverridingOptions.with_default_policies()
        topics = ["depth", "depth/color", "semantic", "semantic/color", "motion", "motion/overlay"]
        topics = [topic for topic in topics if topic.split("/")[0] in self.tasks]
        if p["publish_flow"]:
            topics.append("flow")
        for topic in topics:
            self.pub[topic] = node.create_publisher(
                Image, topic, output_qos(), qos_overriding_options=qos_options
            )
        if p["use_camera_info"] and "depth" in self.tasks:
            self.pub["depth/camera_info"] = node.create_publisher(
                CameraInfo, "depth/camera_info", output_qos(), qos_overriding_options=qos_options
            )
        self.diagnostics_pub = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.stats = StatsWindow(start=time.monotonic())
        self.summary = PeriodicSummary(p["summary_period"], start=time.monotonic())
        self._latest, self._running = None, True
        image_topic = self.input.topic(node)
        self._entities = [
            node.create_subscription(
                self.input.msg_type,
                image_topic,
                self._on_image,
                input_qos(),
                qos_overriding_options=qos_options,
            ),
            node.create_timer(p["diagnostics_period"], self._on_diagnostics_timer),
        ]
        if p["use_camera_info"]:
            self._entities.append(
                node.create_subscription(
                    CameraInfo,
                    "camera_info",
                    self._on_camera_info,
                    input_qos(),
                    qos_overriding_options=qos_options,
                )
            )
        self.worker = threading.Thread(target=self._work, name="mtl_perception_worker", daemon=True)
        self.worker.start()
        self.log.info(
            f"ready: {self.description}; subscribed to {node.resolve_topic_name(image_topic)} "
            f"({self.input.msg_type.__name__}); "
            f"transport: {self.transport}"
        )

    def deactivate(self) -> None:
        """Stop the worker (it finishes the frame in hand), then remove the topics and the timer."""
        self.stop_worker()
        for entity in self._entities:
            if hasattr(entity, "cancel"):
                entity.cancel()
                self.node.destroy_timer(entity)
            else:
                self.node.destroy_subscription(entity)
        for publisher in [*self.pub.values(), getattr(self, "diagnostics_pub", None)]:
            if publisher is not None:
                self.node.destroy_publisher(publisher)
        self._entities, self.pub, self.diagnostics_pub = [], {}, None

    def cleanup(self) -> None:
        """Forget the pipeline (the model's memory goes with it); configure builds a new one."""
        self.pipeline = None

    def stop_worker(self, timeout: float = 10.0) -> None:
        """Ask the worker to stop and wait for it, so nothing publishes once this returns."""
        with self._wake:
            self._running = False
            self._wake.notify_all()
        if self.worker is not None:
            self.worker.join(timeout=timeout)
            self.worker = None

    # ---------------------------------------------------------------------------------- callbacks
    def _on_image(self, msg) -> None:
        """Keep only the newest frame; the worker picks it up (no processing in the executor thread)."""
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        with self._wake:
            self.stats.count_received(replaced_unprocessed=self._latest is not None, stamp=stamp)
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
            except NonFiniteOutputError as error:
                self._reject(msg, error, kind="the model produced non-finite output")
            except (ImageConversionError, ValueError) as error:
                self._reject(msg, error, kind="bad input")
            except Exception as error:  # keep the node alive; a crash here would silently stop all outputs
                self._reject(msg, error, kind=f"unexpected error ({type(error).__name__})")

    def _reject(self, msg, error: Exception, *, kind: str) -> None:
        text = (
            f"{kind}, frame dropped (stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}, "
            f"{self.input.describe(msg)}): {error}"
        )
        self.stats.count_rejected(f"{kind}: {error}")
        self.log.error(text, throttle_duration_sec=self.params["error_throttle"])

    def _subscribed(self, topic: str) -> bool:
        return topic in self.pub and self.pub[topic].get_subscription_count() > 0

    def _process(self, msg, received: float) -> None:
        start = time.perf_counter()
        image, encoding = self.input.convert(msg)  # compressed: the decode is part of "convert"
        convert_ms = (time.perf_counter() - start) * 1e3
        stamp = msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9
        want_overlay = self._subscribed("motion/overlay")
        result = self.pipeline.process(
            image,
            stamp,
            encoding,
            want_flow="flow" in self.pub,
            want_image=want_overlay,
            timings={"convert": convert_ms},
        )
        if result.reset and result.reset_reason != "first frame":
            self.log.warning(
                f"flow history reset at stamp {msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}: "
                f"{result.reset_reason}; this frame is published with zero flow",
                throttle_duration_sec=self.params["error_throttle"],
            )
        publish_start = time.perf_counter()
        header = msg.header
        outputs = [
            ("depth", result.depth, "32FC1"),
            ("semantic", result.semantic, "mono8"),
            ("motion", result.motion, "mono8"),
            ("flow", result.flow, "32FC2"),
        ]
        if result.depth is not None and self._subscribed("depth/color"):
            near, far = self.params["depth_color.near"], self.params["depth_color.far"]
            outputs.append(("depth/color", colorize_depth(result.depth, near=near, far=far), "rgb8"))
        if result.semantic is not None and self._subscribed("semantic/color"):
            outputs.append(("semantic/color", colorize(result.semantic, self.palette), "rgb8"))
        if want_overlay and result.motion is not None:
            overlay = overlay_mask(result.image, result.motion, alpha=self.params["overlay_alpha"])
            outputs.append(("motion/overlay", overlay, "rgb8"))
        # check_fields=True makes rclpy keep our array.array('B') as is instead of copying it again
        for topic, array, encoding in outputs:
            if array is not None and topic in self.pub:
                self.pub[topic].publish(fill_image(Image(check_fields=True), array, encoding, header))
        self._publish_camera_info(msg, tuple(image.shape[:2]), result.size)
        done = time.monotonic()
        timings = dict(result.timings)
        timings["publish"] = (time.perf_counter() - publish_start) * 1e3
        now_ns = self.node.get_clock().now().nanoseconds
        stamp_latency = (now_ns - (msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec)) * 1e-6
        self.stats.count_processed(
            latency_receive_ms=(done - received) * 1e3,
            latency_stamp_ms=stamp_latency,
            timings=timings,
            reset=result.reset,
            partner_dt=result.partner_dt,
            reset_reason=result.reset_reason,
        )

    def _publish_camera_info(self, msg, in_size: tuple[int, int], size: tuple[int, int]) -> None:
        if "depth/camera_info" not in self.pub:
            return
        with self._lock:
            info = self._camera_info
        if info is None:
            return
        height, width = in_size
        problem = roi_outside_image(info, width, height)
        if problem and not self._roi_warned:
            self._roi_warned = True
            self.log.warning(problem)
        out_h, out_w = size
        scaled = CameraInfo(**scaled_camera_info_fields(info, width, height, out_w, out_h))
        scaled.header = msg.header
        self.pub["depth/camera_info"].publish(scaled)

    # -------------------------------------------------------------------------------- diagnostics
    def _on_diagnostics_timer(self) -> None:
        """The period ends: take its statistics, publish them, log the summary line when one is due."""
        now = time.monotonic()
        values, processed_in_period = self.stats.snapshot(now)
        self._publish_diagnostics(values, processed_in_period)
        line = self.summary.line(values, now)
        if line is not None:
            self.log.info(line)

    def status(self, values: dict, processed_in_period: int) -> tuple[bytes, str]:
        """(level, message) of one period: the period's events, and a standing contract override (the
        user's choice runs, but the network never learned on such inputs: WARN for as long as it lasts)."""
        level, message = self._period_status(values, processed_in_period)
        if not self.overridden:
            return level, message
        override = f"contract overridden: {self.overridden}"
        return DiagnosticStatus.WARN, override if level == DiagnosticStatus.OK else f"{message}; {override}"

    def _period_status(self, values: dict, processed_in_period: int) -> tuple[bytes, str]:
        if values["frames_received"] == 0:
            return DiagnosticStatus.WARN, "waiting for images"
        if values["frames_rejected_recent"]:
            return DiagnosticStatus.WARN, f"rejected frames; last: {values['last_error']}"
        if processed_in_period == 0 and values["input_rate_hz"] > 0:
            return DiagnosticStatus.WARN, "receiving but not processing"
        if values["input_loss_recent"] >= LOSS_WARN_FRACTION:
            return DiagnosticStatus.WARN, (
                f"losing input frames before the node: ~{values['input_loss_recent']:.0%} in the last period "
                f"(input stamp gaps at a {values['input_period_ms']:.0f} ms camera period); see docs/node.md "
                "'Transport'"
            )
        return DiagnosticStatus.OK, "ok"

    def _publish_diagnostics(self, values: dict, processed_in_period: int) -> None:
        """Build the DiagnosticArray of one period's statistics and publish it."""
        backend = self.pipeline.backend
        level, message = self.status(values, processed_in_period)
        values = {
            **values,
            "backend": backend.name,
            "device": str(self.pipeline.device),
            "flow_implementation": self.pipeline.flow_implementation,
            "flow_implementation_measured_ms": " ".join(
                f"{name}={ms:.1f}" for name, ms in self.pipeline.flow_input.measured_ms.items()
            ),
            "network_size": f"{self.pipeline.network_size[0]}x{self.pipeline.network_size[1]}",
            "output_size": self.params["output_size"],
            "model": self.model.label,
            "input_contract": self.pipeline.backend.contract.summary(),
            "contract_overridden": self.overridden or "no",
            "transport": self.transport,
            **self.input.diagnostics(),
        }
        status = DiagnosticStatus(
            level=level,
            name=f"{self.node.get_fully_qualified_name()}: pipeline",
            message=message,
            hardware_id=f"{backend.name}@{self.pipeline.device}",
            values=[KeyValue(key=k, value=_fmt(v)) for k, v in values.items()],
        )
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.node.get_clock().now().to_msg()
        self.diagnostics_pub.publish(array)
