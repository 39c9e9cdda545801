"""Synthetic generator speed (frames/s, render + PNG/JSON writing) at three sizes, and bag conversion speed.

    .venv/bin/python benchmarks/bench_data.py [--frames 6] [--sizes 256x512 512x1024 1024x2048]

Rendering is single-process NumPy; ``make_synthetic_cityscapes --workers N`` renders N snippets at once.
Writes benchmarks/results/data.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_name, save_result  # benchmarks/machine.py (sys.path[0] when run as a script)

from mtl_perception.data.bag import convert
from mtl_perception.data.synthetic import cityscapes_like_camera, generate, make_scene, render_frame


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=6, help="frames rendered per size")
    ap.add_argument("--sizes", nargs="+", default=["256x512", "512x1024", "1024x2048"])
    args = ap.parse_args(argv)
    rows = []
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        scene = make_scene(np.random.default_rng(0), 30, 17.0)
        cam = cityscapes_like_camera(h, w)
        render_frame(scene, 0, cam, h, w)  # warm-up
        t0 = time.perf_counter()
        for i in range(args.frames):
            render_frame(scene, 19, cam, h, w) if i == 0 else render_frame(scene, i, cam, h, w)
        render_s = (time.perf_counter() - t0) / args.frames
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate(
                tmp, "val", sequences=1, frames=args.frames, height=h, width=w, seed=0, show_progress=False
            )
            total_s = (time.perf_counter() - t0) / args.frames
            t0 = time.perf_counter()
            convert(tmp, "val", Path(tmp) / "bag", with_gt=True)
            bag_s = (time.perf_counter() - t0) / args.frames
        rows.append(
            {
                "size": f"{h}x{w}",
                "render_fps": 1 / render_s,
                "generate_fps": 1 / total_s,
                "bag_fps": 1 / bag_s,
            }
        )
        print(
            f"{h:>5}x{w:<5} render {1 / render_s:6.2f} fps   render+write {1 / total_s:6.2f} fps   "
            f"cityscapes_to_bag {1 / bag_s:6.1f} fps",
            flush=True,
        )
    result = {
        "machine": f"{os.cpu_count()}-core {cpu_name()}",
        "python": sys.version.split()[0],
        "frames_per_size": args.frames,
        "rows": rows,
    }
    save_result(result, Path(__file__).resolve().parent / "results" / "data.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
