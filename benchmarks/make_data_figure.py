"""docs/images/synthetic_example.png: a generated frame and its depth, semantic and motion ground truth.

.venv/bin/python benchmarks/make_data_figure.py [--seed 4] [--out docs/images/synthetic_example.png]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.data import colorize_semantic, label_ids_to_semantic
from mtl_perception.data.synthetic import annotated_index, cityscapes_like_camera, make_scene, render_frame


def mosaic(seed: int, height: int = 256, width: int = 512) -> np.ndarray:
    """2x2 RGB mosaic: image | depth (turbo, near = red) / semantic (Cityscapes trainId colours) | motion."""
    scene = make_scene(np.random.default_rng(seed), 30, 17.0)
    frame = render_frame(scene, annotated_index(30), cityscapes_like_camera(height, width), height, width)
    valid = frame.depth > 0
    inv = np.zeros_like(frame.depth)
    inv[valid] = 1.0 / np.clip(frame.depth[valid], 1.0, 255.0)  # inverse depth spreads the colours better
    depth_rgb = cv2.applyColorMap(np.uint8(np.clip(inv / inv.max() * 255, 0, 255)), cv2.COLORMAP_TURBO)[
        ..., ::-1
    ]
    depth_rgb = np.where(valid[..., None], depth_rgb, 0).astype(np.uint8)
    semantic = colorize_semantic(label_ids_to_semantic(frame.label_ids, "trainid"), "trainid")
    motion = frame.image // 3
    motion[frame.motion > 0] = (255, 40, 40)
    tiles = [
        (frame.image, "image"),
        (depth_rgb, "depth (1/Z)"),
        (semantic, "semantic (trainId)"),
        (motion, "motion"),
    ]
    out = []
    for tile, name in tiles:
        tile = np.ascontiguousarray(tile)
        cv2.putText(tile, name, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 2, cv2.LINE_AA)
        out.append(tile)
    return np.concatenate([np.concatenate(out[:2], 1), np.concatenate(out[2:], 1)], 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs/images/synthetic_example.png"
    )
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), mosaic(args.seed)[..., ::-1], [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
