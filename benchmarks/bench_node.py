"""Node benchmark over real DDS: publisher process -> mtl_perception_node -> subscriber (this process).

For 2048x1024 rgb8 camera frames it reports, per configuration:

* latency stamp -> output received (p50 / p99), output throughput and drop rate (keep-latest drops),
  the node's own per-stage breakdown (from /diagnostics);
* the transport floor: publisher -> plain subscriber (no node), with and without the Fast DDS
  shared-memory profile (config/fastdds_shm.xml);
* conversion and publishing cost in-process (Image -> tensor, arrays -> Image messages);
* ``--soak N``: N frames through the lite node while sampling its resident memory (psutil).

Targets (reported, not asserted): conversion + publishing <= 3 ms/frame at 2048x1024; lite 192x384 >= 5 fps
on 2 cores. Writes benchmarks/results/node.json and prints markdown tables.

    python benchmarks/bench_node.py                # all configurations, ~3-4 minutes on 2 cores
    python benchmarks/bench_node.py --soak 2000    # adds the memory soak
    python benchmarks/bench_node.py --role publisher --topic /x --rate 10 --frames 50   (internal)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CAMERA = (1024, 2048)
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
CONFIGS = [("lite", (192, 384), ()), ("lite", (192, 384), FAST_FLOW), ("ti", (384, 768), ())]


def now_ns() -> int:
    return time.time_ns()


# ------------------------------------------------------------------------------------------- publisher
def run_publisher(topic: str, rate: float, frames: int, height: int, width: int, wait: float) -> int:
    """Publish `frames` rgb8 frames stamped with the wall clock (the subscriber measures now - stamp)."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from mtl_perception.ros.conversions import array_to_image_fields

    rclpy.init()
    node = rclpy.create_node(f"bench_publisher_{uuid.uuid4().hex[:6]}")
    publisher = node.create_publisher(
        Image, topic, QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
    )
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


def start_publisher(topic: str, rate: float, frames: int, env: dict) -> subprocess.Popen:
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


# ------------------------------------------------------------------------------------------ subscriber
class Listener:
    """Records (receive time - stamp) per message on the given topics, plus /diagnostics."""

    def __init__(self, topics: list[str], best_effort: bool = False) -> None:
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        self.rclpy = rclpy
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f"bench_listener_{uuid.uuid4().hex[:6]}", context=self.context)
        reliability = ReliabilityPolicy.BEST_EFFORT if best_effort else ReliabilityPolicy.RELIABLE
        qos = QoSProfile(depth=10, reliability=reliability)
        self.latency = {topic: [] for topic in topics}
        self.stamps = {topic: set() for topic in topics}
        self.diagnostics = []
        for topic in topics:
            self.node.create_subscription(Image, topic, self._callback(topic), qos)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self.diagnostics.append, 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def _callback(self, topic):
        def callback(msg):
            received = now_ns()
            stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
            self.latency[topic].append((received - stamp) * 1e-6)
            self.stamps[topic].add(stamp)

        return callback

    def stage_means(self, name_part: str = "") -> dict[str, float]:
        sums, counts = {}, {}
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
        self.rclpy.try_shutdown(context=self.context)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "mean_ms": float("nan")}
    array = np.asarray(values)
    return {
        "p50_ms": float(np.percentile(array, 50)),
        "p99_ms": float(np.percentile(array, 99)),
        "mean_ms": float(array.mean()),
    }


# --------------------------------------------------------------------------------------------- benches
def bench_transport(shm: bool, frames: int, rate: float) -> dict:
    env = dict(os.environ)
    if shm:
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
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


def transport_listener(topic: str, rate: float, frames: int) -> int:
    listener = Listener([topic])
    publisher = start_publisher(topic, rate, frames, dict(os.environ))
    publisher.wait(timeout=300)
    time.sleep(0.5)
    received = len(listener.latency[topic])
    stats = percentiles(listener.latency[topic])
    listener.close()
    stats.update(
        received=received, published=frames, profile=os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE", "")
    )
    print(json.dumps(stats))
    return 0


