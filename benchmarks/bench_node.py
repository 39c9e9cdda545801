"""Node benchmark over real DDS: publisher process -> mtl_perception_node -> subscriber (this process).

First the delivery matrix (``node_delivery.py``): frames the node receives / frames a default camera
process sends, per publisher QoS x frame size x how the node is started. Then, for 2048x1024 rgb8 camera
frames, per configuration:

* latency stamp -> output received (p50 / p99), output throughput and drop rate (keep-latest drops),
  the node's own per-stage breakdown (from /diagnostics);
* the transport floor: publisher -> plain subscriber (no node), with and without the Fast DDS
  shared-memory profile (config/fastdds_shm.xml);
* conversion and publishing cost in-process (Image -> tensor, arrays -> Image messages);
* ``--soak N``: N frames through the lite node while sampling its resident memory (psutil).

Targets (reported, not asserted): conversion + publishing <= 3 ms/frame at 2048x1024; lite 192x384 >= 5 fps
on 2 cores. Writes benchmarks/results/node.json and prints markdown tables (``node_report.py``). The node
is started, recorded and stopped with :mod:`mtl_perception.ros.harness`, as in the replay tool and the tests.

    python benchmarks/bench_node.py                # delivery matrix + all configurations, ~10 minutes
    python benchmarks/bench_node.py --role delivery --frames 60     # only the delivery matrix (JSON)
    python benchmarks/bench_node.py --delivery-frames 0             # only the speed runs
    python benchmarks/bench_node.py --soak 2000    # adds the memory soak
    python benchmarks/bench_node.py --role transport-listener --topic /x --frames 20   (one transport run)
    python benchmarks/bench_node.py --role publisher --topic /x --rate 10 --frames 50   (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import node_delivery  # benchmarks/ is this script's folder
import numpy as np
from node_report import print_report

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.ros.harness import OutputRecorder, node_process, require_node_up

REPO = Path(__file__).resolve().parents[1]
CAMERA = (1024, 2048)
SHM_PROFILE = REPO / "config" / "fastdds_shm.xml"
#: cheaper flow: 3 levels, 3 iterations, residual confidence (a model must be trained on this flow to use it)
FAST_FLOW = (
    "-p",
    "flow.levels:=3",
    "-p",
    "flow.iterations:=3",
    "-p",
    "flow.winsize:=15",
    "-p",
    "flow.poly_sigma:=1.2",
    "-p",
    "flow.confidence:=residual",
)
NODE_OUTPUTS = ("depth", "semantic", "motion")
#: reliable, keep last 10, for the listener of every run (6 MB frames: a deep history costs memory)
LISTENER_QOS_DEPTH = 10


@dataclass(frozen=True)
class NodeConfig:
    """One node configuration to measure: model preset, network size, extra node parameters."""

    preset: str
    height: int
    width: int
    extra: tuple[str, ...] = ()


CONFIGS = (
    NodeConfig("lite", 192, 384),
    NodeConfig("lite", 192, 384, FAST_FLOW),
    NodeConfig("ti", 384, 768),
)
SOAK_CONFIG = NodeConfig("lite", 192, 384)


def now_ns() -> int:
    return time.time_ns()


# ------------------------------------------------------------------------------------------- publisher
def run_publisher(
    *, topic: str, rate: float, frames: int, height: int, width: int, wait: float, qos: str = "reliable"
) -> int:
    """Publish `frames` rgb8 frames stamped with the wall clock (the subscriber measures now - stamp).

    ``qos``: ``reliable`` (rclpy's default, keep last 10) or ``best_effort`` (sensor-data QoS).
    """
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    from mtl_perception.ros.conversions import array_to_image_fields

    rclpy.init()
    node = rclpy.create_node(f"bench_publisher_{uuid.uuid4().hex[:6]}")
    publisher = node.create_publisher(Image, topic, 10 if qos == "reliable" else qos_profile_sensor_data)
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width, 3), dtype=np.uint8) for _ in range(4)]
    fields = [array_to_image_fields(image, "rgb8") for image in images]
    deadline = time.monotonic() + wait
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    period = 1.0 / rate
    start = time.monotonic()
    for i in range(frames):
        msg = Image(**fields[i % len(fields)])
        msg.header.frame_id = "bench_camera"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns(), 10**9)
        publisher.publish(msg)
        delay = start + (i + 1) * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def start_publisher(*, topic: str, rate: float, frames: int, env: dict | None = None) -> subprocess.Popen:
    """This script as a ``--role publisher`` child (its own DDS participant, like a camera driver)."""
    command = [
        sys.executable,
        __file__,
        "--role",
        "publisher",
        "--topic",
        topic,
        "--rate",
        str(rate),
        "--frames",
        str(frames),
    ]
    return subprocess.Popen(command, env=env)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    array = np.asarray(values)
    return {
        "p50_ms": float(np.percentile(array, 50)),
        "p99_ms": float(np.percentile(array, 99)),
        "mean_ms": float(array.mean()),
    }


def listener(topics, *, namespace: str = "/") -> OutputRecorder:
    """A recorder that keeps only stamps and latencies (the frames are 6 MB each)."""
    return OutputRecorder(
        topics, namespace=namespace, keep="stamp", qos=LISTENER_QOS_DEPTH, name="bench_listener"
    )


# ------------------------------------------------------------------------------------ transport floor
def bench_transport(*, shm: bool, frames: int, rate: float) -> dict:
    """Publisher -> plain subscriber, no node, over Fast DDS defaults or the SHM profile."""
    env = dict(os.environ)
    if shm:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
    else:
        env.pop("FASTRTPS_DEFAULT_PROFILES_FILE", None)
    topic = f"/bench_transport_{uuid.uuid4().hex[:6]}"
    # the listener lives in this process: give it the same profile by re-running as a child
    command = [
        sys.executable,
        __file__,
        "--role",
        "transport-listener",
        "--topic",
        topic,
        "--rate",
        str(rate),
        "--frames",
        str(frames),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        return {"error": result.stderr[-2000:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def transport_listener(*, topic: str, rate: float, frames: int) -> int:
    """Listen on ``topic`` while a publisher child sends ``frames``; print the latency stats as JSON."""
    with listener([topic]) as recorder:
        publisher = start_publisher(topic=topic, rate=rate, frames=frames, env=dict(os.environ))
        publisher.wait(timeout=300)
        time.sleep(0.5)
        with recorder.lock:
            latency = list(recorder.latency_ms[topic])
    stats = percentiles(latency)
    stats.update(
        received=len(latency),
        published=frames,
        profile=os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", ""),
    )
    print(json.dumps(stats))
    return 0


# --------------------------------------------------------------------------------------- node over DDS
def node_arguments(config: NodeConfig, *, device: str, extra: tuple[str, ...] = ()) -> list[str]:
    """The package's params file with the given network and device (no periodic log summary); preset
    ``shipped``: the model the package ships, as a user gets it."""
    model = [] if config.preset == "shipped" else [
        "-p", "model_file:=untrained", "-p", f"model_preset:={config.preset}",
        "-p", f"network_height:={config.height}", "-p", f"network_width:={config.width}",
    ]  # fmt: skip
    return [
        "--params-file",
        str(REPO / "config" / "params.yaml"),
        *model,
        "-p",
        f"device:={device}",
        "-p",
        "summary_period:=0.0",
        *config.extra,
        *extra,
    ]


@dataclass
class NodeUnderTest:
    process: subprocess.Popen
    recorder: OutputRecorder
    namespace: str


@contextmanager
def node_under_test(
    config: NodeConfig,
    *,
    device: str,
    topics: tuple[str, ...],
    extra: tuple[str, ...] = (),
    input_topic: str = "image",
) -> Iterator[NodeUnderTest]:
    """The node in a private namespace with a listener on ``topics``, once it listens on ``input_topic``.

    Raises RuntimeError with the end of the node's log if it exits or does not subscribe within 120 s.
    """
    namespace = f"/bench_{uuid.uuid4().hex[:6]}"
    args = node_arguments(config, device=device, extra=extra)
    with tempfile.TemporaryDirectory(prefix="bench_node_") as tmp:
        log = Path(tmp) / "node.log"
        with node_process(args, namespace=namespace, log_path=log, stop_timeout=30.0) as process:
            with listener(topics, namespace=namespace) as recorder:
                require_node_up(
                    lambda: recorder.node.count_subscribers(f"{namespace}/{input_topic}") > 0,
                    process=process,
                    timeout=120,
                    waiting_for=f"subscribe to {namespace}/{input_topic}",
                    log_path=log,
                )
                yield NodeUnderTest(process=process, recorder=recorder, namespace=namespace)


def bench_node(config: NodeConfig, *, device: str, frames: int, rate: float) -> dict:
    """Publish ``frames`` camera frames at ``rate`` into the node; latency, throughput, drops, stages."""
    try:
        with node_under_test(
            config, device=device, topics=NODE_OUTPUTS, extra=("-p", "diagnostics_period:=1.0")
        ) as node:
            publisher = start_publisher(
                topic=f"{node.namespace}/image", rate=rate, frames=frames, env=dict(os.environ)
            )
            publisher.wait(timeout=600)
            time.sleep(3.0)  # the last frame's processing and one more diagnostics period
            return summarize_node_run(node, config=config, device=device, frames=frames, rate=rate)
    except RuntimeError as error:
        return {"error": str(error)}


def summarize_node_run(
    node: NodeUnderTest, *, config: NodeConfig, device: str, frames: int, rate: float
) -> dict:
    recorder = node.recorder
    with recorder.lock:
        arrivals = list(recorder.latency_ms["depth"])
        complete = set.intersection(*(set(recorder.outputs[topic]) for topic in NODE_OUTPUTS))
    steady = arrivals[1:] if len(arrivals) > 2 else arrivals  # the first output pays the warm-up
    duration = frames / rate
    return {
        "preset": config.preset,
        "network_size": [config.height, config.width],
        "device": device,
        "published": frames,
        "publish_rate_hz": rate,
        "outputs": len(arrivals),
        "complete_frames": len(complete),
        "throughput_fps": len(arrivals) / duration,
        "drop_rate": 1.0 - len(arrivals) / frames,
        "extra_parameters": list(config.extra),
        "latency": percentiles(steady),
        "stages_ms": recorder.stage_means(node.namespace),
        "backend": recorder.diagnostic_values(node.namespace).get("backend", ""),
        "flow_implementation": recorder.diagnostic_values(node.namespace).get("flow_implementation", ""),
        "flow_implementation_measured_ms": recorder.diagnostic_values(node.namespace).get(
            "flow_implementation_measured_ms", ""
        ),
    }


def bench_conversions(repeats: int = 20) -> dict:
    """In-process cost of the node's own message work at 2048x1024 (outside DDS)."""
    import torch
    from sensor_msgs.msg import Image

    from mtl_perception.ros.conversions import array_to_image_fields, fill_image, image_to_tensor

    rng = np.random.default_rng(0)
    msg = Image(**array_to_image_fields(rng.integers(0, 256, (*CAMERA, 3), dtype=np.uint8), "rgb8"))
    depth = rng.random(CAMERA, dtype=np.float32)
    ids = rng.integers(0, 5, CAMERA, dtype=np.uint8)

    def timed(fn) -> float:
        fn()
        start = time.perf_counter()
        for _ in range(repeats):
            fn()
        return (time.perf_counter() - start) / repeats * 1e3

    def publish_all():
        fill_image(Image(check_fields=True), depth, "32FC1", msg.header)
        fill_image(Image(check_fields=True), ids, "mono8", msg.header)
        fill_image(Image(check_fields=True), ids, "mono8", msg.header)

    convert_ms = timed(lambda: image_to_tensor(msg, "cpu"))
    bgr = Image(
        **{
            **array_to_image_fields(rng.integers(0, 256, (*CAMERA, 3), dtype=np.uint8), "rgb8"),
            "encoding": "bgr8",
        }
    )
    convert_bgr_ms = timed(lambda: image_to_tensor(bgr, "cpu").contiguous())
    publish_ms = timed(publish_all)
    result = {
        "convert_rgb8_ms": convert_ms,
        "convert_bgr8_ms": convert_bgr_ms,
        "fill_depth_semantic_motion_at_2048x1024_ms": publish_ms,
        "convert_plus_fill_ms": convert_ms + publish_ms,
        "torch_threads": torch.get_num_threads(),
    }
    return result


def soak(*, frames: int, rate: float) -> dict:
    """``frames`` frames through the lite node while sampling its resident memory once a second."""
    import psutil

    samples = []
    try:
        with node_under_test(SOAK_CONFIG, device="cpu", topics=("depth",)) as node:
            process = psutil.Process(node.process.pid)
            publisher = start_publisher(
                topic=f"{node.namespace}/image", rate=rate, frames=frames, env=dict(os.environ)
            )
            start = time.monotonic()
            while publisher.poll() is None:
                with node.recorder.lock:
                    outputs = len(node.recorder.latency_ms["depth"])
                samples.append((time.monotonic() - start, process.memory_info().rss / 2**20, outputs))
                time.sleep(1.0)
    except RuntimeError as error:
        return {"error": str(error)}
    rss = np.array([s[1] for s in samples])
    warm = rss[len(rss) // 5 :] if len(rss) >= 5 else rss  # skip start-up growth (allocator, caches)
    return {
        "frames_published": frames,
        "outputs": samples[-1][2] if samples else 0,
        "rss_start_mib": float(rss[0]),
        "rss_end_mib": float(rss[-1]),
        "rss_max_mib": float(rss.max()),
        "rss_growth_after_warmup_mib": float(warm[-1] - warm[0]),
        "samples": samples[:: max(1, len(samples) // 50)],
    }


# ----------------------------------------------------------------------------------------- the run
def bench_delivery(*, frames: int, rate: float) -> dict:
    """The delivery matrix (node_delivery.py) in a child, so this process's DDS profile stays unset."""
    command = [sys.executable, __file__, "--role", "delivery", "--frames", str(frames), "--rate", str(rate)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    sys.stderr.write(result.stderr[-3000:])
    if result.returncode != 0:
        return {"error": result.stderr[-2000:], "frames": frames, "rate_hz": rate, "cells": []}
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_all(*, rate: float, duration: float, soak_frames: int, node_shm: bool, delivery_frames: int) -> dict:
    """Delivery matrix, transport floor, conversions, every configuration on every device, optional soak."""
    import torch

    delivery = bench_delivery(frames=delivery_frames, rate=4.0) if delivery_frames else None

    # first: each floor run is a child with its own DDS profile, before this process joins DDS itself
    transport = {
        "udp_default": bench_transport(shm=False, frames=60, rate=10.0),
        "shm_profile": bench_transport(shm=True, frames=60, rate=10.0),
    }
    if node_shm:  # before this process creates its first DDS participant; children inherit it
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(SHM_PROFILE)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, {gpu}",
        "camera": list(CAMERA),
        "camera_rate_hz": rate,
        "seconds_per_config": duration,
        "conversions": bench_conversions(),
        "transport": transport,
        "node_transport": "Fast DDS SHM profile (config/fastdds_shm.xml), whole graph"
        if node_shm
        else "the node's default (its UDP profile); camera and listener with Fast DDS defaults",
        "node": [
            bench_node(config, device=device, frames=int(rate * duration), rate=rate)
            for device in devices
            for config in CONFIGS
        ],
    }
    if delivery is not None:
        results["delivery"] = delivery
    if soak_frames:
        results["soak"] = soak(frames=soak_frames, rate=10.0)
    return results


# ---------------------------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--role", choices=("bench", "publisher", "transport-listener", "delivery"), default="bench"
    )
    ap.add_argument(
        "--delivery-starts",
        default="",
        help=f"--role delivery: comma-separated node starts, of {list(node_delivery.NODE_STARTS)}",
    )
    ap.add_argument("--size", default=f"{CAMERA[1]}x{CAMERA[0]}", help="publisher frame size WxH")
    ap.add_argument("--publisher-qos", choices=("reliable", "best_effort"), default="reliable")
    ap.add_argument(
        "--delivery-frames",
        type=int,
        default=60,
        help="frames per cell of the delivery matrix at 4 Hz (0 = skip it; --role delivery uses --frames)",
    )
    ap.add_argument("--topic", default="/bench_image")
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument(
        "--duration", type=float, default=20.0, help="seconds of publishing per node configuration"
    )
    ap.add_argument("--soak", type=int, default=0, metavar="N", help="also run an N-frame memory soak")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "node.json")
    ap.add_argument(
        "--shm",
        action="store_true",
        help="speed runs with config/fastdds_shm.xml for the camera, the node and the listener "
        "(default: the node as ros2 run starts it, the others with Fast DDS defaults)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.role == "publisher":
        width, height = (int(v) for v in args.size.split("x"))
        return run_publisher(
            topic=args.topic,
            rate=args.rate,
            frames=args.frames,
            height=height,
            width=width,
            wait=30.0,
            qos=args.publisher_qos,
        )
    if args.role == "delivery":
        starts = (
            tuple(args.delivery_starts.split(","))
            if args.delivery_starts
            else tuple(node_delivery.NODE_STARTS)
        )
        delivery = node_delivery.measure(
            frames=args.frames, rate=args.rate, script=Path(__file__), starts=starts
        )
        print(json.dumps(delivery))
        return 0
    if args.role == "transport-listener":
        return transport_listener(topic=args.topic, rate=args.rate, frames=args.frames)
    results = run_all(
        rate=args.rate,
        duration=args.duration,
        soak_frames=args.soak,
        node_shm=args.shm,
        delivery_frames=args.delivery_frames,
    )
    atomic_write_bytes(args.out, json.dumps(results, indent=2).encode())
    print_report(results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
