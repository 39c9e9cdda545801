"""``python -m mtl_perception.demo --out demo_output``: the shipped model on a held-out generated drive.

Renders a synthetic Cityscapes-like drive that no training run saw (its own seed, ``DEMO_SEED``; the
shipped model trained on seeds 1000/2000 and is scored on 3000) with ground truth for every frame, streams
its frames with their timestamps through :class:`mtl_perception.pipeline.PerceptionPipeline` (resize ->
Farnebäck flow against the partner frame ``flow_dt`` earlier -> two-stream network -> depth, semantic,
motion, at the camera resolution) and writes to ``--out``:

* ``mosaic.png``: for a few frames, the predictions (input, depth, semantic, motion) above the ground
  truth (flow input, depth, semantic, motion), with a depth scale bar and the class legend;
* ``drive.gif``: the predictions over the whole drive (input | depth | semantic | motion);
* ``metrics.md`` / ``metrics.json``: depth ARD, semantic and motion mIoU and per-class IoU over every
  annotated frame (``mtl_perception.metrics``, the code training uses);
* ``latency.md`` / ``latency.json``: per-stage milliseconds (mean, p50, p90) and frames per second.

Model: without ``--model``, the model the package ships (``mtl_perception.model.shipped``; an error
naming ``make shipped-model`` when it is absent); ``--model untrained`` for the seeded untrained preset
(labelled UNTRAINED everywhere: the outputs only show that the plumbing works); or a checkpoint / ONNX /
engine file. About a minute on two CPU cores with the defaults.
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

from mtl_perception import demo_figures, pipeline_factory
from mtl_perception.data.cityscapes import FIVE_CLASS_NAMES, FrameId, cityscapes_path
from mtl_perception.data.ground_truth import FrameGroundTruth, GroundTruthReader
from mtl_perception.data.synthetic import annotated_frames, generate
from mtl_perception.imageio import read_image
from mtl_perception.inference import BACKENDS
from mtl_perception.metrics import ConfusionMatrix, DepthARD
from mtl_perception.model.shipped import ResolvedModel
from mtl_perception.pipeline import STAGES, PerceptionPipeline, PipelineResult
from mtl_perception.pipeline_config import PipelineConfig

MARKER = ".mtl_perception_demo"  # marks a folder this demo wrote, so a re-run may replace its own files
#: the demo drive's seed: none of the shipped model's data (train 1000, val 2000, held-out test 3000)
DEMO_SEED = 4000
MOTION_CLASS_NAMES = ("static", "moving")


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
    """The generated drive as the pipeline sees it, plus the ground truth of its annotated frames."""

    frames: list[np.ndarray]  # HxWx3 uint8 RGB
    stamps: list[float]  # seconds
    truth: dict[int, FrameGroundTruth]  # frame index -> ground truth (every frame with a flow partner)
    render_s: float


def render_sequence(*, frames: int, height: int, width: int, seed: int) -> DemoSequence:
    """Render one synthetic snippet (ground truth on every frame) into a temporary Cityscapes tree and read
    it back like a dataset."""
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
            annotate="all",
        )
        render_s = time.perf_counter() - start
        ids = [FrameId("demo", 0, i) for i in range(frames)]
        paths = [cityscapes_path(root, "image_sequence", "val", f) for f in ids]
        images = [np.ascontiguousarray(read_image(p, cv2.IMREAD_COLOR)[:, :, ::-1]) for p in paths]
        stamps = [int(cityscapes_path(root, "timestamp", "val", f).read_text()) * 1e-9 for f in ids]
        reader = GroundTruthReader(root, "val")
        truth = {
            i: reader.read(ids[i], expected_size=(height, width)) for i in annotated_frames(frames, "all")
        }
    return DemoSequence(images, stamps, truth, render_s)


def pipeline_config(args) -> PipelineConfig:
    """The demo's settings: the node's defaults (the model's own input contract), output at the input
    (ground-truth) size."""
    return PipelineConfig(
        model_file=args.model or "",
        model_preset=args.preset,
        backend=args.backend,
        device=args.device,
        network_height=args.network_height,
        network_width=args.network_width,
        output_size="input",
    )


def stream(pipeline: PerceptionPipeline, sequence: DemoSequence) -> tuple[list[PipelineResult], float]:
    """Every frame through the pipeline in stamp order; returns the results and the wall time in seconds."""
    start = time.perf_counter()
    results = [
        pipeline.process(frame, stamp, want_flow=True, want_image=True)
        for frame, stamp in zip(sequence.frames, sequence.stamps, strict=True)
    ]
    return results, time.perf_counter() - start


def _per_class(matrix: ConfusionMatrix, names: tuple[str, ...]) -> dict[str, float | None]:
    return {n: None if np.isnan(v) else float(v) for n, v in zip(names, matrix.iou(), strict=True)}


def score(results: list[PipelineResult], truth: dict[int, FrameGroundTruth]) -> dict:
    """Depth ARD, semantic / motion mIoU and per-class IoU over every annotated frame."""
    ard, semantic_cm, motion_cm = DepthARD(), ConfusionMatrix(len(FIVE_CLASS_NAMES)), ConfusionMatrix(2)
    for index, gt in truth.items():
        ard.update(results[index].depth, gt.depth)
        semantic_cm.update(results[index].semantic, gt.semantic)
        motion_cm.update(results[index].motion, gt.motion)
    return {
        "frames_scored": len(truth),
        "depth_ard": ard.compute(),
        "semantic_miou": semantic_cm.miou(),
        "semantic_iou_per_class": _per_class(semantic_cm, FIVE_CLASS_NAMES),
        "motion_miou": motion_cm.miou(),
        "motion_iou_per_class": _per_class(motion_cm, MOTION_CLASS_NAMES),
    }


def shown_frames(sequence: DemoSequence, count: int = 3) -> list[int]:
    """``count`` annotated frames spread over the drive (first, middle, last annotated)."""
    annotated = sorted(sequence.truth)
    picks = np.linspace(0, len(annotated) - 1, min(count, len(annotated))).round().astype(int)
    return [annotated[i] for i in dict.fromkeys(picks.tolist())]


def write_pictures(
    out: Path,
    sequence: DemoSequence,
    results: list[PipelineResult],
    *,
    gif: bool,
    readme_image: Path | None = None,
) -> list[str]:
    """mosaic.png (prediction above ground truth for a few frames) and drive.gif; returns the names."""
    t0 = sequence.stamps[0]
    blocks = [
        demo_figures.frame_block(
            sequence.frames[i], results[i], sequence.truth[i], stamp_s=sequence.stamps[i] - t0
        )
        for i in shown_frames(sequence)
    ]
    picture = demo_figures.mosaic(blocks)
    demo_figures.write_png(out / "mosaic.png", picture)
    if readme_image is not None:  # `make demo` refreshes the README's picture (docs/images/demo_mosaic.png)
        demo_figures.write_png(readme_image, picture)
    if not gif:
        return ["mosaic.png"]
    strips = [demo_figures.prediction_strip(f, r) for f, r in zip(sequence.frames, results, strict=True)]
    fps = (len(sequence.stamps) - 1) / max(sequence.stamps[-1] - t0, 1e-6)
    demo_figures.write_gif(out / "drive.gif", strips, fps=fps)
    return ["mosaic.png", "drive.gif"]


def latency_report(
    pipeline: PerceptionPipeline,
    sequence: DemoSequence,
    results: list[PipelineResult],
    *,
    wall_s: float,
    model: ResolvedModel,
) -> dict:
    """Per-stage milliseconds and throughput, without the first frame (it pays one-off set-up costs)."""
    timings = [r.timings for r in results]
    table = summarize(timings[1:] if len(timings) > 1 else timings)
    height, width = sequence.frames[0].shape[:2]
    return {
        "model": model.label,
        "trained": model.trained,
        "backend": pipeline.backend.name,
        "device": str(pipeline.device),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "input_size": [height, width],
        "network_size": list(pipeline.network_size),
        "input_contract": pipeline.backend.contract.to_dict(),
        "contract_overridden": [str(o) for o in pipeline.overrides] if model.trained else [],
        "frames": len(sequence.frames),
        "render_s": sequence.render_s,
        "pipeline_wall_s": wall_s,
        "fps_steady": 1000.0 / table["total"]["mean_ms"],
        "stages_ms": table,
    }


def latency_lines(report: dict) -> list[str]:
    """The Markdown of ``latency.md``."""
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
    ]


def _cell(value: float | None) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def metrics_lines(metrics: dict, model: ResolvedModel) -> list[str]:
    """The Markdown of ``metrics.md``: the headline table, then the per-class IoU."""
    lines = [
        f"# Held-out drive (seed {metrics['seed']}): {metrics['frames_scored']} annotated frames",
        "",
        f"Model: {model.label}.",
        "",
        "| depth ARD | semantic mIoU | motion mIoU |",
        "|---:|---:|---:|",
        "| " + " | ".join(_cell(metrics[k]) for k in ("depth_ard", "semantic_miou", "motion_miou")) + " |",
        "",
        "| class | IoU |",
        "|---|---:|",
        *(f"| semantic: {n} | {_cell(v)} |" for n, v in metrics["semantic_iou_per_class"].items()),
        *(f"| motion: {n} | {_cell(v)} |" for n, v in metrics["motion_iou_per_class"].items()),
    ]
    if not model.trained:
        lines += ["", "The model is UNTRAINED: these numbers are a floor, not a result."]
    return lines


def run(args) -> dict:
    """Render a drive, stream it through the pipeline, write pictures, metrics and latency to ``--out``."""
    config = pipeline_config(args)
    config.validate()
    choice = pipeline_factory.choose_model(config)  # before any rendering: a missing model fails at once
    model = choice.model
    readme_image = Path(args.readme_image) if args.readme_image else None
    if readme_image is not None and not model.trained:
        raise ValueError("--readme-image shows the shipped model: not written for an UNTRAINED model")
    out = Path(args.out)
    prepare_out(out)
    sequence = render_sequence(frames=args.frames, height=args.height, width=args.width, seed=args.seed)
    pipeline = pipeline_factory.build_pipeline(config, choice=choice)
    results, wall_s = stream(pipeline, sequence)

    written = write_pictures(out, sequence, results, gif=not args.no_gif, readme_image=readme_image)
    report = latency_report(pipeline, sequence, results, wall_s=wall_s, model=model)
    metrics = {
        "seed": args.seed,
        "model": model.label,
        "trained": model.trained,
        **score(results, sequence.truth),
    }
    for name, payload in (("latency", report), ("metrics", metrics)):
        (out / f"{name}.json").write_text(json.dumps(payload, indent=2))
    text = {"metrics": metrics_lines(metrics, model), "latency": latency_lines(report)}
    for name, lines in text.items():
        (out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(text["metrics"] + [""] + text["latency"]))
    written += ["metrics.md", "metrics.json", "latency.md", "latency.json"]
    print(f"\nwrote {', '.join(str(out / name) for name in written)}")
    if not model.trained:
        print("NOTE: the model is UNTRAINED; leave out --model for the shipped one (`make shipped-model`).")
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mtl_perception.demo", description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", default="demo_output", help="output folder (created; a re-run replaces its own files)"
    )
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint (.pt), ONNX or TensorRT engine, or 'untrained'; default: the shipped model",
    )
    p.add_argument("--preset", default="ti", help="architecture of --model untrained")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--device", default="auto")
    p.add_argument("--frames", type=int, default=30, help="frames of the drive (17 Hz, as the training data)")
    p.add_argument("--height", type=int, default=256, help="camera (input) height")
    p.add_argument("--width", type=int, default=512, help="camera (input) width")
    p.add_argument("--network-height", type=int, default=0, help="0 = the model's own size")
    p.add_argument("--network-width", type=int, default=0, help="0 = the model's own size")
    p.add_argument("--seed", type=int, default=DEMO_SEED, help="drive seed (default: held out from training)")
    p.add_argument("--no-gif", action="store_true", help="skip drive.gif")
    p.add_argument(
        "--readme-image", help="also write the mosaic here (make demo: docs/images/demo_mosaic.png)"
    )
    args = p.parse_args(argv)
    if args.frames < 3:
        p.error("--frames must be >= 3 (ground truth starts at the first frame with a flow partner, frame 2)")
    try:
        run(args)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        print(f"demo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