def node_executable() -> str:
    from mtl_perception.ros.replay import console_script

    return console_script("mtl_perception_node")


def node_command(namespace: str, preset: str, size: tuple[int, int], device: str, *extra: str) -> list[str]:
    """The installed node with the package's params file, a private namespace and the given network."""
    return [
        node_executable(),
        "--ros-args",
        "--params-file",
        str(REPO / "config" / "params.yaml"),
        "-r",
        f"__ns:={namespace}",
        "-p",
        f"model_preset:={preset}",
        "-p",
        f"network_height:={size[0]}",
        "-p",
        f"network_width:={size[1]}",
        "-p",
        f"device:={device}",
        "-p",
        "summary_period:=0.0",
        *extra,
    ]


def bench_node(preset: str, size: tuple[int, int], device: str, frames: int, rate: float, extra=()) -> dict:
    namespace = f"/bench_{uuid.uuid4().hex[:6]}"
    node = subprocess.Popen(
        node_command(namespace, preset, size, device, "-p", "diagnostics_period:=1.0", *extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    topics = [f"{namespace}/depth", f"{namespace}/semantic", f"{namespace}/motion"]
    listener = Listener(topics)
    try:
        deadline = time.monotonic() + 120
        while listener.node.count_subscribers(f"{namespace}/image") == 0 and time.monotonic() < deadline:
            if node.poll() is not None:
                return {"error": node.stderr.read()[-2000:]}
            time.sleep(0.1)
        publisher = start_publisher(f"{namespace}/image", rate, frames, dict(os.environ))
        publisher.wait(timeout=600)
        time.sleep(3.0)  # the last frame's processing and one more diagnostics period
        depth = listener.latency[topics[0]]
        depth = depth[1:] if len(depth) > 2 else depth  # steady state: the first output pays the warm-up
        complete = set.intersection(*(listener.stamps[t] for t in topics))
        duration = frames / rate
        result = {
            "preset": preset,
            "network_size": list(size),
            "device": device,
            "published": frames,
            "publish_rate_hz": rate,
            "outputs": len(listener.latency[topics[0]]),
            "complete_frames": len(complete),
            "throughput_fps": len(listener.latency[topics[0]]) / duration,
            "drop_rate": 1.0 - len(listener.latency[topics[0]]) / frames,
            "extra_parameters": list(extra),
            "latency": percentiles(depth),
            "stages_ms": listener.stage_means(namespace),
        }
        backend = [
            kv.value for a in listener.diagnostics for s in a.status for kv in s.values if kv.key == "backend"
        ]
        result["backend"] = backend[-1] if backend else ""
        return result
    finally:
        listener.close()
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=20)
        except subprocess.TimeoutExpired:
            node.kill()


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


def soak(frames: int, rate: float) -> dict:
    import psutil

    namespace = f"/soak_{uuid.uuid4().hex[:6]}"
    node = subprocess.Popen(
        node_command(namespace, "lite", (192, 384), "cpu"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    listener = Listener([f"{namespace}/depth"])
    samples = []
    try:
        process = psutil.Process(node.pid)
        while listener.node.count_subscribers(f"{namespace}/image") == 0:
            time.sleep(0.1)
        publisher = start_publisher(f"{namespace}/image", rate, frames, dict(os.environ))
        start = time.monotonic()
        while publisher.poll() is None:
            samples.append(
                (
                    time.monotonic() - start,
                    process.memory_info().rss / 2**20,
                    len(listener.latency[f"{namespace}/depth"]),
                )
            )
            time.sleep(1.0)
    finally:
        listener.close()
        node.send_signal(signal.SIGINT)
        node.wait(timeout=30)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=("bench", "publisher", "transport-listener"), default="bench")
    ap.add_argument("--topic", default="/bench_image")
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument(
        "--duration", type=float, default=20.0, help="seconds of publishing per node configuration"
    )
    ap.add_argument("--soak", type=int, default=0, metavar="N", help="also run an N-frame memory soak")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "node.json")
    ap.add_argument(
        "--no-shm",
        action="store_true",
        help="node runs over default Fast DDS (UDP) instead of config/fastdds_shm.xml; 6 MB best-effort "
        "frames then mostly fail to arrive whole",
    )
    args = ap.parse_args(argv)
    if args.role == "publisher":
        return run_publisher(args.topic, args.rate, args.frames, *CAMERA, wait=30.0)
    if args.role == "transport-listener":
        return transport_listener(args.topic, args.rate, args.frames)

    import torch

    transport = {
        "udp_default": bench_transport(False, frames=60, rate=10.0),
        "shm_profile": bench_transport(True, frames=60, rate=10.0),
    }
    if not args.no_shm:  # before this process creates its first DDS participant; children inherit it
        os.environ["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(REPO / "config" / "fastdds_shm.xml")
    results = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"),
        "camera": list(CAMERA),
        "conversions": bench_conversions(),
        "transport": transport,
        "node_transport": "UDP (Fast DDS default)"
        if args.no_shm
        else "Fast DDS SHM profile (config/fastdds_shm.xml)",
        "node": [],
    }
    devices = ["cpu"] + (["cuda:0"] if torch.cuda.is_available() else [])
    for device in devices:
        for preset, size, extra in CONFIGS:
            frames = int(args.rate * args.duration)
            results["node"].append(bench_node(preset, size, device, frames, args.rate, extra))
    if args.soak:
        results["soak"] = soak(args.soak, rate=10.0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    c = results["conversions"]
    print(f"# mtl_perception_node benchmark ({results['machine']}), camera {CAMERA[1]}x{CAMERA[0]} rgb8\n")
    print(
        f"Conversion rgb8 -> tensor {c['convert_rgb8_ms']:.2f} ms (bgr8 {c['convert_bgr8_ms']:.2f} ms); "
        "depth+semantic+motion messages at 2048x1024 "
        f"{c['fill_depth_semantic_motion_at_2048x1024_ms']:.2f} ms; "
        f"sum {c['convert_plus_fill_ms']:.2f} ms (target <= 3 ms).\n"
    )
    print("| transport (no node) | p50 ms | p99 ms | received |\n|---|---:|---:|---:|")
    for name, t in results["transport"].items():
        if "error" in t:
            print(f"| {name} | error | | |")
        else:
            print(f"| {name} | {t['p50_ms']:.1f} | {t['p99_ms']:.1f} | {t['received']}/{t['published']} |")
    print(
        f"\nNode graph over: {results['node_transport']}; "
        f"camera publisher at {args.rate:g} Hz for {args.duration:g} s."
    )
    print(
        "\n| config | backend | p50 ms | p99 ms | fps | drop | convert | preprocess | flow | network | "
        "postprocess | publish |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    for r in results["node"]:
        if "error" in r:
            print(f"| error | {r['error'][-200:]} |")
            continue
        s = r["stages_ms"]
        stages = " | ".join(
            f"{s.get(k, float('nan')):.1f}"
            for k in ("convert", "preprocess", "flow", "network", "postprocess", "publish")
        )
        flow = "fast flow" if r["extra_parameters"] else "default flow"
        size = f"{r['network_size'][0]}x{r['network_size'][1]}"
        print(
            f"| {r['preset']} {size} {r['device']}, {flow} | {r['backend']} | "
            f"{r['latency']['p50_ms']:.0f} | {r['latency']['p99_ms']:.0f} | {r['throughput_fps']:.2f} | "
            f"{100 * r['drop_rate']:.0f}% | {stages} |"
        )
    if "soak" in results:
        s = results["soak"]
        print(
            f"\nSoak: {s['frames_published']} frames, {s['outputs']} outputs, "
            f"RSS {s['rss_start_mib']:.0f} -> "
            f"{s['rss_end_mib']:.0f} MiB (max {s['rss_max_mib']:.0f}), growth after warm-up "
            f"{s['rss_growth_after_warmup_mib']:.1f} MiB"
        )
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
