"""``mtl_infer SOURCE --out DIR``: the model on a video, a folder of images or a rosbag2 folder, without ROS.

The same pipeline as the node (``build_pipeline(PipelineConfig(...))`` with only the model, the device and
the output size set, so the model's own flow settings apply; the flow partner is chosen by time). Writes
to ``DIR`` per processed frame ``<frame>_depth.png`` (uint16 millimetres, 0 = invalid: what
depth_image_proc reads as 16UC1), ``<frame>_semantic.png`` (uint8 class ids) and ``<frame>_motion.png``
(uint8, 1 = moving); ``preview.mp4`` (input | depth | semantic | motion side by side); ``summary.json``
(frames read, processed and skipped with the reasons, per-stage milliseconds, frames/s, the model and the
input settings the pipeline used). ``<frame>`` is the image's name for a folder, else the frame number.

A frame that cannot be used (unreadable, not decodable, another size than the first frame, non-finite
output) is skipped with one line naming it; the run goes on. Ctrl-C (or SIGTERM) stops between frames:
what was written stays, the preview is closed and summary.json says ``"interrupted"``. Every file is
written atomically. Exit code 0 when at least one frame was processed, 2 when none was (one line why),
130 / 143 after a signal.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from mtl_perception.atomic import atomic_path, atomic_write_bytes
from mtl_perception.cli import positive_float, positive_int, tool_main
from mtl_perception.colormap import colorize, colorize_depth, overlay_mask
from mtl_perception.demo_figures import label
from mtl_perception.device import torch_device
from mtl_perception.pipeline_config import OUTPUT_SIZES, PipelineConfig
from mtl_perception.pipeline_factory import build_pipeline, choose_model, semantic_colors
from mtl_perception.signals import Terminated, signals_deferred
from mtl_perception.sources import SourceFrame, open_source

PREVIEW = "preview.mp4"
SUMMARY = "summary.json"
#: preview tiles are at most this tall (the input frame scaled down, the outputs scaled up)
PREVIEW_HEIGHT = 360
#: skipped frames listed one by one in summary.json (all are counted)
LISTED_SKIPS = 200


def depth_to_millimetres(depth: np.ndarray) -> np.ndarray:
    """Metres (NaN / <= 0 invalid) -> uint16 millimetres, 0 = invalid; valid depth stays >= 1 mm and farther
    than 65.535 m saturates."""
    valid = np.isfinite(depth) & (depth > 0)
    mm = np.clip(np.round(np.where(valid, depth, 0.0) * 1000.0), 1, 65535)
    return np.where(valid, mm, 0).astype(np.uint16)


def pipeline_settings(pipeline, model) -> dict:
    """What shaped the pipeline's input and network (recorded in summary.json): the model's input contract,
    which the pipeline follows (nothing here overrides it), and how it ran."""
    return {
        "model": model.label,
        "trained": model.trained,
        "input_contract": pipeline.backend.contract.to_dict(),
        "contract_overridden": [str(o) for o in pipeline.overrides] if model.trained else [],
        "backend": pipeline.backend.name,
        "device": str(pipeline.device),
        "network_size": list(pipeline.network_size),
        "output_size": pipeline.output_size,
        "flow_implementation": pipeline.flow_implementation,
        "flow_implementation_measured_ms": dict(pipeline.flow_input.measured_ms),
    }


def _write_png(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        if not cv2.imwrite(str(tmp), array):
            raise OSError(f"could not write {path}")


def _stage_table(timings: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    stages = dict.fromkeys(key for t in timings for key in t)
    table = {}
    for stage in stages:
        values = np.array([t[stage] for t in timings if stage in t])
        table[stage] = {"mean_ms": float(values.mean()), "p50_ms": float(np.median(values))}
    return table


class PreviewStrip:
    """input | depth | semantic | motion, each tile the input frame's aspect, at most PREVIEW_HEIGHT tall."""

    def __init__(self, size: tuple[int, int], palette: np.ndarray) -> None:
        height, width = size
        scale = min(1.0, PREVIEW_HEIGHT / height)
        self.tile = (max(2, round(height * scale / 2) * 2), max(2, round(width * scale / 2) * 2))
        self.palette = palette

    @property
    def frame_size(self) -> tuple[int, int]:
        """(width, height) of one preview frame, as cv2.VideoWriter wants it."""
        return self.tile[1] * 4, self.tile[0]

    def __call__(self, image: np.ndarray, result) -> np.ndarray:
        h, w = self.tile

        def fit(array, nearest=True):
            interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_AREA
            return cv2.resize(array, (w, h), interpolation=interpolation)

        frame = fit(image, nearest=False)
        tiles = [label(frame, "input")]
        if result.depth is not None:
            tiles.append(label(fit(colorize_depth(result.depth)), "depth 1-80 m"))
        if result.semantic is not None:
            tiles.append(label(fit(colorize(result.semantic, self.palette)), "semantic"))
        if result.motion is not None:
            tiles.append(label(overlay_mask(frame, fit(result.motion)), "motion"))
        tiles += [np.zeros_like(frame)] * (4 - len(tiles))
        return np.concatenate(tiles, 1)


