"""The shipped model on a real photograph: what a model trained on generated streets does with a real image.

    python benchmarks/real_photo.py                      # writes docs/images/real_photo.png (+ .json)

No real street image is available offline, so this uses the one real outdoor photograph that an installed
package carries: scikit-image's ``rocket.jpg`` (``skimage.data.rocket()``: a rocket on its launch pad,
sky, ground). It is not a street scene. A short clip is made of it by a known camera motion (a slow zoom
about the centre, as when driving forward, at 17 Hz) and streamed through the same pipeline as the node
and the demo (resize -> live Farnebäck flow -> network). The scene is static, so every pixel called
"moving" is an error; the class shares show what the network makes of real textures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from mtl_perception import demo_figures, pipeline_factory
from mtl_perception.colormap import colorize, overlay_mask
from mtl_perception.data.cityscapes import FIVE_CLASS_NAMES, semantic_palette
from mtl_perception.flow import flow_to_color
from mtl_perception.pipeline_config import PipelineConfig

REPO = Path(__file__).resolve().parents[1]
FPS = 17.0
ZOOM_PER_FRAME = 0.012  # about what a car at 8 m/s does to a scene 10-20 m ahead


def photo(height: int, width: int) -> np.ndarray:
    """skimage's rocket.jpg, centre-cropped to the aspect of ``height`` x ``width`` and resized (RGB)."""
    from skimage import data

    image = data.rocket()
    h, w = image.shape[:2]
    crop_h = min(h, int(round(w * height / width)))
    top = (h - crop_h) // 2
    image = image[top : top + crop_h]
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA))


def clip(image: np.ndarray, frames: int) -> list[np.ndarray]:
    """``frames`` views of ``image`` zooming in about the centre (a static scene, the camera moving)."""
    h, w = image.shape[:2]
    views = []
    for k in range(frames):
        scale = 1.0 + ZOOM_PER_FRAME * k
        matrix = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
        views.append(
            cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        )
    return views


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="", help="default: the shipped model")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "real_photo.png")
    args = ap.parse_args(argv)
    try:
        config = PipelineConfig(model_file=args.model, device="cpu", output_size="input")
        choice = pipeline_factory.choose_model(config)
        model = choice.model
        pipeline = pipeline_factory.build_pipeline(config, choice=choice)
    except ValueError as error:
        print(f"real_photo: error: {error}", file=sys.stderr)
        return 2
    views = clip(photo(args.height, args.width), args.frames)
    results = [pipeline.process(v, k / FPS, want_flow=True) for k, v in enumerate(views)]
    last, frame = results[-1], views[-1]
    tiles = [
        demo_figures.label(frame, "real photo (skimage rocket.jpg)"),
        demo_figures.label(flow_to_color(last.flow), "flow input (camera zoom)"),
        demo_figures.label(demo_figures.depth_to_color(last.depth), "depth: predicted"),
        demo_figures.label(colorize(last.semantic, semantic_palette("five")), "semantic: predicted"),
        demo_figures.label(overlay_mask(frame, last.motion), "motion: predicted (all static)"),
    ]
    tiles[1] = cv2.resize(tiles[1], (args.width, args.height), interpolation=cv2.INTER_NEAREST)
    row = np.concatenate(tiles, 1)
    figure = demo_figures.mosaic([row])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    demo_figures.write_png(args.out, figure)
    shares = np.bincount(last.semantic.ravel(), minlength=len(FIVE_CLASS_NAMES)) / last.semantic.size
    report = {
        "model": model.label,
        "image": "skimage.data.rocket() (real photograph, not a street scene)",
        "class_share": {n: float(s) for n, s in zip(FIVE_CLASS_NAMES, shares, strict=False)},
        "moving_share": float(last.motion.mean()),
        "depth_median_m": float(np.nanmedian(last.depth)),
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
