"""Compressed camera input: decode cost per frame, and the node's frames/s from a compressed camera vs raw.

1. Decode: a real photograph (scikit-image's rocket.jpg) resized to 640x480, 1280x720 and 1920x1080,
   JPEG quality 90 (OpenCV's encoder, as compressed_image_transport uses it), decoded by the node's
   ``FrameDecoder`` (checks + ``cv2.imdecode`` + BGR -> RGB) and, on CUDA with torchvision, by nvJPEG into
   a device tensor; the raw path's conversion (``image_to_tensor`` of an rgb8 Image) for comparison.
2. The node over DDS, default configuration (packaged params.yaml, the shipped model, device auto), fed by a
   camera process at ``--rate`` Hz with 1280x720 frames: ``image_transport: compressed`` (JPEG q90 on
   ``image/compressed``) against the same frames raw (rgb8 on ``image``).

    python benchmarks/bench_decode.py                   # both, ~2 minutes on 2 cores
    python benchmarks/bench_decode.py --skip-node       # decode table only
    python benchmarks/bench_decode.py --role publisher --topic /x --transport compressed (internal)

Writes benchmarks/results/decode.json (with the machine) and prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

import bench_node  # benchmarks/ is this script's folder
import bench_resize
import cv2
import numpy as np
from machine import cpu_name

from mtl_perception.atomic import atomic_write_bytes

REPO = Path(__file__).resolve().parents[1]
SIZES = ((480, 640), (720, 1280), (1080, 1920))
QUALITY = 90
CAMERA = (720, 1280)


def photo(height: int, width: int, shift: int = 0) -> np.ndarray:
    """rocket.jpg centre-cropped to the aspect, resized, shifted ``shift`` pixels (RGB)."""
    from skimage import data

    image = data.rocket()
    h, w = image.shape[:2]
    crop_h = min(h, int(round(w * height / width)))
    top = (h - crop_h) // 2
    resized = cv2.resize(image[top : top + crop_h], (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.roll(resized, shift, axis=1))


def jpeg(rgb: np.ndarray) -> bytes:
    ok, data = cv2.imencode(
        ".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, QUALITY]
    )
    assert ok
    return data.tobytes()


def timed(fn, repeats: int) -> dict[str, float]:
    fastest, median = bench_resize.timed(fn, repeats)
    return {"min_ms": fastest, "median_ms": median}


def bench_decoding(repeats: int) -> list[dict]:
    import torch
    from sensor_msgs.msg import Image

    from mtl_perception.compressed import FrameDecoder, torchvision_jpeg_available
    from mtl_perception.ros.conversions import array_to_image_fields, image_to_tensor

    rows = []
    for height, width in SIZES:
        rgb = photo(height, width)
        data = jpeg(rgb)
        cpu = FrameDecoder("cpu")
        raw = Image(**array_to_image_fields(rgb, "rgb8"))
        row = {
            "size": [height, width],
            "jpeg_bytes": len(data),
            "frame_decoder_cv2": timed(
                lambda data=data, cpu=cpu: cpu.decode(data, "rgb8; jpeg compressed bgr8"), repeats
            ),
            "raw_image_to_tensor": timed(lambda msg=raw: image_to_tensor(msg, "cpu"), repeats),
        }
        if torch.cuda.is_available() and torchvision_jpeg_available(torch.device("cuda:0")):
            gpu = FrameDecoder("cuda:0", decoder="torchvision")

            def nvjpeg(data=data, gpu=gpu):
                gpu.decode(data, "jpeg")
                torch.cuda.synchronize()

            row["frame_decoder_torchvision_cuda"] = timed(nvjpeg, repeats)
        rows.append(row)
    return rows


def run_publisher(*, topic: str, rate: float, frames: int, transport: str) -> int:
    """A camera process: 1280x720 frames of the photo (4 shifted copies) at ``rate``, raw rgb8 on ``topic``
    or JPEG q90 on ``topic/compressed``, stamped with the wall clock; reliable keep-last 10 (a default
    rclpy publisher, as a camera driver)."""
    import rclpy
    from sensor_msgs.msg import CompressedImage, Image

    from mtl_perception.ros.conversions import array_to_image_fields

    rclpy.init()
    node = rclpy.create_node(f"bench_camera_{uuid.uuid4().hex[:6]}")
    images = [photo(*CAMERA, shift=8 * i) for i in range(4)]
    if transport == "compressed":
        publisher = node.create_publisher(CompressedImage, f"{topic}/compressed", 10)
        messages = [CompressedImage(format="rgb8; jpeg compressed bgr8", data=jpeg(i)) for i in images]
    else:
        publisher = node.create_publisher(Image, topic, 10)
        messages = [Image(**array_to_image_fields(i, "rgb8")) for i in images]
    deadline = time.monotonic() + 60
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    start = time.monotonic()
    for i in range(frames):
        msg = messages[i % len(messages)]
        msg.header.frame_id = "bench_camera"
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(time.time_ns(), 10**9)
        publisher.publish(msg)
        delay = start + (i + 1) / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    time.sleep(1.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def bench_node_input(*, transport: str, rate: float, duration: float) -> dict:
    """The default node fed by a camera process at ``rate`` for ``duration`` s; throughput and stages."""
    config = bench_node.NodeConfig("shipped", 0, 0)
    frames = int(rate * duration)
    extra = ("-p", f"image_transport:={transport}", "-p", "diagnostics_period:=1.0")
    input_topic = "image/compressed" if transport == "compressed" else "image"
    try:
        with bench_node.node_under_test(
            config, device="auto", topics=bench_node.NODE_OUTPUTS, extra=extra, input_topic=input_topic
        ) as node:
            command = [sys.executable, __file__, "--role", "publisher", "--topic", f"{node.namespace}/image",
                       "--rate", str(rate), "--frames", str(frames), "--transport", transport]  # fmt: skip
            subprocess.run(command, check=True, timeout=600)
            time.sleep(3.0)  # the last frame's processing and one more diagnostics period
            result = bench_node.summarize_node_run(
                node, config=config, device="auto", frames=frames, rate=rate
            )
            values = node.recorder.diagnostic_values(node.namespace)
    except RuntimeError as error:
        return {"transport": transport, "error": str(error)}
    result.update(
        transport=transport,
        image_decoder=values.get("image_decoder", ""),
        model=values.get("model", ""),
        network_size=values.get("network_size", ""),
        frames_received=int(values.get("frames_received", 0)),
        frames_processed=int(values.get("frames_processed", 0)),
        frames_rejected=int(values.get("frames_rejected", 0)),
    )
    return result


def print_report(results: dict) -> None:
    print(f"\nMachine: {results['machine']}\n")
    print(f"| frame | JPEG q{QUALITY} bytes | decode (FrameDecoder, cv2) min / median ms | "
          "raw rgb8 conversion ms | nvJPEG (CUDA) ms |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for row in results["decode"]:
        gpu = row.get("frame_decoder_torchvision_cuda")
        print(
            f"| {row['size'][1]}x{row['size'][0]} | {row['jpeg_bytes']} | "
            f"{row['frame_decoder_cv2']['min_ms']:.2f} / {row['frame_decoder_cv2']['median_ms']:.2f} | "
            f"{row['raw_image_to_tensor']['median_ms']:.3f} | "
            + (f"{gpu['min_ms']:.2f} / {gpu['median_ms']:.2f} |" if gpu else "not measured (no GPU) |")
        )
    if results.get("node"):
        size = f"{CAMERA[1]}x{CAMERA[0]}"
        print(f"\nNode, default configuration, {size} camera at {results['camera_rate_hz']} Hz:\n")
        print("| input | out fps | received | processed | dropped | p50 ms | p99 ms | convert ms | flow ms "
              "| network ms |")  # fmt: skip
        print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in results["node"]:
            if "error" in row:
                print(f"| {row['transport']} | error: {row['error'][:200]} |")
                continue
            stages = row["stages_ms"]
            print(
                f"| {row['transport']} | {row['throughput_fps']:.2f} | "
                f"{row['frames_received']}/{row['published']} | "
                f"{row['frames_processed']} | {row['drop_rate']:.0%} | {row['latency']['p50_ms']:.0f} | "
                f"{row['latency']['p99_ms']:.0f} | {stages.get('convert', float('nan')):.2f} | "
                f"{stages.get('flow', float('nan')):.1f} | {stages.get('network', float('nan')):.1f} |"
            )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--role", choices=("bench", "publisher"), default="bench")
    ap.add_argument("--topic", default="/bench_image")
    ap.add_argument("--transport", choices=("raw", "compressed"), default="compressed")
    ap.add_argument("--rate", type=float, default=15.0)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of camera per node run")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--skip-node", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "decode.json")
    args = ap.parse_args(argv)
    if args.role == "publisher":
        return run_publisher(topic=args.topic, rate=args.rate, frames=args.frames, transport=args.transport)
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    results = {
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {gpu}; {platform.python_version()}, "
        f"torch {torch.__version__}, cv2 {cv2.__version__}, torch threads {torch.get_num_threads()}",
        "load_average_at_start": list(os.getloadavg()),
        "camera_rate_hz": args.rate,
        "decode": bench_decoding(args.repeats),
    }
    if not args.skip_node:
        results["node"] = [
            bench_node_input(transport=t, rate=args.rate, duration=args.duration)
            for t in ("compressed", "raw")
        ]
    results["load_average_at_end"] = list(os.getloadavg())
    atomic_write_bytes(args.out, json.dumps(results, indent=2).encode())
    print_report(results)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