class Run:
    """The counters and per-frame records of one mtl_infer run, and what becomes summary.json."""

    def __init__(self) -> None:
        self.read = self.processed = self.resets = 0
        self.skipped: dict[str, int] = {}
        self.skip_list: list[dict] = []
        self.timings: list[dict[str, float]] = []
        self.first_size: tuple[int, int] | None = None
        self.started = time.perf_counter()
        self.interrupted = ""

    def skip(self, frame: SourceFrame, why: str, detail: str, say) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1
        if len(self.skip_list) < LISTED_SKIPS:
            self.skip_list.append({"frame": frame.index, "name": frame.name, "reason": why, "detail": detail})
        say(f"mtl_infer: skipped frame {frame.index} ({frame.name}): {detail}")

    def summary(self, *, source, settings: dict, options: dict, out: Path, preview: bool) -> dict:
        wall = time.perf_counter() - self.started
        totals = [sum(t.values()) for t in self.timings]
        return {
            "source": source.info,
            "options": options,
            "pipeline": settings,
            "frames_read": self.read,
            "frames_processed": self.processed,
            "frames_skipped": sum(self.skipped.values()),
            "skipped_by_reason": self.skipped,
            "skipped": self.skip_list,
            "flow_resets": self.resets,
            "stages_ms": _stage_table(self.timings) if self.timings else {},
            "frame_ms_mean": float(np.mean(totals)) if totals else None,
            "frames_per_s": self.processed / wall if wall > 0 else None,
            "wall_s": wall,
            "interrupted": self.interrupted or None,
            "outputs": {
                "folder": str(out),
                "per_frame": ["<frame>_depth.png", "<frame>_semantic.png", "<frame>_motion.png"],
                "preview": PREVIEW if preview else None,
            },
        }


def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} exists and is not an empty folder; choose another --out")


class _NoPreview(Exception):
    """Nothing was processed: leave no empty preview file."""


class Inference:
    """One run: the pipeline, the output folder, the preview writer and the counters."""

    def __init__(self, args, source) -> None:
        self.args, self.source, self.out = args, source, Path(args.out)
        config = PipelineConfig(model_file=args.model, device=args.device, output_size=args.output_size)
        choice = choose_model(config)  # the model file, read once
        self.model = choice.model
        self.pipeline = build_pipeline(config, choice=choice)
        self.pipeline.warmup()  # the first frame's stage times then do not hold one-off set-up costs
        self.palette = semantic_colors("five", [0], self.pipeline.backend)
        self.run = Run()
        self.writer = self.strip = self.preview_path = None
        self.say = print

    def __call__(self) -> dict:
        """Every frame of the source (until --max-frames or a signal); returns the summary it wrote."""
        from tqdm import tqdm

        args, total = self.args, self.source.total
        if args.max_frames is not None and total is not None:
            total = min(total, args.max_frames * args.every)
        _check_out(self.out)
        self.out.mkdir(parents=True, exist_ok=True)
        with tqdm(total=total, unit="frame", desc="mtl_infer", disable=None, file=sys.stderr) as bar:
            self.say = lambda line: bar.write(line, file=sys.stderr)
            try:
                with atomic_path(self.out / PREVIEW) as self.preview_path:
                    self._frames(bar)
                    if self.writer is None:
                        raise _NoPreview
            except _NoPreview:
                pass
        with signals_deferred():  # the summary is written whatever arrives now
            summary = self._summary()
            atomic_write_bytes(self.out / SUMMARY, (json.dumps(summary, indent=2) + "\n").encode())
        return summary

    def _frames(self, bar) -> None:
        try:
            frames = iter(self.source.frames)
            while True:
                start = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                self.run.read += 1
                bar.update(1)
                self._frame(frame, read_ms=(time.perf_counter() - start) * 1e3)
                if self.args.max_frames is not None and self.run.processed >= self.args.max_frames:
                    break
        except KeyboardInterrupt:
            self.run.interrupted = "SIGINT"
        except Terminated:
            self.run.interrupted = "SIGTERM"
        finally:
            if self.writer is not None:
                self.writer.release()

    def _frame(self, frame: SourceFrame, read_ms: float) -> None:
        run = self.run
        if frame.problem is not None:
            run.skip(frame, "unreadable", frame.problem, self.say)
            return
        if frame.index % self.args.every:
            run.skipped["every"] = run.skipped.get("every", 0) + 1
            return
        size = tuple(frame.image.shape[:2])
        run.first_size = run.first_size or size
        if size != run.first_size:
            first = run.first_size
            detail = f"size {size[1]}x{size[0]} differs from the first frame's {first[1]}x{first[0]}"
            run.skip(frame, "size", detail, self.say)
            return
        try:
            result = self.pipeline.process(frame.image, frame.stamp)
        except ValueError as error:  # NonFiniteOutputError, or a frame the pipeline refuses
            run.skip(frame, "pipeline", str(error), self.say)
            return
        start = time.perf_counter()
        with signals_deferred():  # a frame's files are all written, or none
            self._write(frame, result)
            run.processed += 1
        run.resets += int(result.reset and result.reset_reason != "first frame")
        write_ms = (time.perf_counter() - start) * 1e3
        run.timings.append({"read": read_ms, **result.timings, "write": write_ms})

    def _write(self, frame: SourceFrame, result) -> None:
        if result.depth is not None:
            _write_png(self.out / f"{frame.name}_depth.png", depth_to_millimetres(result.depth))
        for task in ("semantic", "motion"):
            if getattr(result, task) is not None:
                _write_png(self.out / f"{frame.name}_{task}.png", getattr(result, task))
        if self.writer is None:
            self.strip = PreviewStrip(frame.image.shape[:2], self.palette)
            fps = self.source.fps / self.args.every
            self.writer = cv2.VideoWriter(
                str(self.preview_path), cv2.VideoWriter_fourcc(*"mp4v"), fps, self.strip.frame_size
            )
            if not self.writer.isOpened():
                raise OSError(f"{self.out / PREVIEW}: OpenCV cannot write an mp4v video here")
        self.writer.write(cv2.cvtColor(self.strip(frame.image, result), cv2.COLOR_RGB2BGR))

    def _summary(self) -> dict:
        options = {
            k: getattr(self.args, k) for k in ("model", "device", "fps", "topic", "every", "max_frames")
        }
        options["output_size"] = self.args.output_size
        return self.run.summary(
            source=self.source,
            settings=pipeline_settings(self.pipeline, self.model),
            options=options,
            out=self.out,
            preview=self.writer is not None,
        )


