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
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from mtl_perception import pipeline_factory
from mtl_perception.data.cityscapes import FIVE_CLASS_NAMES, FrameId, cityscapes_path, semantic_palette
from mtl_perception.data.ground_truth import FrameGroundTruth, GroundTruthReader
from mtl_perception.data.synthetic import annotated_index, generate
from mtl_perception.flow import FarnebackParams, flow_to_color
from mtl_perception.imageio import read_image
from mtl_perception.inference import BACKENDS
from mtl_perception.metrics import ConfusionMatrix, DepthARD
from mtl_perception.pipeline import STAGES, PerceptionPipeline, PipelineResult, colorize, overlay_mask

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


@dataclass
class DemoSequence:
    """The generated drive as the pipeline sees it, plus the ground truth of its annotated frame."""

    frames: list[np.ndarray]  # HxWx3 uint8 RGB
    stamps: list[float]  # seconds
    annotated: int  # index of the frame with ground truth
    truth: FrameGroundTruth
    render_s: float


def render_sequence(*, frames: int, height: int, width: int, seed: int) -> DemoSequence:
    """Render one synthetic snippet into a temporary Cityscapes tree and read it back like a dataset."""
    with tempfile.TemporaryDirectory(prefix="mtl_demo_") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        generate(
            root,
            "val",
            sequences=1,
            frames=frames,
            height=height,
            width=width,
            seed=seed,
            city="demo",
            show_progress=False,
        )
        render_s = time.perf_counter() - start
        ids = [FrameId("demo", 0, i) for i in range(frames)]
        paths = [cityscapes_path(root, "image_sequence", "val", f) for f in ids]
        images = [np.ascontiguousarray(read_image(p, cv2.IMREAD_COLOR)[:, :, ::-1]) for p in paths]
        stamps = [int(cityscapes_path(root, "timestamp", "val", f).read_text()) * 1e-9 for f in ids]
        annotated = annotated_index(frames)
        truth = GroundTruthReader(root, "val").read(ids[annotated], expected_size=(height, width))
    return DemoSequence(images, stamps, annotated, truth, render_s)


