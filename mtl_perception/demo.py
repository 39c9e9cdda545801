"""``python -m mtl_perception.demo --out demo_output``: the whole perception pipeline on a generated sequence.

Renders a short synthetic Cityscapes-like drive (``mtl_perception.data.synthetic``), streams its frames
with their timestamps through :class:`mtl_perception.pipeline.PerceptionPipeline` (resize -> Farnebäck
flow against the partner frame ``flow_dt`` earlier -> two-stream network -> depth, semantic, motion) and
writes to ``--out``:

* ``mosaic.png``: per shown frame, input | flow colour | depth | semantic | motion overlay;
* ``latency.md`` / ``latency.json``: per-stage milliseconds (mean, p50, p90) and frames per second;
* ``metrics.json``: depth ARD and semantic / motion mIoU on the annotated frame (``mtl_perception.metrics``).

Model: ``--model`` (checkpoint / ONNX / engine) or, without one, a seeded UNTRAINED ``ti`` model: then the
outputs only show that the plumbing works, not what a trained network predicts, and the output says so.
Runs in well under two minutes on two CPU cores with the defaults.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_perception import pipeline_factory
from mtl_perception.data.cityscapes import (
    FrameId,
    cityscapes_path,
    disparity_to_depth,
    label_ids_to_semantic,
    read_camera,
    semantic_palette,
)
from mtl_perception.data.synthetic import annotated_index, generate
from mtl_perception.flow import FarnebackParams, flow_to_color
from mtl_perception.inference import BACKENDS
from mtl_perception.metrics import ConfusionMatrix, DepthARD
from mtl_perception.pipeline import STAGES, colorize, overlay_mask

MARKER = ".mtl_perception_demo"  # marks a folder this demo wrote, so a re-run may replace its own files


def depth_to_color(depth: np.ndarray, max_depth: float = 80.0) -> np.ndarray:
    """Inverse-depth colour map (near = bright), NaN (invalid) black; RGB uint8."""
    inverse = np.where(np.isfinite(depth), 1.0 / np.clip(depth, 1.0, max_depth), 0.0)
    scaled = (255 * (inverse - 1 / max_depth) / (1 - 1 / max_depth)).clip(0, 255).astype(np.uint8)
    color = cv2.applyColorMap(scaled, cv2.COLORMAP_MAGMA)[:, :, ::-1]
    color[~np.isfinite(depth)] = 0
    return np.ascontiguousarray(color)


def label(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def prepare_out(out: Path) -> None:
    """Create ``out``; refuse a non-empty folder this demo did not write (nothing of the user's is lost)."""
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise FileExistsError(
            f"{out} exists, is not empty and was not written by this demo; choose another --out"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by python -m mtl_perception.demo\n")


def summarize(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    table = {}
    for stage in (*STAGES, "total"):
        values = np.array([t.get(stage, 0.0) if stage != "total" else sum(t.values()) for t in timings])
        table[stage] = {
            "mean_ms": float(values.mean()),
            "p50_ms": float(np.percentile(values, 50)),
            "p90_ms": float(np.percentile(values, 90)),
        }
    return table


def run(args) -> dict:
    out = Path(args.out)
    prepare_out(out)
    height, width = args.height, args.width
    with tempfile.TemporaryDirectory(prefix="mtl_demo_") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        generate(
            root,
            "val",
            sequences=1,
            frames=args.frames,
            height=height,
            width=width,
            seed=args.seed,
            city="demo",
            show_progress=False,
        )
        render_s = time.perf_counter() - t0
        frames, stamps = [], []
        for i in range(args.frames):
            fid = FrameId("demo", 0, i)
            bgr = cv2.imread(str(cityscapes_path(root, "image_sequence", "val", fid)), cv2.IMREAD_COLOR)
            frames.append(np.ascontiguousarray(bgr[:, :, ::-1]))
            stamps.append(int(cityscapes_path(root, "timestamp", "val", fid).read_text()) * 1e-9)
        ann = FrameId("demo", 0, annotated_index(args.frames))
        camera = read_camera(cityscapes_path(root, "camera", "val", ann))
        disparity = cv2.imread(str(cityscapes_path(root, "disparity", "val", ann)), cv2.IMREAD_UNCHANGED)
        gt_depth = disparity_to_depth(disparity, camera.fx, camera.baseline)
        label_ids = cv2.imread(str(cityscapes_path(root, "label_ids", "val", ann)), cv2.IMREAD_UNCHANGED)
        gt_semantic = label_ids_to_semantic(label_ids, "five")
        gt_motion = cv2.imread(str(cityscapes_path(root, "motion", "val", ann)), cv2.IMREAD_UNCHANGED)

    trained = args.model is not None
    model_text = args.model if trained else f"UNTRAINED seeded '{args.preset}' model (no --model given)"
    params = (
        FarnebackParams.from_dict(json.loads(args.flow_params)) if args.flow_params else FarnebackParams()
    )
    pipeline = pipeline_factory.build_pipeline(
        pipeline_factory.PipelineConfig(
            model_file=args.model or "",
            model_preset=args.preset,
            backend=args.backend,
            device=args.device,
            network_height=args.network_height,
            network_width=args.network_width,
            output_size="input",
            flow=params,
        )
    )
    backend = pipeline.backend
    palette = semantic_palette("five")

    results, timings = [], []
    ard, semantic_cm, motion_cm = DepthARD(), ConfusionMatrix(len(palette)), ConfusionMatrix(2)
    wall = time.perf_counter()
    for i, (frame, stamp) in enumerate(zip(frames, stamps, strict=True)):
        result = pipeline.process(frame, stamp, want_flow=True, want_image=True)
        timings.append(result.timings)
        results.append(result)
        if i == annotated_index(args.frames):
            ard.update(result.depth, gt_depth)
            semantic_cm.update(result.semantic, gt_semantic)
            motion_cm.update(result.motion, gt_motion)
    wall = time.perf_counter() - wall
    steady = timings[1:] if len(timings) > 1 else timings  # the first frame pays one-off set-up costs

    shown = sorted({1, len(frames) // 2, len(frames) - 1} & set(range(len(frames))))
    rows = []
    for i in shown:
        r = results[i]
        tiles = [
            label(frames[i], f"input t={stamps[i] - stamps[0]:.3f}s"),
            label(flow_to_color(r.flow), f"flow (partner dt {1e3 * (r.partner_dt or 0):.0f} ms)"),
            label(depth_to_color(r.depth), "depth"),
            label(colorize(r.semantic, palette), "semantic"),
            label(overlay_mask(frames[i], r.motion), "motion"),
        ]
        rows.append(np.concatenate(tiles, axis=1))
    mosaic = np.concatenate(rows, axis=0)
    cv2.imwrite(str(out / "mosaic.png"), mosaic[:, :, ::-1])

    table = summarize(steady)
    report = {
        "model": model_text,
        "trained": trained,
        "backend": backend.name,
        "device": str(pipeline.device),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "input_size": [height, width],
        "network_size": list(pipeline.network_size),
        "flow_params": params.to_dict(),
        "frames": len(frames),
        "render_s": render_s,
        "pipeline_wall_s": wall,
        "fps_steady": 1000.0 / table["total"]["mean_ms"],
        "stages_ms": table,
    }
    metrics = {
        "annotated_frame": annotated_index(args.frames),
        "depth_ard": ard.compute(),
        "semantic_miou": semantic_cm.miou(),
        "semantic_iou_per_class": [None if np.isnan(v) else float(v) for v in semantic_cm.iou()],
        "motion_miou": motion_cm.miou(),
        "note": "single synthetic frame; meaningless for an untrained model"
        if not trained
        else "single frame",
    }
    (out / "latency.json").write_text(json.dumps(report, indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    lines = [
        f"# mtl_perception demo: {len(frames)} frames {height}x{width} -> network "
        f"{pipeline.network_size[0]}x{pipeline.network_size[1]}",
        "",
        f"Model: {model_text}; backend {backend.name} on {pipeline.device}; {report['machine']}.",
        "",
        "| stage | mean ms | p50 ms | p90 ms |",
        "|---|---:|---:|---:|",
        *(f"| {s} | {v['mean_ms']:.1f} | {v['p50_ms']:.1f} | {v['p90_ms']:.1f} |" for s, v in table.items()),
        "",
        f"Steady-state throughput: {report['fps_steady']:.2f} frames/s (first frame excluded).",
        f"Annotated frame: depth ARD {metrics['depth_ard']:.3f}, "
        f"semantic mIoU {metrics['semantic_miou']:.3f}, "
        f"motion mIoU {metrics['motion_miou']:.3f} ({metrics['note']}).",
    ]
    (out / "latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(
        f"\nwrote {out / 'mosaic.png'}, {out / 'latency.md'}, {out / 'latency.json'}, {out / 'metrics.json'}"
    )
    if not trained:
        print("NOTE: the model is untrained; pass --model <checkpoint|onnx|engine> for meaningful outputs.")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtl_perception.demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", default="demo_output", help="output folder (created; a re-run replaces its own files)"
    )
    p.add_argument(
        "--model", default=None, help="checkpoint (.pt), ONNX or TensorRT engine; default: untrained"
    )
    p.add_argument("--preset", default="ti", help="architecture of the untrained model")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--height", type=int, default=192, help="camera (input) height")
    p.add_argument("--width", type=int, default=384, help="camera (input) width")
    p.add_argument("--network-height", type=int, default=192)
    p.add_argument("--network-width", type=int, default=384)
    p.add_argument("--flow-params", default="", help="JSON FarnebackParams, e.g. '{\"levels\": 3}'")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.frames < 2:
        p.error("--frames must be >= 2 (flow needs a partner frame)")
    try:
        run(args)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