def closing_line(summary: dict) -> str:
    """The one line printed at the end."""
    skipped = ", ".join(f"{why} {n}" for why, n in summary["skipped_by_reason"].items())
    rate = summary["frames_per_s"]
    return (
        f"mtl_infer: {summary['frames_processed']} of {summary['frames_read']} frames processed"
        + (f" ({summary['frames_skipped']} skipped: {skipped})" if skipped else "")
        + (f", {rate:.2f} frames/s" if rate else "")
        + (f", {summary['frame_ms_mean']:.1f} ms per frame" if summary["frame_ms_mean"] else "")
        + (f"; interrupted ({summary['interrupted']})" if summary["interrupted"] else "")
        + f"; model {summary['pipeline']['model']}; wrote {summary['outputs']['folder']}"
    )


def infer(args) -> dict:
    """Open the source, run the model on it, write everything; returns the summary."""
    _check_out(Path(args.out))  # before seconds of model loading
    source = open_source(args.source, fps=args.fps, topic=args.topic)
    try:
        summary = Inference(args, source)()
    finally:
        source.close()
    print(closing_line(summary), file=sys.stderr)
    if summary["interrupted"] == "SIGINT":
        raise KeyboardInterrupt
    if summary["interrupted"] == "SIGTERM":
        raise Terminated
    if summary["frames_processed"] == 0:
        raise ValueError(
            f"no frame of {args.source} was processed ({summary['frames_read']} read; "
            f"see {Path(args.out) / SUMMARY})"
        )
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="mtl_infer", description=__doc__.split("\n")[0])
    ap.add_argument("source", type=Path, help="a video file, a folder of images or a rosbag2 folder")
    ap.add_argument("--out", type=Path, required=True, help="output folder (new, or empty)")
    ap.add_argument(
        "--model",
        default="",
        help="checkpoint / .onnx / .engine; default: the model shipped with the package",
    )
    ap.add_argument(
        "--fps", type=positive_float, help="frame rate of a folder of images (or override a video's)"
    )
    ap.add_argument("--topic", help="rosbag2: the camera topic (default: the bag's first image topic)")
    ap.add_argument("--every", type=positive_int, default=1, metavar="N", help="process every N-th frame")
    ap.add_argument("--max-frames", type=positive_int, metavar="N", help="stop after N processed frames")
    ap.add_argument("--device", type=torch_device, default="auto", help="auto, cpu, cuda, cuda:N")
    ap.add_argument(
        "--output-size", choices=OUTPUT_SIZES, default="network",
        help="outputs at the network resolution (default, as the node) or at the input resolution",
    )  # fmt: skip
    return ap.parse_args(argv)


@tool_main("mtl_infer")
def main(argv: list[str] | None = None) -> int:
    infer(parse_args(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
