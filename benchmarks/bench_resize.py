"""The preprocess stage: camera frame -> network input with ``pipeline.resize_for_network``.

Times the node's path (``upload_rgb`` of an (H, W, 3) uint8 frame + the uint8 channels-last antialiased
resize on the CPU) against the float path it replaced (frame -> float -> antialiased float resize -> round),
for 2048x1024 -> 192x384 and -> 384x768, and reports the largest difference between the two (grey levels).
Target (issue 12): <= 3 ms at 2048x1024 -> 192x384 on 2 cores. Min / median ms over --repeats.

    python benchmarks/bench_resize.py [--threads 2] [--repeats 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from mtl_perception.atomic import atomic_write_bytes
from mtl_perception.pipeline import resize_for_network, upload_rgb

CAMERA = (1024, 2048)
SIZES = ((192, 384), (384, 768))


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return float(np.min(samples)), float(np.median(samples))


def float_path(frame: np.ndarray, size) -> torch.Tensor:
    image = torch.from_numpy(frame).permute(2, 0, 1).unsqueeze(0).float()
    resized = F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=True)
    return resized.round_().clamp_(0.0, 255.0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "resize.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    frame = np.random.default_rng(0).integers(0, 256, (*CAMERA, 3), dtype=np.uint8)
    device = torch.device("cpu")
    rows = []
    print(f"torch {torch.__version__}, {args.threads} threads, camera {CAMERA[1]}x{CAMERA[0]} rgb8\n")
    print("| network size | resize_for_network (uint8) | float path | max difference |\n|---|---:|---:|---:|")
    for size in SIZES:
        ours = timed(lambda size=size: resize_for_network(upload_rgb(frame, device), size), args.repeats)
        reference = timed(lambda size=size: float_path(frame, size), args.repeats)
        diff = float(
            (resize_for_network(upload_rgb(frame, device), size) - float_path(frame, size)).abs().max()
        )
        rows.append({"size": list(size), "uint8_ms": ours, "float_ms": reference, "max_diff": diff})
        times = f"{ours[0]:.2f} / {ours[1]:.2f} | {reference[0]:.2f} / {reference[1]:.2f}"
        print(f"| {size[0]}x{size[1]} | {times} | {diff:.0f} |")
    atomic_write_bytes(args.out, json.dumps({"threads": args.threads, "rows": rows}, indent=2).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