def build_pipeline(args) -> PerceptionPipeline:
    """The runtime pipeline around ``--model`` (or an untrained seeded preset), output at the input size."""
    params = (
        FarnebackParams.from_dict(json.loads(args.flow_params)) if args.flow_params else FarnebackParams()
    )
    return pipeline_factory.build_pipeline(
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


def stream(pipeline: PerceptionPipeline, sequence: DemoSequence) -> tuple[list[PipelineResult], float]:
    """Every frame through the pipeline in stamp order; returns the results and the wall time in seconds."""
    start = time.perf_counter()
    results = [
        pipeline.process(frame, stamp, want_flow=True, want_image=True)
        for frame, stamp in zip(sequence.frames, sequence.stamps, strict=True)
    ]
    return results, time.perf_counter() - start


def score(result: PipelineResult, truth: FrameGroundTruth, *, trained: bool) -> dict:
    """Depth ARD and semantic / motion mIoU of one frame against its ground truth."""
    ard, semantic_cm, motion_cm = DepthARD(), ConfusionMatrix(len(FIVE_CLASS_NAMES)), ConfusionMatrix(2)
    ard.update(result.depth, truth.depth)
    semantic_cm.update(result.semantic, truth.semantic)
    motion_cm.update(result.motion, truth.motion)
    return {
        "depth_ard": ard.compute(),
        "semantic_miou": semantic_cm.miou(),
        "semantic_iou_per_class": [None if np.isnan(v) else float(v) for v in semantic_cm.iou()],
        "motion_miou": motion_cm.miou(),
        "note": "single frame" if trained else "single synthetic frame; meaningless for an untrained model",
    }


def write_mosaic(path: Path, sequence: DemoSequence, results: list[PipelineResult]) -> None:
    """One row per shown frame (second, middle, last): input | flow | depth | semantic | motion."""
    count = len(sequence.frames)
    palette = semantic_palette("five")
    rows = []
    for i in sorted({1, count // 2, count - 1} & set(range(count))):
        frame, r = sequence.frames[i], results[i]
        tiles = [
            label(frame, f"input t={sequence.stamps[i] - sequence.stamps[0]:.3f}s"),
            label(flow_to_color(r.flow), f"flow (partner dt {1e3 * (r.partner_dt or 0):.0f} ms)"),
            label(depth_to_color(r.depth), "depth"),
            label(colorize(r.semantic, palette), "semantic"),
            label(overlay_mask(frame, r.motion), "motion"),
        ]
        rows.append(np.concatenate(tiles, axis=1))
    cv2.imwrite(str(path), np.concatenate(rows, axis=0)[:, :, ::-1])


def latency_report(
    pipeline: PerceptionPipeline,
    sequence: DemoSequence,
    results: list[PipelineResult],
    *,
    wall_s: float,
    model_text: str,
    trained: bool,
) -> dict:
    """Per-stage milliseconds and throughput, without the first frame (it pays one-off set-up costs)."""
    timings = [r.timings for r in results]
    table = summarize(timings[1:] if len(timings) > 1 else timings)
    height, width = sequence.frames[0].shape[:2]
    return {
        "model": model_text,
        "trained": trained,
        "backend": pipeline.backend.name,
        "device": str(pipeline.device),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "input_size": [height, width],
        "network_size": list(pipeline.network_size),
        "flow_params": pipeline.flow_params.to_dict(),
        "frames": len(sequence.frames),
        "render_s": sequence.render_s,
        "pipeline_wall_s": wall_s,
        "fps_steady": 1000.0 / table["total"]["mean_ms"],
        "stages_ms": table,
    }


def summary_lines(report: dict, metrics: dict) -> list[str]:
    """The Markdown of ``latency.md`` (also printed)."""
    (height, width), (net_h, net_w) = report["input_size"], report["network_size"]
    return [
        f"# mtl_perception demo: {report['frames']} frames {height}x{width} -> network {net_h}x{net_w}",
        "",
        f"Model: {report['model']}; backend {report['backend']} on {report['device']}; {report['machine']}.",
        "",
        "| stage | mean ms | p50 ms | p90 ms |",
        "|---|---:|---:|---:|",
        *(
            f"| {s} | {v['mean_ms']:.1f} | {v['p50_ms']:.1f} | {v['p90_ms']:.1f} |"
            for s, v in report["stages_ms"].items()
        ),
        "",
        f"Steady-state throughput: {report['fps_steady']:.2f} frames/s (first frame excluded).",
        f"Annotated frame: depth ARD {metrics['depth_ard']:.3f}, "
        f"semantic mIoU {metrics['semantic_miou']:.3f}, "
        f"motion mIoU {metrics['motion_miou']:.3f} ({metrics['note']}).",
    ]


def run(args) -> dict:
    """Render a drive, stream it through the pipeline, write the mosaic, latency and metrics to ``--out``."""
    out = Path(args.out)
    prepare_out(out)
    sequence = render_sequence(frames=args.frames, height=args.height, width=args.width, seed=args.seed)
    pipeline = build_pipeline(args)
    results, wall_s = stream(pipeline, sequence)
    trained = args.model is not None
    model_text = args.model if trained else f"UNTRAINED seeded '{args.preset}' model (no --model given)"

    write_mosaic(out / "mosaic.png", sequence, results)
    report = latency_report(
        pipeline, sequence, results, wall_s=wall_s, model_text=model_text, trained=trained
    )
    metrics = {
        "annotated_frame": sequence.annotated,
        **score(results[sequence.annotated], sequence.truth, trained=trained),
    }
    (out / "latency.json").write_text(json.dumps(report, indent=2))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    lines = summary_lines(report, metrics)
    (out / "latency.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    written = ", ".join(
        str(out / name) for name in ("mosaic.png", "latency.md", "latency.json", "metrics.json")
    )
    print(f"\nwrote {written}")
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
